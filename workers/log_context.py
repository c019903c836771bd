"""The runbook and target of a run in the log lines of its activities (``RUNBOOK_LOG_FORMAT=json``, workers.telemetry).

An activity's log record carries its workflow's ids, not the runbook and target (they are the workflow's search
attributes, which an activity cannot see). ``RunbookContextInterceptor`` adds them to a header of every activity and
local activity a runbook schedules, and sets ``workers.telemetry.ACTIVITY_RUNBOOK_CONTEXT`` while the activity runs;
the JSON formatter reads it. Headers are not compared on replay, so recorded histories replay with or without it.
(A module of its own: the CLI imports workers.telemetry and must not pay for ``temporalio.worker``.)
"""

from __future__ import annotations

from typing import Any, Mapping

from temporalio import workflow
from temporalio.api.common.v1 import Payload
from temporalio.converter import PayloadConverter
from temporalio.worker import (
    ActivityInboundInterceptor,
    ExecuteActivityInput,
    Interceptor,
    StartActivityInput,
    StartLocalActivityInput,
    WorkflowInboundInterceptor,
    WorkflowInterceptorClassInput,
    WorkflowOutboundInterceptor,
)

from workers.telemetry import ACTIVITY_RUNBOOK_CONTEXT, workflow_context

HEADER = "runbook-context"
FIELDS = ("runbook", "target")


def _with_context(headers: Mapping[str, Payload]) -> Mapping[str, Payload]:
    context = workflow_context()
    if not context:
        return headers
    return {**headers, HEADER: PayloadConverter.default.to_payload(context)}


def _read(headers: Mapping[str, Payload]) -> dict[str, str] | None:
    payload = headers.get(HEADER)
    if payload is None:
        return None
    try:
        decoded = PayloadConverter.default.from_payload(payload)
        return {key: str(decoded[key]) for key in FIELDS if decoded.get(key)}
    except Exception:  # noqa: BLE001 - a malformed header costs the log fields, never the activity
        return None


class _Outbound(WorkflowOutboundInterceptor):
    def start_activity(self, input: StartActivityInput) -> workflow.ActivityHandle:
        input.headers = _with_context(input.headers)
        return super().start_activity(input)

    def start_local_activity(self, input: StartLocalActivityInput) -> workflow.ActivityHandle:
        input.headers = _with_context(input.headers)
        return super().start_local_activity(input)


class _WorkflowInbound(WorkflowInboundInterceptor):
    def init(self, outbound: WorkflowOutboundInterceptor) -> None:
        super().init(_Outbound(outbound))


class _ActivityInbound(ActivityInboundInterceptor):
    async def execute_activity(self, input: ExecuteActivityInput) -> Any:
        token = ACTIVITY_RUNBOOK_CONTEXT.set(_read(input.headers))
        try:
            return await super().execute_activity(input)
        finally:
            ACTIVITY_RUNBOOK_CONTEXT.reset(token)


class RunbookContextInterceptor(Interceptor):
    """Install on a worker: the activities a runbook schedules log its runbook and target."""

    def workflow_interceptor_class(self, input: WorkflowInterceptorClassInput) -> type[WorkflowInboundInterceptor]:
        return _WorkflowInbound

    def intercept_activity(self, next: ActivityInboundInterceptor) -> ActivityInboundInterceptor:
        return _ActivityInbound(next)
