"""The words updaterd and its clients share: the phases of an operation, how one ends, and the
sentences that say what an update or a rollback did. Apart from the wire format
(`protocol.py`), so that the daemon's engine speaks them without knowing the wire.
"""

from __future__ import annotations

from typing import Literal

Phase = Literal["idle", "checking", "downloading", "staging", "waiting_window",
                "switching", "waiting_inhibitors", "restarting", "health_check", "committing",
                "rolling_back", "failed"]
# failed: the last operation failed (until the next one starts)
# downloading covers the digests too: they are computed as the bytes arrive, not after
# Phases past the switch: an operation in one of them finishes or rolls back, never cancelled.
PAST_SWITCH: frozenset[str] = frozenset({"switching", "restarting", "health_check",
                                         "committing", "rolling_back"})
# restarting: updaterd itself was switched and hands over to the new version, which finishes
Outcome = Literal["installed", "up_to_date", "rolled_back", "failed", "deferred", "restarting",
                  "cancelled", "checked"]
# What an update call returns; a failure or a cancel is an error reply, never a result.
UpdateOutcome = Literal["installed", "up_to_date", "rolled_back", "deferred", "restarting"]


def clock(seconds: float) -> str:
    """`45s`, `16m31s`, `2h05m`: a duration as people read it (updaterctl and the daemon's
    messages say durations the same way)."""
    s = max(int(seconds), 0)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def human_size(n: float) -> str:
    """`512 B`, `20.0 MiB`, `3.2 GiB`: a size as people read it (both sides say sizes so)."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def describe_update(app: str, from_version: str | None, to_version: str | None,
                    result: UpdateOutcome, reason: str) -> str:
    """One line for a person: what an update did (`app` "" in an event, which names the app
    already); updaterd logs it and updaterctl prints it."""
    name = f"{app}: " if app else ""
    if result == "installed":
        how = f" {reason}" if reason else ""  # as a delta, and what it saved
        return f"{name}installed {to_version} (was {from_version or 'nothing'}){how}"
    if result == "up_to_date":
        return f"{name}up to date at {from_version or 'nothing'}"
    if result == "deferred":
        return f"{name}{to_version} is downloaded and {reason}"
    if result == "restarting":
        return f"{name}{to_version} is in place; {reason}"
    return f"{name}{to_version} was rolled back to {from_version or 'nothing'}: {reason}"


def describe_rollback(app: str, from_version: str | None, to_version: str | None,
                      forward: bool, with_data: bool = False) -> str:
    """One line for a person (`app` "" in an event, which names the app already)."""
    who = app + ": " if app else ""
    if with_data and from_version == to_version:  # a recall had moved the code back already
        return f"{who}put back the data {to_version} left (what it replaced is kept)"
    how = "went forward" if forward else "rolled back"
    data = f" with the data {to_version} left (the data of {from_version} is kept as its " \
        "snapshot)" if with_data else ""
    return f"{who}{how} from {from_version} to {to_version}{data}"
