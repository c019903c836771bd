"""The change calendar: named freeze windows, and the one answer to "is this moment frozen for runbook R in
environment E?".

``runbooks/calendar.yaml`` (loaded and validated with the catalog, core/catalog.py) names windows. A window is one
span (``start`` and ``end`` or ``duration``) or a recurring one (``rrule``: an RFC 5545 recurrence rule, each
occurrence lasting ``end - start`` or ``duration``), read as wall-clock time in its ``timezone`` (IANA name; the
calendar's ``timezone`` by default, else UTC). It freezes the ``environments`` it names (shell patterns such as
``prod-*``; none = every environment) for the ``runbooks`` it names (none = every runbook), except the ``exempt``
ones: a runbook's name, or ``name:kind`` for one kind of its runs (``region-failover:real``: a real failover, not a
drill). ``break_glass`` names who may let a run change inside the window anyway (the calendar's by default).
``imports`` adds the events of iCalendar (.ics) files beside calendar.yaml as windows (``windows_from_ics``).

Everything here is pure: ``freeze_at`` takes the moment to judge, so a workflow (through the ``check_freeze``
activity, at ``workflow.now()``), a dry-run and the CLI all give the same answer. python-dateutil parses the rules;
zoneinfo reads the time zones (the system's tz database; install the tzdata package where there is none).
"""

from __future__ import annotations

import fnmatch
import itertools
from datetime import date, datetime, timedelta, timezone
from typing import Iterator, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from core.approval import ApprovalPolicy
from core.duration import Duration

__all__ = ["BreakGlass", "Calendar", "Freeze", "FreezePolicy", "FreezeQuery", "FreezeState", "Window", "freeze_at",
           "upcoming"]
FreezePolicy = Literal["wait", "refuse"]  # a runbook's answer to a freeze (its catalog entry's ``freeze``)
OVERLAP_HORIZON = timedelta(days=2 * 366)  # how far ahead overlapping occurrences are looked for
MAX_OCCURRENCES = 2000  # per window, when looking for overlaps


def zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {name!r} (an IANA name such as Europe/Berlin or UTC)") from None


class BreakGlass(BaseModel):
    """Who may let a run change inside a window: an approval through the run's gate, with a reason."""

    model_config = ConfigDict(extra="forbid")

    groups: list[str] = Field(min_length=1, description="approver groups of groups.yaml")
    required_approvals: int = Field(1, ge=1)
    allow_self_approval: bool = False
    timeout: Duration = Field(timedelta(hours=24), description="how long the break-glass gate stays open")


class Window(BaseModel):
    """One named freeze window (see the module's docstring)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9 ._-]*$")
    description: str = ""
    start: datetime = Field(description="wall-clock time in the window's time zone (the first occurrence's start)")
    end: datetime | None = None
    duration: Duration | None = None
    rrule: str | None = Field(None, description="RFC 5545 RRULE, e.g. FREQ=WEEKLY;BYDAY=FR (no DTSTART: start is it)")
    timezone: str | None = None
    environments: list[str] = Field(default_factory=list, description="patterns; empty = every environment")
    runbooks: list[str] = Field(default_factory=list, description="empty = every runbook")
    exempt: list[str] = Field(default_factory=list, description="runbook or runbook:kind")
    break_glass: BreakGlass | None = None

    @field_validator("start", "end")
    @classmethod
    def _wall_clock(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is not None:
            raise ValueError("write a wall-clock time without an offset (2026-12-23T18:00); the zone is `timezone`")
        return value

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str | None) -> str | None:
        if value is not None:
            zone(value)
        return value

    @field_validator("rrule")
    @classmethod
    def _rule(cls, value: str | None) -> str | None:
        if value is None:
            return None
        text = value.strip().removeprefix("RRULE:")
        if "DTSTART" in text.upper():
            raise ValueError("no DTSTART in the rule: the window's start is its start")
        from dateutil.rrule import rrule, rrulestr  # on use: core.runbook (so every CLI command) imports this module

        try:
            parsed = rrulestr(text, dtstart=datetime(2000, 1, 1))
        except (ValueError, TypeError) as err:
            raise ValueError(f"cannot parse the RRULE {value!r}: {err}") from None
        if not isinstance(parsed, rrule):
            raise ValueError(f"one RRULE only (no EXDATE, RDATE or second rule): {value!r}")
        return text

    @model_validator(mode="after")
    def _span(self) -> "Window":
        if (self.end is None) == (self.duration is None):
            raise ValueError("end: give either end or duration")
        if self.length <= timedelta(0):
            raise ValueError("end: the window ends before it starts (inverted)")
        return self

    @property
    def length(self) -> timedelta:
        return self.duration if self.duration is not None else (self.end or self.start) - self.start

    def tz(self, default: str) -> ZoneInfo:
        return zone(self.timezone or default)

    def applies(self, runbook: str, environment: str, kind: str = "") -> bool:
        """Whether this window freezes ``runbook`` (of ``kind``) in ``environment``."""
        if self.runbooks and runbook not in self.runbooks:
            return False
        if runbook in self.exempt or (kind and f"{runbook}:{kind}" in self.exempt):
            return False
        return not self.environments or any(fnmatch.fnmatchcase(environment, p) for p in self.environments)

    def starts(self, after_local: datetime) -> Iterator[datetime]:
        """Local (naive) occurrence starts from ``after_local`` on (inclusive)."""
        if not self.rrule:
            if self.start >= after_local:
                yield self.start
            return
        from dateutil.rrule import rrulestr

        rule = rrulestr(self.rrule, dtstart=self.start)  # one rrule: the validator made sure
        yield from rule.xafter(after_local, inc=True)

    def occurrences(self, after: datetime, default_zone: str) -> Iterator[tuple[datetime, datetime]]:
        """The occurrences (UTC start, UTC end) that end after ``after`` (aware), in order."""
        tz = self.tz(default_zone)
        local_after = after.astimezone(tz).replace(tzinfo=None) - self.length - timedelta(days=1)
        for start in self.starts(local_after):
            span = (start.replace(tzinfo=tz).astimezone(timezone.utc),
                    (start + self.length).replace(tzinfo=tz).astimezone(timezone.utc))
            if span[1] > after:
                yield span


class IcsImport(BaseModel):
    """Windows taken from an iCalendar file beside calendar.yaml: each VEVENT (SUMMARY, DTSTART, DTEND or DURATION,
    RRULE) becomes a window with this scope."""

    model_config = ConfigDict(extra="forbid")

    file: str = Field(pattern=r"^[^/]+\.ics$", description="a file in the catalog folder")
    environments: list[str] = Field(default_factory=list)
    runbooks: list[str] = Field(default_factory=list)
    exempt: list[str] = Field(default_factory=list)
    break_glass: BreakGlass | None = None


class Calendar(BaseModel):
    """The change calendar of a catalog (runbooks/calendar.yaml)."""

    model_config = ConfigDict(extra="forbid")

    timezone: str = "UTC"
    break_glass: BreakGlass | None = Field(None, description="the default for windows that name none")
    windows: list[Window] = Field(default_factory=list)
    imports: list[IcsImport] = Field(default_factory=list, description="iCalendar files whose events are windows")

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        zone(value)
        return value

    @model_validator(mode="after")
    def _unique(self) -> "Calendar":
        seen: set[str] = set()
        for index, window in enumerate(self.windows):
            if window.name in seen:
                raise ValueError(f"windows.{index}.name: {window.name!r} is already a window")
            seen.add(window.name)
        return self

    def problems(self) -> list[tuple[tuple, str]]:
        """Overlapping windows (their scopes and times intersect), each as (location, message)."""
        found: list[tuple[tuple, str]] = []
        if not self.windows:
            return found
        begin = min(w.start for w in self.windows).replace(tzinfo=timezone.utc) - timedelta(days=1)
        end = max(w.start for w in self.windows).replace(tzinfo=timezone.utc) + OVERLAP_HORIZON
        spans = [list(itertools.takewhile(lambda s: s[0] < end,
                                          itertools.islice(w.occurrences(begin, self.timezone), MAX_OCCURRENCES)))
                 for w in self.windows]
        for index, (window, own) in enumerate(zip(self.windows, spans, strict=True)):
            for first, second in itertools.pairwise(own):
                if second[0] < first[1]:
                    found.append(((index, "rrule"), f"windows.{index}.rrule: occurrences of {window.name!r} overlap "
                                  f"({first[0]:%Y-%m-%d %H:%M} and {second[0]:%Y-%m-%d %H:%M} UTC): it lasts "
                                  "longer than its recurrence"))
                    break
        for (i, a), (j, b) in itertools.combinations(enumerate(self.windows), 2):
            if not _scopes_meet(a, b):
                continue
            clash = _first_overlap(spans[i], spans[j])
            if clash is not None:
                found.append(((j, "start"), f"windows.{j}: {b.name!r} overlaps {a.name!r} at {clash:%Y-%m-%d %H:%M} "
                              "UTC for the same environments and runbooks: merge them or make them disjoint"))
        return found


def _scopes_meet(a: Window, b: Window) -> bool:
    if a.runbooks and b.runbooks and not set(a.runbooks) & set(b.runbooks):
        return False
    if not a.environments or not b.environments:
        return True
    return any(fnmatch.fnmatchcase(x, y) or fnmatch.fnmatchcase(y, x) or x == y
               for x in a.environments for y in b.environments)


def _first_overlap(a: list[tuple[datetime, datetime]], b: list[tuple[datetime, datetime]]) -> datetime | None:
    i = j = 0
    while i < len(a) and j < len(b):
        if a[i][0] < b[j][1] and b[j][0] < a[i][1]:
            return max(a[i][0], b[j][0])
        if a[i][1] <= b[j][1]:
            i += 1
        else:
            j += 1
    return None


class Freeze(BaseModel):
    """A window that freezes a run now: its name and occurrence, and who may break the glass (None: nobody)."""

    window: str
    description: str = ""
    starts_at: datetime
    ends_at: datetime
    break_glass: ApprovalPolicy | None = None

    def line(self) -> str:
        what = f" ({self.description})" if self.description else ""
        return f"change freeze {self.window!r}{what} until {self.ends_at:%Y-%m-%d %H:%M} UTC"


class FreezeQuery(BaseModel):
    """The ``check_freeze`` activity's input: which run, and the moment (the workflow's clock)."""

    runbook: str
    environment: str = ""
    kind: str = Field("", description="the kind of run, for exemptions such as region-failover:real")
    at: datetime


class FreezeState(BaseModel):
    """The ``check_freeze`` activity's answer: the freeze in force, or None."""

    freeze: Freeze | None = None


def freeze_at(calendar: Calendar, runbook: str, environment: str, at: datetime, kind: str = "",
              break_glass: dict[str, ApprovalPolicy] | None = None) -> Freeze | None:
    """The window that freezes ``runbook`` (of ``kind``) in ``environment`` at ``at`` (aware), or None. Windows
    do not overlap (the catalog refuses it), so there is at most one. ``break_glass`` maps a window's name to its
    resolved break-glass policy (the catalog resolves the groups)."""
    for window in calendar.windows:
        if not window.applies(runbook, environment, kind):
            continue
        for start, end in window.occurrences(at, calendar.timezone):
            if start <= at < end:
                return Freeze(window=window.name, description=window.description, starts_at=start, ends_at=end,
                              break_glass=(break_glass or {}).get(window.name))
            break
    return None


class Occurrence(BaseModel):
    window: str
    starts_at: datetime
    ends_at: datetime
    active: bool


def upcoming(calendar: Calendar, at: datetime, count: int = 3) -> list[tuple[Window, list[Occurrence]]]:
    """For ``runbook calendar``: each window with its current occurrence (if any) and the next ones."""
    out = []
    for window in calendar.windows:
        spans = itertools.islice(window.occurrences(at, calendar.timezone), count)
        out.append((window, [Occurrence(window=window.name, starts_at=s, ends_at=e, active=s <= at)
                             for s, e in spans]))
    return out


def as_of(day: date | datetime) -> datetime:
    """An aware UTC moment from a date or a datetime (naive = UTC), for the CLI's --at."""
    moment = day if isinstance(day, datetime) else datetime(day.year, day.month, day.day)
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def windows_from_ics(text: str, scope: IcsImport) -> list[Window]:
    """The VEVENTs of an iCalendar (RFC 5545) text as windows with ``scope``'s environments, runbooks, exemptions
    and break-glass policy. Raises ValueError naming the line (1-based) of the event that cannot be read."""
    lines: list[tuple[int, str]] = []
    for number, raw in enumerate(text.splitlines(), 1):
        if raw[:1] in (" ", "\t") and lines:  # a folded line continues the previous one
            lines[-1] = (lines[-1][0], lines[-1][1] + raw[1:])
        elif raw.strip():
            lines.append((number, raw))
    windows: list[Window] = []
    event: dict[str, tuple[dict[str, str], str]] | None = None
    began = 0
    for number, line in lines:
        if line == "BEGIN:VEVENT":
            event, began = {}, number
            continue
        if line == "END:VEVENT" and event is not None:
            try:
                windows.append(_window_of(event, scope))
            except ValueError as err:
                raise ValueError(f"{began}: {err}") from None  # "<line>: <problem>", after the file's name
            event = None
            continue
        if event is None or ":" not in line:
            continue
        head, value = line.split(":", 1)
        name, *params = head.split(";")
        event[name.upper()] = (dict(p.split("=", 1) for p in params if "=" in p), value)
    return windows


def _ics_time(params: dict[str, str], value: str) -> tuple[datetime, str | None]:
    """A DTSTART/DTEND value as (wall-clock time, its zone or None for the calendar's)."""
    if params.get("VALUE") == "DATE" or len(value) == 8:
        return datetime.strptime(value, "%Y%m%d"), params.get("TZID")
    if value.endswith("Z"):
        return datetime.strptime(value, "%Y%m%dT%H%M%SZ"), "UTC"
    return datetime.strptime(value, "%Y%m%dT%H%M%S"), params.get("TZID")


def _window_of(event: dict[str, tuple[dict[str, str], str]], scope: IcsImport) -> Window:
    from core.duration import parse_duration

    if "DTSTART" not in event:
        raise ValueError("an event without DTSTART")
    summary = event.get("SUMMARY", ({}, ""))[1].replace("\\,", ",").strip() or event.get("UID", ({}, "event"))[1]
    name = "".join(c if c.isalnum() or c in " ._-" else "-" for c in summary).strip(" .-_") or "event"
    end: datetime | None = None
    length: timedelta | None = None
    try:
        start, zone_name = _ics_time(*event["DTSTART"])
        if "DTEND" in event:
            end = _ics_time(*event["DTEND"])[0]
        elif "DURATION" in event:
            length = parse_duration(event["DURATION"][1])
        else:  # RFC 5545: an event without an end lasts its day
            length = timedelta(days=1)
        return Window(name=name, description=summary, start=start, end=end, duration=length, timezone=zone_name,
                      rrule=event["RRULE"][1] if "RRULE" in event else None, environments=scope.environments,
                      runbooks=scope.runbooks, exempt=scope.exempt, break_glass=scope.break_glass)
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ValueError(f"{summary}: {where + ': ' if where else ''}{first['msg'].removeprefix('Value error, ')}") from None
    except ValueError as err:
        raise ValueError(f"{summary}: {err}") from None
