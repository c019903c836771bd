"""A run in progress for the dry run's "already running" test (its own module: the workflow sandbox imports it)."""

from temporalio import workflow


@workflow.defn(name="CanaryRamp")
class Waiting:
    """Stands in for a canary run in progress: only its id and its running state matter to the dry run."""

    @workflow.run
    async def run(self) -> None:
        await workflow.wait_condition(lambda: False)
