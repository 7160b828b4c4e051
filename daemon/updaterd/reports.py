"""What the engine reports, in its own types: the events of an operation, and what check,
update and rollback did. The control socket turns them into the wire format
(`service/answers.py`); nothing below the service knows the wire. The words (phases,
outcomes, the sentences for people) are the ones updaterctl uses: `updaterctl.vocabulary`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from updaterctl.vocabulary import Outcome, Phase, UpdateOutcome, describe_rollback, describe_update

EventKind = Literal["phase", "progress", "result", "error", "notice"]


@dataclass(frozen=True, kw_only=True)
class Event:
    """One thing that happened to an app: a phase change, progress, a result, or a notice."""

    app: str
    kind: EventKind
    phase: Phase = "idle"
    message: str = ""
    version: str | None = None
    done: int | None = None
    total: int | None = None
    at: float = 0.0
    # result and error events: how the operation ended, and (on failure) at which step
    outcome: Outcome | None = None
    step: str | None = None
    # progress: the full artifact or a delta; a notice with "full": a delta was given up
    plan: Literal["full", "delta"] | None = None
    # a notice with plan "full": why, in one word (FALLBACK_REASONS), for the metric
    reason: str | None = None


# Why a delta the feed offered was not used: no pack from a release kept here, the kept release
# is not as the pack expects, the pack costs too much, it needs a shared path's old content (or
# one is not seeded yet), or fetching or building it failed.
FALLBACK_REASONS = ("no-base", "mismatch", "costly", "shared", "failed")


@dataclass(frozen=True, kw_only=True)
class Checked:
    """What a check found: what runs, what an automatic update would install, and why the
    newer versions it passed over were passed over."""

    current: str | None
    available: str | None
    checked_at: float
    passed_over: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class Updated:
    """What an update did; a failure or a cancel is an exception, never this."""

    from_version: str | None
    to_version: str | None
    result: UpdateOutcome
    reason: str = ""

    def describe(self, app: str) -> str:
        return describe_update(app, self.from_version, self.to_version, self.result,
                               self.reason)


@dataclass(frozen=True, kw_only=True)
class RolledBack:
    """What a rollback did (`forward`: to a kept version newer than the one left)."""

    from_version: str | None
    to_version: str | None
    forward: bool = False
    with_data: bool = False

    def describe(self, app: str) -> str:
        return describe_rollback(app, self.from_version, self.to_version, self.forward,
                                 self.with_data)
