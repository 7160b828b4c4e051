"""Maintenance windows (pure): parsing, ranges crossing midnight, DST changes."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from updaterd import window

BERLIN = ZoneInfo("Europe/Berlin")


def at(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=BERLIN).timestamp()


def local(t: float) -> datetime:
    return datetime.fromtimestamp(t, BERLIN)


def test_parse_several_ranges_and_day_lists() -> None:
    spans = window.parse("Mon-Fri 02:00-05:00, Sat-Sun 00:00-06:00, Wed,Fri 12:00-13:00")
    assert [sorted(s.days) for s in spans] == [[0, 1, 2, 3, 4], [5, 6], [2, 4]]
    assert window.parse("Fri-Mon 22:00-02:00")[0].days == frozenset({4, 5, 6, 0})


@pytest.mark.parametrize("spec", ["Mon 2:00-05:00", "Funday 02:00-03:00", "Mon 25:00-26:00",
                                  "Mon 02:00-02:00", "02:00-05:00", "Mon-Fri 02:00"])
def test_bad_specs_are_refused_with_the_part_named(spec: str) -> None:
    with pytest.raises(ValueError, match="window"):
        window.parse(spec)


def test_open_and_next_open_on_a_plain_week() -> None:
    spans = window.parse("Mon-Fri 02:00-05:00")
    assert window.is_open(spans, local(at("2026-11-30T03:00")))  # a Monday
    assert not window.is_open(spans, local(at("2026-11-30T05:00")))
    nxt = window.next_open(spans, at("2026-11-28T12:00"), local)  # Saturday noon
    assert nxt == at("2026-11-30T02:00")


def test_window_crossing_midnight_belongs_to_its_start_day() -> None:
    spans = window.parse("Fri 22:00-02:00")
    assert window.is_open(spans, local(at("2026-11-27T23:30")))  # Friday
    assert window.is_open(spans, local(at("2026-11-28T01:59")))  # Saturday early
    assert not window.is_open(spans, local(at("2026-11-28T22:30")))  # Saturday night
    assert not window.is_open(spans, local(at("2026-11-27T01:00")))  # Friday early: Thu's


def test_dst_spring_forward_skipped_hour_does_not_open() -> None:
    spans = window.parse("Sun 02:00-03:00")
    # 2026-03-29 in Berlin: 02:00 jumps to 03:00, so this window does not exist that day
    nxt = window.next_open(spans, at("2026-03-29T00:00"), local)
    assert nxt is not None and local(nxt).date().isoformat() == "2026-04-05"


def test_dst_fall_back_repeated_hour_is_open_both_times() -> None:
    spans = window.parse("Sun 02:00-03:00")
    first = datetime(2026, 10, 25, 2, 30, tzinfo=BERLIN, fold=0).timestamp()
    second = datetime(2026, 10, 25, 2, 30, tzinfo=BERLIN, fold=1).timestamp()
    assert second - first == 3600
    assert window.is_open(spans, local(first)) and window.is_open(spans, local(second))
    assert not window.is_open(spans, local(second + 3600))


def test_describe_wait() -> None:
    assert window.describe_wait(3 * 3600 + 12 * 60 + 5) == "3h12m"
    assert window.describe_wait(59) == "0m"
    assert window.describe_wait(2 * 86400 + 3600) == "2d1h"
