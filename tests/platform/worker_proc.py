"""Runs the product worker (workers.main.run_worker) plus the platform test definitions, as a separate process."""

import asyncio
import logging
import sys

from core.config import Settings
from tests.platform.workflows import ACTIVITIES, WORKFLOWS
from workers.main import run_worker

if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(name)s: %(message)s")
    asyncio.run(run_worker(Settings(), extra_workflows=WORKFLOWS, extra_activities=ACTIVITIES))
