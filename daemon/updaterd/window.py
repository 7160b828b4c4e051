"""Maintenance windows: `"Mon-Fri 02:00-05:00, Sat-Sun 00:00-06:00"` in local wall-clock time.

A range whose end is not after its start crosses midnight and belongs to the day it starts
(`"Fri 22:00-02:00"` is open from Friday 22:00 to Saturday 02:00). Times are wall-clock, so across
a DST change a window keeps its local hours (a window inside the skipped hour does not open that
day; one inside the repeated hour is open twice). Pure: callers pass the local-time conversion.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_DAYS = r"[A-Za-z]{3}(?:-[A-Za-z]{3})?"
_RANGE = re.compile(rf"^(?P<days>{_DAYS}(?:\s*,\s*{_DAYS})*)"
                    r"\s+(?P<start>\d{2}:\d{2})-(?P<end>\d{2}:\d{2})$")
STEP = 60  # seconds: windows are given to the minute


@dataclass(frozen=True)
class Span:
    days: frozenset[int]  # 0 = Monday
    start: int  # minutes after midnight
    end: int


def _minutes(text: str, spec: str) -> int:
    h, m = int(text[:2]), int(text[3:])
    if h > 24 or m > 59 or (h == 24 and m):
        raise ValueError(f"bad time {text!r} in window {spec!r}")
    return h * 60 + m


def _days(text: str, spec: str) -> frozenset[int]:
    out: set[int] = set()
    for part in re.split(r"\s*,\s*", text.lower()):
        first, _, last = part.partition("-")
        if first not in DAYS or (last and last not in DAYS):
            raise ValueError(f"bad day {part!r} in window {spec!r} (Mon, Tue, ... Sun)")
        a, b = DAYS.index(first), DAYS.index(last or first)
        out.update((a + i) % 7 for i in range((b - a) % 7 + 1))
    return frozenset(out)


def parse(spec: str) -> list[Span]:
    """Parse a window spec; raises ValueError naming the bad part."""
    spans = []
    # ranges end with a time, so only a comma after a time separates two of them
    for part in re.split(r"(?<=\d{2}:\d{2})\s*,\s*", spec.strip()):
        m = _RANGE.match(part.strip())
        if not m:
            raise ValueError(f"bad window part {part.strip()!r} in {spec!r} "
                             "(expected e.g. 'Mon-Fri 02:00-05:00')")
        start, end = _minutes(m["start"], spec), _minutes(m["end"], spec)
        if start == end:
            raise ValueError(f"empty window {part.strip()!r} in {spec!r}")
        spans.append(Span(_days(m["days"], spec), start, end))
    return spans


def is_open(spans: list[Span], local: datetime) -> bool:
    """Is the window open at this local wall-clock time?"""
    day, minute = local.weekday(), local.hour * 60 + local.minute
    for s in spans:
        if s.start < s.end:
            if day in s.days and s.start <= minute < s.end:
                return True
        elif (day in s.days and minute >= s.start) or ((day - 1) % 7 in s.days
                                                          and minute < s.end):
            return True
    return False


def next_open(spans: list[Span], now: float, to_local: Callable[[float], datetime],
              horizon: float = 8 * 86400) -> float | None:
    """The first time (epoch seconds) at or after `now` when the window is open."""
    t = now
    if is_open(spans, to_local(t)):
        return t
    t = (int(now) // STEP + 1) * STEP
    while t <= now + horizon:
        if is_open(spans, to_local(t)):
            return float(t)
        t += STEP
    return None


def local_time(t: float) -> datetime:
    """This host's local time (DST-aware for each instant)."""
    return datetime.fromtimestamp(t).astimezone()


def describe_wait(seconds: float) -> str:
    """3h12m."""
    minutes = int(seconds // 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    if days:
        return f"{days}d{hours}h"
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m"
