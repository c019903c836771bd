"""A summary on every activity a runbook schedules, for the web UI's timeline (issue 14 item 5).

The UI shows an activity in a run's timeline by its type alone (``alb_set_weights``) unless the command carries a
summary (the SDK's ``summary=``, stored as the command's user metadata). Rather than write one at each of the
runbooks' many activity calls, the worker installs ``SummaryInterceptor``: every activity and local activity a
workflow starts without a summary gets one made from its type and its input, e.g.
``alb set weights: listener app/demo-alb/..., weights shop-blue=80 shop-green=20``. A call that passes its own
``summary=`` keeps it. Timers are not interceptable in the SDK: their summaries are written where they are set.

Summaries change only the commands' user metadata, which replay does not compare: recorded histories replay with or
without them. Secrets never reach an input (a rule of the product), and fields whose name says secret are skipped
all the same.
"""

from __future__ import annotations

from typing import Any, Sequence

from temporalio import workflow
from temporalio.worker import (
    Interceptor,
    StartActivityInput,
    StartLocalActivityInput,
    WorkflowInboundInterceptor,
    WorkflowInterceptorClassInput,
    WorkflowOutboundInterceptor,
)

MAX_LENGTH = 200  # the UI shows one line
MAX_FIELDS = 5
# the fields that say most about a call, first; other scalar fields follow in their order
FIRST = ("kind", "title", "target", "name", "identifier", "database", "service", "environment", "url", "method", "weights",
         "replicas", "region", "zone_id", "records", "target_group_arn", "listener_arn", "ref", "checks")
SECRET_WORDS = ("token", "secret", "password", "credential", "private_key")


def _short(value: Any) -> str:
    """One value, short: an ARN by its last part, a list by its length past three items."""
    if isinstance(value, str):
        if value.startswith("arn:"):
            return value.split(":", 5)[-1].split("/", 1)[-1]
        return value if len(value) <= 60 else value[:57] + "..."
    if isinstance(value, dict):
        items = [f"{_short(k)}={_short(v)}" for k, v in value.items() if v is not None][:4]
        return " ".join(items) + (" ..." if len(value) > 4 else "")
    if isinstance(value, (list, tuple)):
        if value and all(isinstance(v, dict) and "name" in v for v in value):  # checks, metrics, records: names
            names = list(dict.fromkeys(str(v["name"]) for v in value))
            return ", ".join(names[:4]) + (f" (+{len(names) - 4})" if len(names) > 4 else "")
        if len(value) > 3:
            return f"{len(value)} items"
        return ", ".join(_short(v) for v in value)
    return str(value)


def _fields(arg: Any) -> dict[str, Any]:
    if hasattr(arg, "model_dump"):
        return arg.model_dump(mode="json", exclude_none=True)
    if isinstance(arg, dict):
        return {k: v for k, v in arg.items() if v is not None}
    return {}


def summarize(activity: str, args: Sequence[Any]) -> str:
    """The UI's one line for an activity call: its type in words, then the input's telling fields."""
    parts: list[str] = []
    for arg in args:
        fields = _fields(arg)
        if not fields and arg is not None and not isinstance(arg, (dict, list)):
            parts.append(_short(arg))
            continue
        names = [n for n in FIRST if n in fields] + [n for n in fields if n not in FIRST]
        for name in names:
            if any(word in name.lower() for word in SECRET_WORDS) or name in ("workflow_id", "run_id", "refs"):
                continue
            value = fields[name]
            if value in ("", [], {}) or (isinstance(value, dict) and name not in FIRST):
                continue
            parts.append(f"{name} {_short(value)}")
            if len(parts) == MAX_FIELDS:
                break
    text = activity.replace("_", " ")
    if parts:
        text += ": " + ", ".join(parts)
    return text if len(text) <= MAX_LENGTH else text[: MAX_LENGTH - 3] + "..."


class _Outbound(WorkflowOutboundInterceptor):
    def start_activity(self, input: StartActivityInput) -> workflow.ActivityHandle:
        if not input.summary:
            input.summary = summarize(input.activity, input.args)
        return super().start_activity(input)

    def start_local_activity(self, input: StartLocalActivityInput) -> workflow.ActivityHandle:
        if not input.summary:
            input.summary = summarize(input.activity, input.args)
        return super().start_local_activity(input)


class _Inbound(WorkflowInboundInterceptor):
    def init(self, outbound: WorkflowOutboundInterceptor) -> None:
        super().init(_Outbound(outbound))


class SummaryInterceptor(Interceptor):
    """Install on a worker: every activity a workflow starts carries a summary for the web UI."""

    def workflow_interceptor_class(self, input: WorkflowInterceptorClassInput) -> type[WorkflowInboundInterceptor]:
        return _Inbound
