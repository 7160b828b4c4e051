"""What one operation on one app carries (`AppRun`), and the two things plugged into it: what the
daemon adds (`Hooks`: inhibitors, the download limit, its stop) and how a switched version
comes to run (`Lifecycle`, implemented in `lifecycle.py`). Apart from the transaction, so that
the transaction, the lifecycles and the operation all import it and none of them each other.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import trio

from updaterctl.vocabulary import Phase
from updaterd import logtext
from updaterd.host import outcome, state
from updaterd.host.config import AppConfig, Config
from updaterd.host.state import AppState
from updaterd.install.layout import InstallLayout
from updaterd.reports import Event

Emit = Callable[[Event], None]


class Lifecycle(Protocol):
    """The steps of a transaction that differ between an app and updaterd itself."""

    def running(self) -> str | None:
        """The version whose code runs this process (updaterd itself); None for an app."""
        ...

    async def start(self, run: AppRun, from_version: str | None, version: str,
                    env: dict[str, str], timeout: float) -> bool:
        """After the switch: make `version` run. False when it was handed over: the new
        code finishes the transaction."""
        ...

    async def restart_back(self, run: AppRun, to_version: str, env: dict[str, str],
                           timeout: float) -> None:
        """After switching back to `to_version`. A failure is logged; the rollback stands."""
        ...

    def committed(self, run: AppRun) -> None:
        """The new version passed its checks and the state says so."""
        ...

    def rolled_back(self, run: AppRun, to_version: str | None) -> None:
        """The state says `to_version` again."""
        ...

    def gave_up(self) -> dict[str, str]:
        """The version given up on since the last start without this process knowing
        (updaterd's launcher went back), and why; said once."""
        ...



def _never() -> bool:
    return False


async def _no_wait() -> None:
    return None


@dataclass
class Hooks:
    """What the daemon plugs into a transaction: inhibitors and the download limit."""

    before_switch: Callable[[], Awaitable[None]] = _no_wait
    download_limiter: trio.CapacityLimiter | None = None
    # the daemon was told to stop: a check killed by a signal now went down with it (H157)
    stopping: Callable[[], bool] = _never


@dataclass
class AppRun:
    """One app's configuration, paths and loaded state for the length of an operation."""

    name: str
    cfg: AppConfig
    config: Config
    layout: InstallLayout
    state_folder: Path
    cache: Path
    state: AppState
    emit: Emit
    lifecycle: Lifecycle
    hooks: Hooks = field(default_factory=Hooks)
    step: Phase = "idle"  # the last working phase reached, for failure reports
    plan: str = ""  # how the new release was fetched, when not as its full artifact

    def save(self) -> None:
        state.save(self.state_folder.parent, self.name, self.state)

    def phase(self, phase: Phase, message: str = "", version: str | None = None) -> None:
        if phase not in ("idle", "failed"):
            self.step = phase
        self.emit(Event(app=self.name, kind="phase", phase=phase,
                        message=logtext.clean(message), version=version, at=time.time()))

    def remember(self, action: str, version: str, from_version: str | None = None,
                 reason: str = "") -> None:
        outcome.remember(self.state, action, version, from_version, reason,
                         self.config.limits.history_length)
