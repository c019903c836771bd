"""What a runbook run answers: its query, update and signal definitions, for clients to call by method reference.

``Runbook`` declares what every run answers (status, approvals, abort); each runbook's own steering
(``CanarySteering``, ``BlueGreenSteering``, ...) is declared in ``workflows.steering``. Declarations have no bodies;
the workflow classes inherit them and implement every one (with the same name and types: tests/core/test_contract.py
checks it). Clients (``starters.client.RunbookClient``) call ``handle.execute_update(CanarySteering.pause, ...)``
against them, so they never name a handler by a string and never import a workflow module, whose activities pull in
boto3, psycopg and hvac.

This module imports only the Temporal SDK's workflow definitions and pydantic models from ``core``.
"""

from __future__ import annotations

from pydantic import BaseModel, Field
from temporalio import workflow

from core.approval import AbortInput, ApproveInput, GateView, RejectInput
from core.duration import Duration
from core.runbook import RunbookStatus

__all__ = [
    "ExtendBakeInput",
    "IncidentResolvedInput",
    "PromoteNowInput",
    "ReverifyInput",
    "Runbook",
]


# ------------------------------------------------------------------------------------------- messages
class IncidentResolvedInput(BaseModel):
    incident_id: str
    resolved_by: str = "pagerduty"


class PromoteNowInput(BaseModel):
    requested_by: str = Field(min_length=1)
    reason: str = ""


class ExtendBakeInput(BaseModel):
    requested_by: str = Field(min_length=1)
    by: Duration
    reason: str = ""


class ReverifyInput(BaseModel):
    requested_by: str
    reason: str = ""


# ------------------------------------------------------------------------------------------- every runbook
class Runbook:
    """Every runbook run: its status, its approval gates, abort, and the PagerDuty incident's resolution."""

    @workflow.query
    def status(self) -> RunbookStatus:
        raise NotImplementedError

    @workflow.update
    async def approve(self, req: ApproveInput) -> GateView:
        raise NotImplementedError

    @workflow.update
    async def reject(self, req: RejectInput) -> GateView:
        raise NotImplementedError

    @workflow.signal
    async def approve_signal(self, req: ApproveInput) -> None:
        raise NotImplementedError

    @workflow.signal
    async def reject_signal(self, req: RejectInput) -> None:
        raise NotImplementedError

    @workflow.update
    def abort(self, req: AbortInput) -> str:
        raise NotImplementedError

    @workflow.signal
    def abort_signal(self, req: AbortInput) -> None:
        raise NotImplementedError

    @workflow.signal
    def incident_resolved(self, req: IncidentResolvedInput) -> None:
        raise NotImplementedError

