"""Runs the product worker (workers.main.run_worker) plus the platform test definitions, as a separate process."""

import asyncio
import logging
import os
import sys

from core.config import Settings
from tests.platform.workflows import ACTIVITIES, WORKFLOWS
from workers.main import run_worker

if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(name)s: %(message)s")
    asyncio.run(run_worker(Settings(), extra_workflows=WORKFLOWS, extra_activities=ACTIVITIES))
    # As the `runbook` console script does: the SDK runtime's threads can abort interpreter finalisation
    # (PyGILState_Release, exit -6) after a clean stop, which would turn the worker's exit 0 into a crash.
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
