"""Parsing of the human units used in the configuration: durations and byte sizes."""

from __future__ import annotations

import re

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)")
_DURATION_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
DURATION_PATTERN = r"^\s*(\d+(\.\d+)?\s*(ms|s|m|h|d|w)\s*)+$"

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]i?B|B)?\s*$")
_SIZE_UNITS = {
    "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
    "KiB": 2**10, "MiB": 2**20, "GiB": 2**30, "TiB": 2**40,
}
SIZE_PATTERN = r"^\s*\d+(\.\d+)?\s*([KMGT]i?B|B)?\s*$"
RATE_PATTERN = r"^\s*\d+(\.\d+)?\s*([KMGT]i?B|B)?/s\s*$"


def parse_duration(text: str) -> float:
    """'1h30m' -> 5400.0 seconds; raises ValueError naming the text."""
    if not re.fullmatch(DURATION_PATTERN, text):
        raise ValueError(f"bad duration {text!r} (expected e.g. '30s', '10m', '4h', '1h30m')")
    return sum(float(n) * _DURATION_UNITS[u] for n, u in _DURATION_PART.findall(text))


def parse_size(text: str) -> int:
    """'20MiB' -> 20971520 bytes; raises ValueError naming the text."""
    m = _SIZE.match(text)
    if not m:
        raise ValueError(f"bad size {text!r} (expected e.g. '512KiB', '20MiB', '1GB')")
    return int(float(m.group(1)) * _SIZE_UNITS[m.group(2) or "B"])


def parse_rate(text: str) -> int:
    """'20MiB/s' -> bytes per second."""
    if not re.fullmatch(RATE_PATTERN, text):
        raise ValueError(f"bad rate {text!r} (expected e.g. '20MiB/s')")
    return parse_size(text.strip()[:-2])

