"""What a runbook run answers: its query, update and signal definitions, for clients to call by method reference.

``Runbook`` declares what every run answers (status, approvals, abort); each runbook's own steering
(``CanarySteering``, ``BlueGreenSteering``, ...) is declared in ``workflows.steering``. Declarations have no bodies;
the workflow classes inherit them and implement every one (with the same name and types: tests/core/test_contract.py
checks it). Clients (``starters.client.RunbookClient``) call ``handle.execute_update(CanarySteering.pause, ...)``
against them, so they never name a handler by a string and never import a workflow module, whose activities pull in
boto3, psycopg and hvac.

This module imports only the Temporal SDK's workflow definitions and pydantic models from ``core``.
"""

from typing import Self

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


# Updates declare ``self: Self`` (typing.Self itself: this module does not turn annotations into strings). The
# SDK's ``workflow.update`` types the method it decorates with ``self`` as an ordinary parameter, so an implementation
# in a workflow class (``self: CanaryRamp``) would never match a declaration with a plain ``self`` (mypy: incompatible
# override); with ``Self`` it does, and its input and result types are checked. The SDK leaves a ``self`` annotated
# ``typing.Self`` out of the update's argument types, as it does a plain one (a string "Self" it would not).

# ------------------------------------------------------------------------------------------- every runbook
class Runbook:
    """Every runbook run: its status, its approval gates, abort, and the PagerDuty incident's resolution."""

    @workflow.query
    def status(self) -> RunbookStatus:
        raise NotImplementedError

    @workflow.update
    async def approve(self: Self, req: ApproveInput) -> GateView:
        raise NotImplementedError

    @workflow.update
    async def reject(self: Self, req: RejectInput) -> GateView:
        raise NotImplementedError

    @workflow.signal
    async def approve_signal(self, req: ApproveInput) -> None:
        raise NotImplementedError

    @workflow.signal
    async def reject_signal(self, req: RejectInput) -> None:
        raise NotImplementedError

    @workflow.update
    def abort(self: Self, req: AbortInput) -> str:
        raise NotImplementedError

    @workflow.signal
    def abort_signal(self, req: AbortInput) -> None:
        raise NotImplementedError

    @workflow.signal
    def incident_resolved(self, req: IncidentResolvedInput) -> None:
        raise NotImplementedError

