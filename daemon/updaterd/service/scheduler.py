"""When each app is checked: every `check_interval` plus a random `jitter`, counted from the
`last_check` stored in its state (a restart does not re-check early); failures back off
exponentially, capped at the interval. Time comes from trio's clock, so tests use MockClock."""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from typing import Protocol

import trio

from updaterd.errors import UpdaterError
from updaterd.host.config import AppConfig
from updaterd.host.state import AppState
from updaterd.units import parse_duration

log = logging.getLogger("updaterd.scheduler")
FIRST_RETRY = 60.0  # seconds after the first failure; doubles with each further one


def next_delay(cfg: AppConfig, state: AppState, now: float, rng: random.Random) -> float:
    """Seconds from `now` (wall time) until the next check of this app (pure)."""
    interval = parse_duration(cfg.check_interval)
    jitter = rng.uniform(0, parse_duration(cfg.jitter))
    if state.last_check is None:
        return jitter
    wait = interval
    if state.consecutive_failures:
        wait = min(FIRST_RETRY * 2 ** (state.consecutive_failures - 1), interval)
    delay = max(state.last_check + wait - now, 0.0)
    if state.rate_limited_until is not None:
        delay = max(delay, state.rate_limited_until - now)
    return delay + jitter


class Cycle(Protocol):
    """What the scheduler drives; the daemon's AppWorker implements it."""

    name: str

    def config(self) -> AppConfig: ...

    def state(self) -> AppState: ...

    async def run_cycle(self) -> float | None:
        """One check (and update); may return seconds after which it wants to run again."""
        ...


class Schedule:
    """The timer loop of one app; `poke()` makes it recompute (reload, resume, pause)."""

    def __init__(self, target: Cycle, *, rng: random.Random | None = None,
                 wall: Callable[[], float] = time.time) -> None:
        self.target = target
        self.rng = rng or random.Random()
        self.wall = wall
        self.next_check: float | None = None
        self.wake_in: float | None = None  # the last cycle asked to run again this soon
        self._poked = trio.Event()

    def poke(self) -> None:
        self._poked.set()

    async def run(self) -> None:
        while True:
            state = self.target.state()
            if state.paused:
                self.next_check = None
                await self._wait(None)
                continue
            delay = next_delay(self.target.config(), state, self.wall(), self.rng)
            if self.wake_in is not None:
                delay = min(delay, self.wake_in)
            self.next_check = self.wall() + delay
            if await self._wait(delay):
                continue
            self.wake_in = None
            try:
                self.wake_in = await self.target.run_cycle()
            except UpdaterError as e:  # the operation has logged and recorded it
                log.debug("%s: %s", self.target.name, e)
            except Exception:
                # One app's unexpected failure (an I/O error, a bug) must not stop the daemon
                # or the other apps; the next cycle tries again.
                log.exception("%s: unexpected error; trying again at the next check",
                              self.target.name)

    async def _wait(self, delay: float | None) -> bool:
        """Sleep `delay` seconds (forever when None); True when poked instead."""
        with trio.move_on_after(delay if delay is not None else float("inf")):
            await self._poked.wait()
            self._poked = trio.Event()
            return True
        return False
