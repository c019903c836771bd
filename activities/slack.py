"""Slack as a notification channel: one message per runbook run, updated in place, plus approval requests.

- ``started`` posts the run's message (chat.postMessage) and returns its channel and ts as refs; the workflow
  keeps the refs and hands them back in every later ``RunbookEvent.refs``, so every later event updates the same
  message (chat.update with the stored ts) instead of posting a new one.
- The message shows every step: the lines already shown travel in ``refs["slack_log"]`` (a bounded JSON list),
  so an update is an absolute rewrite (retry-safe) and the channel needs no state of its own and no read scope.
- ``approval_needed`` posts a separate message with Approve / Reject buttons; each button's value carries the
  workflow id, gate id and the gate's binding, which the gateway turns into the workflow's approve/reject Update.
  A reminder refreshes it and says so in its thread; an escalation refreshes it with the widened approvers and the
  new deadline and says so in its thread too; ``approval_decided`` replaces the buttons with the verdict.
- Only events the run's routing table (core.routing) sends to ``slack`` are shown.
- ``finished`` / ``failed`` rewrite the message with the final summary and a link to the run in the web UI.

Rate limits: the WebClient is given a retry handler that honours 429 ``Retry-After`` a bounded number of times
and only while the wait stays under ``max_wait_seconds``; beyond that the call fails and the notification
activity reports it in ``NotifyResult.failures`` (a notification never fails a runbook).
"""

from __future__ import annotations

import json
import logging
import re
from typing import Any, Callable, Optional

from slack_sdk import WebClient
from slack_sdk.http_retry import ConnectionErrorRetryHandler, RateLimitErrorRetryHandler, RetryState
from slack_sdk.http_retry.request import HttpRequest
from slack_sdk.http_retry.response import HttpResponse

from core.buttons import APPROVE_ACTION, REJECT_ACTION, button_value
from core.events import RunbookEvent

log = logging.getLogger(__name__)

GATE_REQUESTS = ("approval_needed", "approval_reminder", "approval_escalated")  # refresh the gate's message

MAX_LOG_LINES = 20
MAX_LINE_CHARS = 160
SECTION_LIMIT = 2900  # Slack's section text limit is 3000 characters

ICONS = {
    "started": ":arrow_forward:",
    "step_done": ":white_check_mark:",
    "approval_needed": ":raised_hand:",
    "approval_reminder": ":hourglass:",
    "approval_escalated": ":rotating_light:",
    "approval_decided": ":ballot_box_with_check:",
    "rolled_back": ":rewind:",
    "alert": ":rotating_light:",
    "recovered": ":large_green_circle:",
    "finished": ":checkered_flag:",
    "failed": ":x:",
}
# The last message of a run shows how it ended (core.runbook.TERMINAL), the same field the CLI reads.
STATUS_ICONS = {
    "Succeeded": ":checkered_flag:",
    "RolledBack": ":rewind:",
    "Aborted": ":octagonal_sign:",
    "Rejected": ":no_entry_sign:",
    "Refused": ":no_entry_sign:",
    "Held": ":rotating_light:",
    "Failed": ":x:",
}


class BoundedRateLimitRetryHandler(RateLimitErrorRetryHandler):
    """Retry 429s after Retry-After seconds, at most ``max_retry_count`` times, never waiting over ``max_wait``."""

    def __init__(self, max_retry_count: int = 2, max_wait_seconds: float = 20.0) -> None:
        super().__init__(max_retry_count=max_retry_count)
        self.max_wait_seconds = max_wait_seconds

    def _can_retry(
        self,
        *,
        state: RetryState,
        request: HttpRequest,
        response: Optional[HttpResponse] = None,
        error: Optional[Exception] = None,
    ) -> bool:
        if response is None or response.status_code != 429:
            return False
        for key, values in response.headers.items():
            if key.lower() == "retry-after":
                try:
                    return float(values[0]) <= self.max_wait_seconds
                except (ValueError, IndexError):
                    return True
        return True


def web_client(token: str, base_url: str = "https://slack.com/api/", *, max_retries: int = 2,
               max_wait_seconds: float = 20.0, timeout: int = 10) -> WebClient:
    """A WebClient that honours rate limits (bounded) and retries connection errors once."""
    return WebClient(
        token=token,
        base_url=base_url,
        timeout=timeout,
        retry_handlers=[
            ConnectionErrorRetryHandler(max_retry_count=1),
            BoundedRateLimitRetryHandler(max_retry_count=max_retries, max_wait_seconds=max_wait_seconds),
        ],
    )


def _clip(text: str, limit: int = MAX_LINE_CHARS) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def mention(who: str) -> str:
    """A person for Slack: a Slack alias (slack:U...) or bare Slack user id as a mention, any other name as it is."""
    if who.startswith("slack:"):
        return f"<@{who.split(':', 1)[1]}>"
    if re.fullmatch(r"[UW][A-Z0-9]{6,}", who):
        return f"<@{who}>"
    return who


class SlackChannel:
    """Notification channel for ``activities.notify.NotificationActivities``."""

    name = "slack"

    def __init__(self, client: WebClient, default_channel: str | None = None,
                 report_link: Callable[[str], str] | None = None) -> None:
        self._client = client
        self._default_channel = default_channel
        self._report_link = report_link  # workflow id -> the run report's address (core.report_links)

    # ------------------------------------------------------------------ entry point
    def send(self, event: RunbookEvent) -> dict[str, str]:
        channel = event.refs.get("slack_channel") or event.slack_channel or self._default_channel
        if not channel or "slack" not in (event.channels or []):
            return {}  # no channel configured for this run, or the routing table keeps this event from Slack
        refs: dict[str, str] = {}
        lines = self._log(event)
        line = self._line(event)
        if line and event.kind != "approval_reminder":
            lines = (lines + [line])[-MAX_LOG_LINES:]
        refs["slack_log"] = json.dumps(lines, ensure_ascii=False)

        if event.kind in GATE_REQUESTS and event.gate is not None:
            refs.update(self._approval_request(event, channel))
        elif event.kind == "approval_decided" and event.gate is not None:
            self._approval_verdict(event, channel)

        text, blocks = self._run_message(event, lines)
        ts = event.refs.get("slack_ts")
        if ts and event.refs.get("slack_channel") == channel:
            self._client.chat_update(channel=channel, ts=ts, text=text, blocks=blocks)
        else:
            response = self._client.chat_postMessage(channel=channel, text=text, blocks=blocks, unfurl_links=False)
            refs["slack_channel"] = response["channel"]
            refs["slack_ts"] = response["ts"]
        return refs

    # ------------------------------------------------------------------ the run's message
    @staticmethod
    def _log(event: RunbookEvent) -> list[str]:
        try:
            lines = json.loads(event.refs.get("slack_log", "[]"))
            return [str(x) for x in lines] if isinstance(lines, list) else []
        except ValueError:
            return []

    @staticmethod
    def _line(event: RunbookEvent) -> str:
        text = event.title
        if event.text and event.kind not in ("approval_needed", "approval_reminder"):
            text = f"{text}: {event.text}" if not event.title.endswith(event.text) else text
        return _clip(f"{ICONS.get(event.kind, '•')} {text}")

    def _run_message(self, event: RunbookEvent, lines: list[str]) -> tuple[str, list[dict[str, Any]]]:
        ended = event.kind in ("finished", "failed")
        return run_message(event, lines, self._report_link(event.workflow_id) if ended and self._report_link else None)

    # ------------------------------------------------------------------ approval messages
    def _approval_request(self, event: RunbookEvent, channel: str) -> dict[str, str]:
        gate = event.gate
        assert gate is not None
        key = f"slack_gate:{gate.gate_id}"
        existing = event.refs.get(key)
        who = ", ".join([*map(mention, gate.eligible), *(f"members of {g}" for g in gate.eligible_groups)]) or "nobody"
        detail = f"\n{_clip(event.text, 1500)}" if event.text else ""
        if gate.binding:
            detail += f"\nApproves: `{gate.binding}`"
        header = f":raised_hand: *Approval needed*: {_clip(gate.title, 200)} (*{event.runbook}* on `{event.target}`){detail}"
        context = (f"gate `{gate.gate_id}` · approvers: {who} · {len(gate.approvals)}/{gate.required_approvals} "
                   f"approvals · deadline {gate.deadline:%Y-%m-%d %H:%M} UTC")
        value = button_value(event.workflow_id, gate.gate_id, gate.binding)
        blocks: list[dict[str, Any]] = [
            {"type": "section", "text": {"type": "mrkdwn", "text": header}},
            {"type": "context", "elements": [{"type": "mrkdwn", "text": context}]},
            {
                "type": "actions",
                "block_id": f"gate:{gate.gate_id}",
                "elements": [
                    {"type": "button", "action_id": APPROVE_ACTION, "style": "primary", "value": value,
                     "text": {"type": "plain_text", "text": "Approve"}},
                    {"type": "button", "action_id": REJECT_ACTION, "style": "danger", "value": value,
                     "text": {"type": "plain_text", "text": "Reject"}},
                ],
            },
        ]
        text = f"Approval needed: {gate.title} ({event.runbook} on {event.target})"
        if existing:  # reminder or escalation: refresh the same message (new approver list, deadline)
            self._client.chat_update(channel=channel, ts=existing, text=text, blocks=blocks)
            if event.kind == "approval_reminder":
                self._client.chat_postMessage(channel=channel, thread_ts=existing, text=f"Reminder: {who}, {event.title}")
            elif event.kind == "approval_escalated":
                self._client.chat_postMessage(channel=channel, thread_ts=existing,
                                              text=f":rotating_light: {event.title}: {_clip(event.text, 500)}. Approvers: {who}")
            return {}
        response = self._client.chat_postMessage(channel=channel, text=text, blocks=blocks)
        return {key: response["ts"]}

    def _approval_verdict(self, event: RunbookEvent, channel: str) -> None:
        gate = event.gate
        assert gate is not None
        ts = event.refs.get(f"slack_gate:{gate.gate_id}")
        if not ts:
            return
        by = f" by {mention(gate.decided_by)}" if gate.decided_by else ""
        reason = f": {_clip(gate.reason, 500)}" if gate.reason else ""
        icon = ":white_check_mark:" if gate.decision == "approved" else ":no_entry:"
        text = f"{icon} *{_clip(gate.title, 200)}*: {gate.decision.replace('_', ' ')}{by}{reason}"
        self._client.chat_update(
            channel=channel, ts=ts, text=text,
            blocks=[{"type": "section", "text": {"type": "mrkdwn", "text": text}},
                    {"type": "context", "elements": [{"type": "mrkdwn", "text": f"gate `{gate.gate_id}` · workflow `{event.workflow_id}`"}]}],
        )


STEER_ICONS = {"pause": ":double_vertical_bar:", "resume": ":arrow_forward:", "promote": ":fast_forward:",
               "promote-now": ":fast_forward:", "extend": ":heavy_plus_sign:", "extend-bake": ":heavy_plus_sign:",
               "abort": ":octagonal_sign:", "destroy-now": ":wastebasket:", "reverify": ":mag:"}


def steering_lines(actions: list[Any]) -> list[str]:
    """One line per steering action (``core.runbook.ActionRecord``), oldest first."""
    lines = []
    for a in actions:
        verb = a.action.replace("_", "-")
        why = f": {a.reason}" if a.reason else ""
        note = f" ({a.note})" if a.note else ""
        refused = "" if a.accepted else " (refused)"
        lines.append(_clip(f"{STEER_ICONS.get(verb, '•')} {verb} by {mention(a.by)}{why}{note}{refused}", 300))
    return lines


def run_message(event: RunbookEvent, lines: list[str], report_url: str | None = None) -> tuple[str, list[dict[str, Any]]]:
    """The run's one Slack message (text and blocks): where it is, its steps, its steering, its links (the run
    report's once it has ended). The worker's Slack channel posts and rewrites it; the gateway rewrites it at once
    when someone steers the run from Slack."""
    head = f"*{event.runbook}* on `{event.target}`"
    last_toggle = next((a.action for a in reversed(event.actions) if a.action in ("pause", "resume")), None)
    if event.kind in ("finished", "failed"):
        icon = STATUS_ICONS.get(event.status or "", ICONS[event.kind])
        state = f"{icon} *{_clip(event.title, 80)}*"
        if event.text:
            state += f"\n{_clip(event.text, 600)}"
    elif event.kind in GATE_REQUESTS:
        state = ":raised_hand: waiting for approval"
    elif last_toggle == "pause":
        state = ":double_vertical_bar: paused"
    else:
        state = ":arrows_counterclockwise: running"
    body = "\n".join(lines)
    while len(body) > SECTION_LIMIT - len(head) - 200 and "\n" in body:
        body = body.split("\n", 1)[1]
    blocks: list[dict[str, Any]] = [
        {"type": "section", "text": {"type": "mrkdwn", "text": f"{head}: {state}"}},
        {"type": "section", "text": {"type": "mrkdwn", "text": body or "_no steps yet_"}},
    ]
    if event.actions:
        steering = "\n".join(steering_lines(event.actions))
        blocks.append({"type": "context", "block_id": "steering", "elements": [{"type": "mrkdwn", "text": steering}]})
    context = [{"type": "mrkdwn", "text": f"workflow `{event.workflow_id}`"}]
    if event.incident_id:
        context.append({"type": "mrkdwn", "text": f"incident `{event.incident_id}`"})
    if event.ui_url:
        context.append({"type": "mrkdwn", "text": f"<{event.ui_url}|open in the Temporal UI>"})
    if report_url:
        context.append({"type": "mrkdwn", "text": f"<{report_url}|run report (charts, audit trail)>"})
    blocks.append({"type": "context", "elements": context})
    text = f"{event.runbook} on {event.target}: {event.title}"
    return text, blocks
