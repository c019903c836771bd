"""The gateway's button protocol: the Slack action and view ids of an approval message's Approve / Reject buttons and
of the reject-reason dialog, and the button value that names the run, the gate and the binding the person was shown.

The notification activity (activities/slack.py) writes the buttons and the gateway (starters/gateway.py) reads the
clicks; both take the protocol from here, so neither imports the other and no client library is needed to read it.
"""

from __future__ import annotations

import json

APPROVE_ACTION = "runbook_approve"
REJECT_ACTION = "runbook_reject"
REJECT_VIEW = "runbook_reject_reason"


def button_value(workflow_id: str, gate_id: str, binding: str | None) -> str:
    """A button's value: the run (``w``), the gate (``g``) and the binding shown (``b``), compact JSON."""
    value: dict[str, str] = {"w": workflow_id, "g": gate_id}
    if binding:
        value["b"] = binding
    return json.dumps(value, separators=(",", ":"))


def parse_button_value(value: str) -> dict[str, str]:
    """The run, gate and binding of a clicked button; ValueError when the value is not a runbook approval button's."""
    data = json.loads(value)
    if not isinstance(data, dict) or not isinstance(data.get("w"), str) or not isinstance(data.get("g"), str):
        raise ValueError("not a runbook approval button")
    return data
