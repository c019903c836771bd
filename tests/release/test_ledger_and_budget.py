"""The release's pure parts (the error budget, the ledger's reading) and the ledger activities on a real PostgreSQL."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone

import pytest

from activities.release_ledger import ReleaseLedgerActivities
from core.release import LedgerEntry, LedgerQuery, LedgerRow, Verdict, error_budget, ledger_view


def test_the_error_budget_is_what_the_window_left_of_the_objectives_allowance() -> None:
    remaining, blocked, why = error_budget(99.95, 99.9)  # half of the 0.1 % allowance used
    assert remaining == pytest.approx(50.0) and not blocked and "50 % of the error budget left" in why
    remaining, blocked, why = error_budget(99.9, 99.9)  # exactly spent
    assert remaining == pytest.approx(0.0, abs=1e-9) and blocked and why.startswith("error budget spent")
    remaining, blocked, _ = error_budget(99.5, 99.9)
    assert remaining == pytest.approx(-400.0) and blocked
    assert error_budget(None, 99.9)[:2] == (None, True)  # no data: the budget cannot be told, so it blocks
    # 99.9 % over 30 days is 43.2 minutes of unavailability: 21.6 minutes down leaves half
    assert error_budget(100 * (1 - 21.6 / (30 * 24 * 60)), 99.9)[0] == pytest.approx(50.0)


def _row(env: str, version: str, verdict: Verdict, minutes: int) -> LedgerRow:
    return LedgerRow(service="shop", environment=env, version=version, verdict=verdict,
                     workflow_id=f"release:shop-{minutes}", at=datetime(2026, 12, 1, tzinfo=timezone.utc)
                     + timedelta(minutes=minutes))


def test_a_version_marked_bad_anywhere_is_never_a_last_known_good() -> None:
    view = ledger_view("shop", [_row("production", "v1", "good", 1), _row("staging", "v2", "good", 2),
                                _row("production", "v2", "good", 3), _row("production", "v2", "bad", 4),
                                _row("staging", "v3", "good", 5)])
    assert view.last_good == {"production": "v1", "staging": "v3"}
    assert list(view.bad) == ["v2"] and "production" in view.bad["v2"]


def test_the_ledger_records_each_verdict_once_and_reads_it_back(postgres: str) -> None:
    ledger = ReleaseLedgerActivities(postgres)
    service = f"shop-{uuid.uuid4().hex[:6]}"
    entry = LedgerEntry(service=service, environment="production", version="v1", verdict="good",
                        workflow_id="release:shop", reason="healthy")
    assert ledger.ledger_record(entry) is True
    assert ledger.ledger_record(entry) is False  # a retried activity, a replayed run: written once
    ledger.ledger_record(entry.model_copy(update={"version": "v2", "workflow_id": "release:shop-2"}))
    assert ledger.ledger_read(LedgerQuery(service=service)).last_good == {"production": "v2"}
    ledger.ledger_record(entry.model_copy(update={"version": "v2", "verdict": "bad", "workflow_id": "release:shop-3"}))
    view = ledger.ledger_read(LedgerQuery(service=service))
    assert view.last_good == {"production": "v1"} and "v2" in view.bad
    assert ledger.ledger_read(LedgerQuery(service="nobody")).last_good == {}


def test_no_ledger_configured_is_a_typed_refusal() -> None:
    from temporalio.exceptions import ApplicationError

    with pytest.raises(ApplicationError) as err:
        ReleaseLedgerActivities(None).ledger_read(LedgerQuery(service="shop"))
    assert err.value.type == "InvalidInput" and "RUNBOOK_RELEASE_LEDGER_DSN" in err.value.message
