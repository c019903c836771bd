"""The steering verbs as a person names them, what each does, and one request (who, why, how long): no Temporal
client, so `runbook --help` and the commands that never reach Temporal describe them without importing the SDK
(starters.client sends them)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Steer:
    """One steering request as a person gives it: who, why, and for ``extend`` how long (e.g. ``10m``)."""

    by: str
    reason: str = ""
    duration: str | None = None


VERBS = ("pause", "resume", "promote", "extend", "destroy-now", "reverify")
_WHAT = {
    "pause": "pauses a canary ramp",
    "resume": "resumes a paused canary ramp",
    "promote": "promotes a canary to full weight, or ends a blue-green bake early (through the approval gate)",
    "extend": "adds time to a canary step, a blue-green bake or a sandbox's time to live",
    "destroy-now": "destroys a sandbox environment now",
    "reverify": "checks a held region failover or failback again",
}


def describe_verb(verb: str) -> str:
    return _WHAT[verb]


__all__ = ["VERBS", "Steer", "describe_verb"]
