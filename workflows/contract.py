"""What a runbook run answers: its query, update and signal definitions, for clients to call by method reference.

Each class here declares handlers without bodies; the workflow classes inherit them and implement every one (with
the same name and types: tests/core/test_contract.py checks it). Clients (``starters.client.RunbookClient``) call
``handle.execute_update(CanarySteering.pause, ...)`` against these declarations, so they never name a handler by a
string and never import a workflow module, whose activities pull in boto3, psycopg and hvac.

This module imports only the Temporal SDK's workflow definitions and pydantic models from ``core``.
"""

from __future__ import annotations

from pydantic import BaseModel, Field
from temporalio import workflow

from core.approval import AbortInput, ApproveInput, GateView, RejectInput
from core.canary import CanaryView, ExtendInput, SteerInput
from core.duration import Duration
from core.provision import DestroyNowInput, SandboxExpiry
from core.provision import ExtendInput as ExtendTtlInput
from core.runbook import RunbookStatus

__all__ = [
    "BlueGreenSteering",
    "CanarySteering",
    "ExtendBakeInput",
    "IncidentResolvedInput",
    "PromoteNowInput",
    "ProvisionSteering",
    "RegionMoveSteering",
    "ReverifyInput",
    "Runbook",
    "contract_for",
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


# ------------------------------------------------------------------------------------------- per runbook
class CanarySteering(Runbook):
    """CanaryRamp: pause and resume the ramp, promote to full weight (through the gate), extend the current step."""

    @workflow.query
    def canary(self) -> CanaryView:
        raise NotImplementedError

    @workflow.update
    def pause(self, req: SteerInput) -> CanaryView:
        raise NotImplementedError

    @workflow.update
    def resume(self, req: SteerInput) -> CanaryView:
        raise NotImplementedError

    @workflow.update
    def promote(self, req: SteerInput) -> CanaryView:
        raise NotImplementedError

    @workflow.update
    def extend(self, req: ExtendInput) -> CanaryView:
        raise NotImplementedError


class BlueGreenSteering(Runbook):
    """BlueGreenCutover: end the bake early (once approved) or make it longer."""

    @workflow.update
    def promote_now(self, req: PromoteNowInput) -> str:
        raise NotImplementedError

    @workflow.update
    def extend_bake(self, req: ExtendBakeInput) -> str:
        raise NotImplementedError


class ProvisionSteering(Runbook):
    """ProvisionEnvironment: a sandbox's time to live made longer, or the sandbox destroyed now."""

    @workflow.update
    def extend(self, req: ExtendTtlInput) -> SandboxExpiry:
        raise NotImplementedError

    @workflow.update
    def destroy_now(self, req: DestroyNowInput) -> str:
        raise NotImplementedError


class RegionMoveSteering(Runbook):
    """RegionFailover and RegionFailback: check a held run's target region again."""

    @workflow.update
    def reverify(self, req: ReverifyInput) -> str:
        raise NotImplementedError


# Workflow type name -> what its runs answer. A type not listed answers what every runbook does (Runbook).
CONTRACTS: dict[str, type[Runbook]] = {
    "CanaryRamp": CanarySteering,
    "BlueGreenCutover": BlueGreenSteering,
    "ProvisionEnvironment": ProvisionSteering,
    "RegionFailover": RegionMoveSteering,
    "RegionFailback": RegionMoveSteering,
}


def contract_for(workflow_type: str) -> type[Runbook]:
    return CONTRACTS.get(workflow_type, Runbook)
