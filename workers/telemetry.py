"""Tracing and structured logs for every process that talks to Temporal (worker, CLI, gateway).

**Tracing** (OpenTelemetry through ``temporalio.contrib.opentelemetry``) is off unless the standard variables turn
it on: ``OTEL_SDK_DISABLED`` not ``true`` *and* an exporter configured (``OTEL_EXPORTER_OTLP_ENDPOINT`` or
``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``, or ``OTEL_TRACES_EXPORTER=otlp|console``). Spans are exported with OTLP over
HTTP (``OTEL_EXPORTER_OTLP_HEADERS``, ``..._TIMEOUT`` and so on are read by the exporter itself); the resource comes
from ``OTEL_SERVICE_NAME`` / ``OTEL_RESOURCE_ATTRIBUTES``. The interceptor goes on the client, so the worker built
from it, and every start, signal, update and query made with it, carry the trace: a start in the CLI, the workflow
run, its activities and an approval's update are one trace.

**Logs**: ``RUNBOOK_LOG_FORMAT=json`` writes one JSON object per line with the workflow id, run id, runbook and target
of the workflow (or the activity's workflow) that logged it; anything else keeps the plain text format. An activity
knows its workflow's ids but not its runbook and target: ``workers.log_context.RunbookContextInterceptor`` (installed
on the worker) sends them along in a header of every activity a runbook schedules, as the tracing interceptor sends
its span context.
"""

from __future__ import annotations

import contextvars
import json
import logging
import os
import sys
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any

log = logging.getLogger("runbook.telemetry")

_ENDPOINTS = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")


# ---------------------------------------------------------------------------- tracing
def tracing_enabled(env: Mapping[str, str] = os.environ) -> bool:
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporter = env.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if exporter == "none":
        return False
    return exporter in ("otlp", "console") or any(env.get(name, "").strip() for name in _ENDPOINTS)


def tracer_provider(env: Mapping[str, str] = os.environ, span_exporter: Any = None):
    """A tracer provider from the standard variables (``span_exporter`` replaces the configured one: tests)."""
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SimpleSpanProcessor

    resource = Resource.create({"service.name": env.get("OTEL_SERVICE_NAME") or "runbook-automation"})
    provider = TracerProvider(resource=resource)
    if span_exporter is not None:
        provider.add_span_processor(SimpleSpanProcessor(span_exporter))
    elif env.get("OTEL_TRACES_EXPORTER", "").strip().lower() == "console":
        provider.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter(out=sys.stderr)))
    else:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    return provider


_interceptors: list | None = None


def tracing_interceptors(env: Mapping[str, str] = os.environ, span_exporter: Any = None) -> list:
    """The client interceptors: ``[TracingInterceptor]`` when tracing is on, else ``[]``. Built once per process
    (the provider owns the export thread); ``span_exporter`` builds a fresh one for a test."""
    global _interceptors
    if span_exporter is None and _interceptors is not None:
        return _interceptors
    if span_exporter is None and not tracing_enabled(env):
        return []
    from temporalio.contrib.opentelemetry import TracingInterceptor

    provider = tracer_provider(env, span_exporter)
    interceptors = [TracingInterceptor(provider.get_tracer("runbook-automation"))]
    if span_exporter is None:
        _interceptors = interceptors
        log.info("OpenTelemetry tracing on (service %s)", env.get("OTEL_SERVICE_NAME") or "runbook-automation")
    return interceptors


# ---------------------------------------------------------------------------- logs
_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}


def workflow_context() -> dict[str, Any]:
    """Runbook and target of the workflow whose code is logging right now (its search attributes), if any."""
    try:
        from temporalio import workflow

        if not workflow.in_workflow():
            return {}
        from workflows import search_attributes as sa

        attributes = workflow.info().typed_search_attributes
        return {key: value for key, value in (("runbook", attributes.get(sa.RUNBOOK_NAME)),
                                              ("target", attributes.get(sa.RUNBOOK_TARGET))) if value}
    except Exception:  # noqa: BLE001 - a log line must never fail the code that logs it
        return {}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, the Temporal context and any ``extra`` fields."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        wf = getattr(record, "temporal_workflow", None)
        act = getattr(record, "temporal_activity", None)
        if isinstance(wf, dict):
            line.update(workflow_id=wf.get("workflow_id"), run_id=wf.get("run_id"), workflow_type=wf.get("workflow_type"))
            line.update(getattr(record, "runbook_context", None) or {})
        elif isinstance(act, dict):
            line.update(workflow_id=act.get("workflow_id"), run_id=act.get("workflow_run_id"),
                        workflow_type=act.get("workflow_type"), activity_type=act.get("activity_type"),
                        attempt=act.get("attempt"))
            line.update(getattr(record, "runbook_context", None) or {})
        for key, value in vars(record).items():
            if key not in _STANDARD and key not in line and not key.startswith(("temporal_", "runbook_context")):
                line[key] = value
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


class _RunbookContext(logging.Filter):
    """Adds the runbook and target of the logging workflow (or the activity's workflow) while the record is still in
    the thread that logged it."""

    def filter(self, record: logging.LogRecord) -> bool:
        if hasattr(record, "runbook_context"):
            return True
        if getattr(record, "temporal_workflow", None) is not None:
            record.runbook_context = workflow_context()
        elif getattr(record, "temporal_activity", None) is not None:
            record.runbook_context = ACTIVITY_RUNBOOK_CONTEXT.get() or {}
        return True


# the runbook and target of the workflow that scheduled the running activity, set by workers.log_context (a context
# variable: the SDK copies the context into the thread of a synchronous activity)
ACTIVITY_RUNBOOK_CONTEXT: contextvars.ContextVar[dict[str, str] | None] = contextvars.ContextVar(
    "runbook_context", default=None)


def json_handler(stream: Any = None) -> logging.Handler:
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(_RunbookContext())
    return handler


def configure_logging(env: Mapping[str, str] = os.environ) -> None:
    """Root logging for a process, once: JSON lines when ``RUNBOOK_LOG_FORMAT=json``, else plain text."""
    root = logging.getLogger()
    if root.handlers:
        return
    level = env.get("RUNBOOK_LOG_LEVEL", "INFO")
    if env.get("RUNBOOK_LOG_FORMAT", "").strip().lower() == "json":
        from temporalio import activity, workflow

        # the context goes in fields, not appended to the message text
        workflow.logger.workflow_info_on_message = False
        activity.logger.activity_info_on_message = False
        root.addHandler(json_handler())
        root.setLevel(level)
    else:
        logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
