"""One typed way for workflow code to call an activity method: the argument's and the result's types follow the
method reference (no ``Any`` in between, no ``type: ignore``), one retry policy and timeout unless told otherwise.

``changes=True`` marks an activity that writes: a cancellation waits until it has really finished
(``WAIT_CANCELLATION_COMPLETED``), so what follows (a rollback, a switch back) never races a change in flight;
reads are simply abandoned (``TRY_CANCEL``).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any, Callable, TypeVar

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.workflow import ActivityCancellationType

with workflow.unsafe.imports_passed_through():
    from core import errors

ROUTER_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2,
    maximum_interval=timedelta(seconds=30),
    maximum_attempts=6,
    non_retryable_error_types=errors.NON_RETRYABLE,
)
ROUTER_TIMEOUT = timedelta(seconds=60)

ArgT = TypeVar("ArgT")
ResultT = TypeVar("ResultT")


async def call(
    method: Callable[[Any, ArgT], ResultT],
    arg: ArgT,
    *,
    changes: bool = False,
    timeout: timedelta = ROUTER_TIMEOUT,
    heartbeat: timedelta | None = None,
    retry: RetryPolicy = ROUTER_RETRY,
) -> ResultT:
    """Run the activity ``method`` (a method of an activities class) with ``arg`` and return its typed result."""
    return await workflow.execute_activity_method(
        method,
        arg,
        start_to_close_timeout=timeout,
        heartbeat_timeout=heartbeat,
        retry_policy=retry,
        cancellation_type=ActivityCancellationType.WAIT_CANCELLATION_COMPLETED if changes else ActivityCancellationType.TRY_CANCEL,
    )
