"""A duration type that reads the way operators write durations: ``90s``, ``10m``, ``1h30m``, ``2d``.

Also accepts a number of seconds and ISO 8601 (``PT10M``), and always serialises back to the short form so
workflow inputs and histories stay readable.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated, Any

from pydantic import BeforeValidator, PlainSerializer

_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(value: Any) -> timedelta:
    if isinstance(value, timedelta):
        return value
    if isinstance(value, bool):
        raise ValueError("a duration must be like 30s, 10m, 1h30m or 2d")
    if isinstance(value, (int, float)):
        if value < 0:
            raise ValueError("a duration cannot be negative")
        return timedelta(seconds=value)
    if not isinstance(value, str):
        raise ValueError("a duration must be like 30s, 10m, 1h30m or 2d")
    text = value.strip().lower().replace(" ", "")
    if text.startswith("p"):
        return _parse_iso(text)
    if re.fullmatch(r"\d+(\.\d+)?", text):
        return timedelta(seconds=float(text))
    pos, total = 0, 0.0
    for match in _PART.finditer(text):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _UNITS[match.group(2)]
        pos = match.end()
    if pos != len(text) or not text:
        raise ValueError(f"{value!r} is not a duration (write it like 30s, 10m, 1h30m or 2d)")
    return timedelta(seconds=total)


def _parse_iso(text: str) -> timedelta:
    match = re.fullmatch(
        r"p(?:(\d+)d)?(?:t(?:(\d+)h)?(?:(\d+)m)?(?:(\d+(?:\.\d+)?)s)?)?", text
    )
    if not match or text in ("p", "pt"):
        raise ValueError(f"{text!r} is not an ISO 8601 duration")
    d, h, m, s = match.groups()
    return timedelta(days=int(d or 0), hours=int(h or 0), minutes=int(m or 0), seconds=float(s or 0))


def format_duration(value: timedelta) -> str:
    total = value.total_seconds()
    if total == 0:
        return "0s"
    if total != int(total):
        return f"{total:.6f}".rstrip("0").rstrip(".") + "s"  # never scientific notation: it must parse back
    out, rest = [], int(total)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if rest >= size:
            out.append(f"{rest // size}{unit}")
            rest %= size
    return "".join(out)


def format_span(value: timedelta) -> str:
    """A measured duration for people: rounded to whole seconds (``20s``, never ``20.105965s``), largest units
    first (``10m40s``)."""
    return format_duration(timedelta(seconds=max(0, round(value.total_seconds()))))


Duration = Annotated[
    timedelta,
    BeforeValidator(parse_duration),
    PlainSerializer(format_duration, return_type=str, when_used="json"),
]
