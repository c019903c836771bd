"""rotate-secret's contract alone: bad input is named field by field."""

from __future__ import annotations

from core.rotation import RotateSecretInput
from core.runbook import RunbookMeta


def test_blank_fields_are_named() -> None:
    problems = RotateSecretInput(meta=RunbookMeta(runbook="rotate-secret", target="x", requested_by="t")).problems()
    assert [p.split(":")[0] for p in problems] == ["role", "kv_path", "consumers", "server"]
