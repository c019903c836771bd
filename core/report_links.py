"""Links to a run's report (`runbook report`, served by the gateway at ``/reports/<workflow id>``).

A report shows a run's parameters and audit trail, so the gateway serves one only with a signature the worker made
when it wrote the link into the run's last Slack message: HMAC-SHA256 of the workflow id with a secret the worker
and the gateway share (``RUNBOOK_REPORT_LINK_SECRET``). A link names one run and cannot be turned into another's.
"""

from __future__ import annotations

import hashlib
import hmac
from urllib.parse import quote


def signature(secret: str, workflow_id: str) -> str:
    return hmac.new(secret.encode(), workflow_id.encode(), hashlib.sha256).hexdigest()


def report_link(base_url: str, secret: str, workflow_id: str) -> str:
    """The report's address at the gateway whose public address is ``base_url``."""
    return f"{base_url.rstrip('/')}/reports/{quote(workflow_id, safe='')}?sig={signature(secret, workflow_id)}"


def signed(secret: str, workflow_id: str, sig: str | None) -> bool:
    return bool(sig) and hmac.compare_digest(signature(secret, workflow_id), sig or "")
