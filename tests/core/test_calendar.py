"""The change calendar (core/calendar.py, runbooks/calendar.yaml): which moment is frozen for which runbook and
environment, recurrence across time zones and DST, and a bad calendar refused naming file, line and field."""

from __future__ import annotations

import textwrap
from datetime import datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from core.calendar import Calendar, freeze_at
from core.catalog import Catalog, CatalogError
from tests.core.test_catalog import GOOD, INPUTS

REPO = Path(__file__).resolve().parents[2]
UTC = timezone.utc
NEW_YORK = ZoneInfo("America/New_York")

CALENDAR = """\
timezone: Europe/Berlin
break_glass: {groups: [sre], timeout: 2h}
windows:
  - name: year-end
    description: year-end freeze
    start: 2026-12-23T00:00
    end: 2027-01-04T00:00
    rrule: FREQ=YEARLY
    environments: [production, "prod-*"]
    exempt: ["gated-change:real"]
  - name: weekend
    start: 2026-03-06T18:00
    duration: 60h
    rrule: FREQ=WEEKLY;BYDAY=FR;UNTIL=20261201T000000
    timezone: America/New_York
    environments: [staging]
    runbooks: [gated-change]
    break_glass: {groups: [security], required_approvals: 1}
"""


def _folder(tmp_path: Path, calendar: str = CALENDAR) -> Path:
    (tmp_path / "groups.yaml").write_text("groups: {sre: [dave], security: [carol]}")
    (tmp_path / "gated.yaml").write_text(textwrap.dedent(GOOD))
    (tmp_path / "calendar.yaml").write_text(calendar)
    return tmp_path


def test_the_product_calendar_is_valid_and_freezes_production_at_year_end():
    catalog = Catalog.load(REPO / "runbooks")
    christmas = datetime(2026, 12, 25, 12, tzinfo=UTC)
    freeze = catalog.freeze("canary-ramp", "production", christmas)
    assert freeze is not None and freeze.window == "year-end"
    assert freeze.break_glass is not None and freeze.break_glass.require_reason
    assert catalog.freeze("restore-drill", "production", christmas) is None  # exempt
    assert catalog.freeze("region-failover", "production", christmas, kind="real") is None  # a real failover
    assert catalog.freeze("region-failover", "production", christmas, kind="drill") is not None  # a drill waits
    assert catalog.freeze("canary-ramp", "staging", christmas) is None


def test_a_window_is_wall_clock_time_in_its_zone(tmp_path):
    catalog = Catalog.load(_folder(tmp_path), inputs=INPUTS)
    # Berlin is UTC+1 in winter: the freeze starts at 23:00 UTC the day before
    assert catalog.freeze("gated-change", "production", datetime(2026, 12, 22, 22, 59, tzinfo=UTC)) is None
    freeze = catalog.freeze("gated-change", "production", datetime(2026, 12, 22, 23, 0, tzinfo=UTC))
    assert freeze is not None
    assert (freeze.starts_at, freeze.ends_at) == (datetime(2026, 12, 22, 23, tzinfo=UTC), datetime(2027, 1, 3, 23, tzinfo=UTC))
    assert catalog.freeze("gated-change", "production", datetime(2027, 1, 3, 23, 0, tzinfo=UTC)) is None  # end excluded
    # recurs yearly; a pattern matches environments; the break-glass policy is the calendar's (sre)
    again = catalog.freeze("gated-change", "prod-eu", datetime(2030, 1, 1, tzinfo=UTC))
    assert again is not None and again.starts_at == datetime(2029, 12, 22, 23, tzinfo=UTC)
    assert again.break_glass is not None and set(again.break_glass.groups) == {"sre"}
    # exempt only for its kind
    assert catalog.freeze("gated-change", "production", datetime(2026, 12, 25, tzinfo=UTC), kind="real") is None


def test_a_weekly_window_follows_daylight_saving_time_and_ends_with_its_rule(tmp_path):
    calendar = Catalog.load(_folder(tmp_path), inputs=INPUTS).calendar
    # Friday 18:00 in New York: 23:00 UTC in winter (EST), 22:00 UTC in summer (EDT)
    march = datetime(2026, 3, 6, 23, 0, tzinfo=UTC)
    july = datetime(2026, 7, 10, 22, 0, tzinfo=UTC)
    for moment in (march, july):
        assert freeze_at(calendar, "gated-change", "staging", moment - timedelta(minutes=1)) is None
        freeze = freeze_at(calendar, "gated-change", "staging", moment)
        assert freeze is not None and freeze.window == "weekend"
        assert freeze.ends_at.astimezone(NEW_YORK).replace(tzinfo=None) == (  # Monday 06:00 there, 60 wall-clock hours
            moment.astimezone(NEW_YORK).replace(tzinfo=None) + timedelta(hours=60))
    assert freeze_at(calendar, "other", "staging", july) is None  # only the runbooks it names
    assert freeze_at(calendar, "gated-change", "staging", datetime(2026, 12, 5, 23, tzinfo=UTC)) is None  # UNTIL


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda c: c.replace("Europe/Berlin", "Mars/Olympus"), "calendar.yaml:1: timezone: unknown time zone 'Mars/Olympus'"),
        (lambda c: c.replace("FREQ=YEARLY", "FREQ=SOMETIMES"), "calendar.yaml:8: windows.0.rrule: cannot parse the RRULE 'FREQ=SOMETIMES'"),
        (lambda c: c.replace("end: 2027-01-04T00:00", "end: 2026-12-01T00:00"), "calendar.yaml:7: windows.0.end: the window ends before it starts (inverted)"),
        (lambda c: c.replace("environments: [staging]", "environments: [production]").replace("UNTIL=20261201", "UNTIL=20271201"),
         "calendar.yaml:12: windows.1: 'weekend' overlaps 'year-end' at 2026-12-25 23:00 UTC"),
        (lambda c: c.replace("duration: 60h", "duration: 8d"), "calendar.yaml:14: windows.1.rrule: occurrences of 'weekend' overlap"),
        (lambda c: c.replace('exempt: ["gated-change:real"]', "exempt: [nope]"), "calendar.yaml:10: windows.0.exempt.0: unknown runbook 'nope'"),
        (lambda c: c.replace("groups: [security]", "groups: [night-shift]"), "calendar.yaml:18: windows.1.break_glass: unknown approver group(s) night-shift"),
        (lambda c: c.replace("    duration: 60h\n", ""), "calendar.yaml:11: windows.1.end: give either end or duration"),
    ],
)
def test_a_bad_calendar_is_refused_naming_file_line_and_field(tmp_path, change, expected):
    with pytest.raises(CatalogError) as error:
        Catalog.load(_folder(tmp_path, change(CALENDAR)), inputs=INPUTS)
    assert any(expected in p for p in error.value.problems), error.value.problems


def test_no_calendar_freezes_nothing(tmp_path):
    (tmp_path / "groups.yaml").write_text("groups: {sre: [dave], security: [carol]}")
    (tmp_path / "gated.yaml").write_text(textwrap.dedent(GOOD))
    catalog = Catalog.load(tmp_path, inputs=INPUTS)
    assert catalog.calendar == Calendar() and catalog.freeze("gated-change", "production", datetime.now(UTC)) is None


ICS = """\
BEGIN:VCALENDAR
VERSION:2.0
PRODID:-//ops//freeze//EN
BEGIN:VEVENT
UID:launch-1
SUMMARY:Product launch
DTSTART;TZID=America/New_York:20260915T090000
DTEND;TZID=America/New_York:20260916T090000
END:VEVENT
BEGIN:VEVENT
UID:close-1
SUMMARY:Month-end close
DTSTART;VALUE=DATE:20260130
DURATION:P2D
RRULE:FREQ=MONTHLY;BYMONTHDAY=-2
END:VEVENT
END:VCALENDAR
"""


def test_windows_are_imported_from_an_icalendar_file(tmp_path):
    folder = _folder(tmp_path, CALENDAR + "imports:\n  - {file: finance.ics, environments: [finance], "
                                          "exempt: [gated-change], break_glass: {groups: [security]}}\n")
    (folder / "finance.ics").write_text(ICS)
    catalog = Catalog.load(folder, inputs=INPUTS)
    launch = freeze_at(catalog.calendar, "other", "finance", datetime(2026, 9, 15, 14, tzinfo=UTC))
    assert launch is not None and launch.window == "Product launch"
    assert launch.starts_at == datetime(2026, 9, 15, 13, tzinfo=UTC)  # 09:00 in New York (EDT)
    close = catalog.freeze("other", "finance", datetime(2026, 3, 31, 12, tzinfo=UTC))  # the 30th and 31st
    assert close is not None and close.window == "Month-end close" and close.break_glass is not None
    assert set(close.break_glass.groups) == {"security"}
    assert catalog.freeze("other", "finance", datetime(2026, 3, 29, 12, tzinfo=UTC)) is None
    assert catalog.freeze("other", "staging", datetime(2026, 3, 31, 12, tzinfo=UTC)) is None  # not its environment
    assert catalog.freeze("gated-change", "finance", datetime(2026, 3, 31, 12, tzinfo=UTC)) is None  # exempt


def test_a_bad_icalendar_event_is_refused_naming_file_and_line(tmp_path):
    folder = _folder(tmp_path, CALENDAR + "imports:\n  - {file: finance.ics, environments: [finance]}\n")
    (folder / "finance.ics").write_text(ICS.replace("FREQ=MONTHLY", "FREQ=NEVER"))
    with pytest.raises(CatalogError) as error:
        Catalog.load(folder, inputs=INPUTS)
    assert any("finance.ics:10: Month-end close: rrule: cannot parse the RRULE 'FREQ=NEVER" in p for p in error.value.problems), error.value.problems
    (folder / "finance.ics").unlink()
    with pytest.raises(CatalogError) as missing:
        Catalog.load(folder, inputs=INPUTS)
    assert any("calendar.yaml:20: imports.0.file: cannot read finance.ics" in p for p in missing.value.problems), \
        missing.value.problems


def test_the_freeze_check_parses_the_catalog_again_only_when_its_files_change(tmp_path, monkeypatch):
    """CalendarActivities.check_freeze reads the catalog's files at every call (an edit reaches a waiting run at its
    next check, even one of the same size within the same clock tick) and parses them only when their bytes changed;
    a catalog that cannot be loaded is refused every time until it is fixed."""
    from temporalio.exceptions import ApplicationError

    from activities.calendar import CalendarActivities
    from core.calendar import FreezeQuery

    loads = []
    load = Catalog.load.__func__  # type: ignore[attr-defined]
    monkeypatch.setattr(Catalog, "load", classmethod(lambda cls, *a, **kw: loads.append(a) or load(cls, *a, **kw)))
    folder = _folder(tmp_path, CALENDAR + "imports:\n  - {file: finance.ics, environments: [finance]}\n")
    (folder / "finance.ics").write_text(ICS)
    christmas = datetime(2026, 12, 25, 12, tzinfo=UTC)
    calendar = CalendarActivities(folder)

    def frozen(environment: str = "production", at: datetime = christmas) -> bool:
        return calendar.check_freeze(FreezeQuery(runbook="gated-change", environment=environment, at=at)).freeze is not None

    assert frozen() and frozen() and frozen()
    assert len(loads) == 2  # the first load learns which files the calendar imports; the next reads them first
    (folder / "calendar.yaml").write_text((folder / "calendar.yaml").read_text().replace("2026-12-23", "2026-12-26"))
    assert not frozen() and not frozen()  # the same size, at once
    assert len(loads) == 3
    month_end = datetime(2026, 3, 31, 12, tzinfo=UTC)
    assert frozen("finance", month_end)
    (folder / "finance.ics").write_text(ICS.replace("BYMONTHDAY=-2", "BYMONTHDAY=+1"))  # an imported file's edit
    assert not frozen("finance", month_end) and len(loads) == 4
    (folder / "gated.yaml").write_text("name: [")
    for _ in range(2):
        with pytest.raises(ApplicationError, match="the change calendar cannot be read"):
            frozen()
    assert len(loads) == 6
    _folder(tmp_path, CALENDAR)  # fixed, and the import gone
    assert frozen() and frozen() and frozen() and len(loads) == 8  # the first learns it imports nothing
