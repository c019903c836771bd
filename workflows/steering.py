"""Each runbook's own steering, declared for clients to call by method reference (see ``workflows.contract``).

Kept apart from ``workflows.contract`` (what every runbook answers: status, approvals, abort) so that a client
that only reads a run's status does not build the canary's and the provisioning's models: ``runbook status`` is
measured in bench/cli_speed.py. The workflow classes inherit these declarations and implement every one
(tests/core/test_contract.py checks names and types).
"""

from typing import Self

from temporalio import workflow

from core.canary import CanaryView, ExtendInput, SteerInput
from core.provision import DestroyNowInput, SandboxExpiry
from core.provision import ExtendInput as ExtendTtlInput
from workflows.contract import ExtendBakeInput, PromoteNowInput, ReverifyInput, Runbook

# Updates declare ``self: Self``, and annotations stay objects (no ``from __future__ import annotations``):
# workflows/contract.py says why.


class CanarySteering(Runbook):
    """CanaryRamp: pause and resume the ramp, promote to full weight (through the gate), extend the current step."""

    @workflow.query
    def canary(self) -> CanaryView:
        raise NotImplementedError

    @workflow.update
    def pause(self: Self, req: SteerInput) -> CanaryView:
        raise NotImplementedError

    @workflow.update
    def resume(self: Self, req: SteerInput) -> CanaryView:
        raise NotImplementedError

    @workflow.update
    def promote(self: Self, req: SteerInput) -> CanaryView:
        raise NotImplementedError

    @workflow.update
    def extend(self: Self, req: ExtendInput) -> CanaryView:
        raise NotImplementedError


class BlueGreenSteering(Runbook):
    """BlueGreenCutover: end the bake early (once approved) or make it longer."""

    @workflow.update
    def promote_now(self: Self, req: PromoteNowInput) -> str:
        raise NotImplementedError

    @workflow.update
    def extend_bake(self: Self, req: ExtendBakeInput) -> str:
        raise NotImplementedError


class ProvisionSteering(Runbook):
    """ProvisionEnvironment: a sandbox's time to live made longer, or the sandbox destroyed now."""

    @workflow.update
    def extend(self: Self, req: ExtendTtlInput) -> SandboxExpiry:
        raise NotImplementedError

    @workflow.update
    def destroy_now(self: Self, req: DestroyNowInput) -> str:
        raise NotImplementedError


class RegionMoveSteering(Runbook):
    """RegionFailover and RegionFailback: check a held run's target region again."""

    @workflow.update
    def reverify(self: Self, req: ReverifyInput) -> str:
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
