"""Severity routing: which channels hear of a run's event, by the event's kind and severity. One table.

A table is a list of routes; the first route whose ``kinds`` and ``severities`` both match an event decides its
channels (an empty ``kinds`` or ``severities`` matches any). ``DEFAULT_ROUTES`` is the stock table; a catalog may
replace it (``runbooks/routing.yaml``) and a runbook may put routes of its own in front of it (its ``routing:``).
The catalog resolves the table a run uses into ``RunbookMeta.routing``; the workflow routes each event with
``route`` and the notification channels deliver only what is routed to them.

Routing decides who is *told*. It does not stop a PagerDuty alert that a run opened from being resolved (that
follows the run: see activities/pagerduty.py), nor the notes a run started by an incident writes on that incident.
"""

from __future__ import annotations

from typing import Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, field_validator

EventKind = Literal[
    "started",
    "step_done",
    "approval_needed",
    "approval_reminder",
    "approval_escalated",
    "approval_decided",
    "rolled_back",
    "alert",
    "recovered",
    "finished",
    "failed",
]
Severity = Literal["info", "warning", "error", "critical"]
Channel = Literal["slack", "pagerduty"]

KINDS: tuple[str, ...] = get_args(EventKind)
SEVERITIES: tuple[str, ...] = get_args(Severity)


class Route(BaseModel):
    """Events of these kinds at these severities go to these channels (and nowhere else)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kinds: list[EventKind] = Field(default_factory=list, description="event kinds; empty = any kind")
    severities: list[Severity] = Field(default_factory=list, description="severities; empty = any severity")
    channels: list[Channel] = Field(description="where they go; [] = recorded only")

    @field_validator("kinds", "severities", "channels")
    @classmethod
    def _no_repeats(cls, values: list[str]) -> list[str]:
        repeated = sorted({v for v in values if values.count(v) > 1})
        if repeated:
            raise ValueError(f"{', '.join(repeated)} listed twice")
        return values

    def matches(self, kind: str, severity: str) -> bool:
        return (not self.kinds or kind in self.kinds) and (not self.severities or severity in self.severities)


# The stock table: critical events page (a rollback that failed, a Held failover, a failed drill's ending, an
# escalated approval); an alert at error (a failed restore drill, an incomplete fence) pages too; everything else,
# informational and warnings alike (reminders, a sandbox's TTL warning, a rollback that worked), goes to Slack.
DEFAULT_ROUTES: tuple[Route, ...] = (
    Route(kinds=["approval_escalated"], channels=["slack", "pagerduty"]),
    Route(severities=["critical"], channels=["slack", "pagerduty"]),
    Route(kinds=["alert", "failed"], severities=["error"], channels=["slack", "pagerduty"]),
    Route(channels=["slack"]),
)


def route(routes: list[Route] | tuple[Route, ...], kind: str, severity: str) -> list[Channel]:
    """The channels of the first route matching the event; none when no route matches."""
    for r in routes:
        if r.matches(kind, severity):
            return list(r.channels)
    return []


def route_problems(routes: list[Route] | tuple[Route, ...], *, complete: bool) -> list[tuple[int | None, str]]:
    """What is wrong with a table, as (route index or None for the whole table, message): a route that can never
    match because earlier routes take all its events, and (``complete``) events no route takes."""
    problems: list[tuple[int | None, str]] = []
    taken: set[tuple[str, str]] = set()
    for index, r in enumerate(routes):
        pairs = {(k, s) for k in (r.kinds or KINDS) for s in (r.severities or SEVERITIES)}
        if pairs <= taken:
            problems.append((index, "never matches: the routes before it take every event it names"))
        taken |= pairs
    if complete:
        missing = [(k, s) for k in KINDS for s in SEVERITIES if (k, s) not in taken]
        if missing:
            shown = ", ".join(f"{k} at {s}" for k, s in missing[:4]) + (" ..." if len(missing) > 4 else "")
            problems.append((None, f"no route for {shown}: end the table with a route that names no kinds and no "
                                   "severities (every other event to slack, say)"))
    return problems
