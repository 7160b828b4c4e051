"""Durations, sizes and rates as written in the configuration."""

from __future__ import annotations

import pytest

from updaterd.units import parse_duration, parse_rate, parse_size


def test_durations() -> None:
    assert parse_duration("30s") == 30
    assert parse_duration("1h30m") == 5400
    assert parse_duration("250ms") == 0.25
    assert parse_duration("7d") == 7 * 86400
    with pytest.raises(ValueError, match="bad duration 'often'"):
        parse_duration("often")


def test_sizes_and_rates() -> None:
    assert parse_size("4MiB") == 4 << 20
    assert parse_size("1GB") == 10**9
    assert parse_size("512") == 512
    assert parse_rate("20MiB/s") == 20 << 20
    with pytest.raises(ValueError, match="bad rate"):
        parse_rate("20MiB")
    with pytest.raises(ValueError, match="bad size"):
        parse_size("lots")
