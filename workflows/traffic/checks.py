"""The routers' own checks and arithmetic (pure; deterministic workflow code)."""

from __future__ import annotations

from temporalio import workflow
from temporalio.exceptions import ApplicationError

with workflow.unsafe.imports_passed_through():
    from pydantic import BaseModel

    from core import errors


def invalid(message: str) -> ApplicationError:
    return ApplicationError(message, type=errors.INVALID_INPUT, non_retryable=True)


def blank(fields: dict[str, str | None]) -> None:
    """Names that are given but blank (or padded with spaces) are refused before anything is read or changed."""
    bad = [name for name, value in fields.items() if value is not None and (not value.strip() or value != value.strip())]
    if bad:
        raise invalid(f"blank or padded name(s): {', '.join(bad)}")


def names(spec: BaseModel, *fields: str) -> list[str]:
    """The values of the spec's name ``fields``, all of which must be filled (the runbook's input fills them from
    the service)."""
    values = [getattr(spec, field) for field in fields]
    missing = [field for field, value in zip(fields, values, strict=True) if not value]
    if missing:
        raise invalid(f"router spec is missing {', '.join(missing)}")
    return values


def check_weight(weight: int) -> None:
    if not 0 <= weight <= 100:
        raise invalid(f"canary weight must be 0..100, not {weight}")


def share(weights: dict[str, int], target: str) -> int:
    """``target``'s share of the traffic in percent (weights are relative; none at all is 0)."""
    total = sum(weights.values())
    return 0 if total == 0 else round(100 * weights.get(target, 0) / total)
