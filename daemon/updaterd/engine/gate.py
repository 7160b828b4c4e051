"""What may hold a switch back, as the one gate every switch asks.

`WindowGate` is an app's maintenance window: the scheduler asks it (download now, come back when
it opens). A `SwitchGate` is what one update hands the engine: the daemon's waits (the window,
unless `updaterctl update --now` takes the waiting update over, then the inhibitors), or, for
`updaterd --once` with no daemon to wait in, a gate that defers the switch instead of waiting.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Protocol

import trio

from updaterd import window
from updaterd.errors import PolicyError


class WindowGate:
    """Whether `app` may be switched now, and how long until it may."""

    def __init__(self, app: str, spec: str | None, clock: Callable[[], float] = time.time,
                 to_local: Callable[[float], datetime] = window.local_time) -> None:
        self.app, self.spec = app, spec
        self.spans = window.parse(spec) if spec is not None else None
        self.clock, self.to_local = clock, to_local

    def wait(self) -> float:
        """Seconds until the window opens: 0 when it is open, or when the app has none."""
        if self.spans is None:
            return 0.0
        now = self.clock()
        opens = window.next_open(self.spans, now, self.to_local)
        if opens is None:
            raise PolicyError(f"{self.app}: window {self.spec!r} never opens")
        return max(opens - now, 0.0)

    def opens_in(self) -> str:
        """`opens in 3h12m`, for people."""
        return f"opens in {window.describe_wait(self.wait())}"

    async def passage(self, waiting: Callable[[str], None], take_over: trio.Event) -> None:
        """Return once the window is open, or at once when `take_over` is set (an operator's
        `update --now`). `waiting` is told each minute what is awaited; the window is looked at
        again each minute, so a reload or a clock change is seen."""
        while not take_over.is_set() and (wait := self.wait()) > 0:
            waiting(f"waiting for window ({self.opens_in()})")
            with trio.move_on_after(min(wait, 60)):
                await take_over.wait()


class SwitchGate(Protocol):
    """What the engine asks of one update before it switches."""

    def defers(self) -> str | None:
        """Why the switch is put off now, before anything is downloaded (the update then only
        downloads); None: go on, and pass the gate before the switch."""
        ...

    async def passage(self) -> None:
        """Return when the switch may happen."""
        ...


class DeferringGate:
    """`updaterd --once` and the offline verbs: no daemon to wait in, so outside the window the
    update downloads and defers."""

    def __init__(self, window_gate: WindowGate) -> None:
        self.window = window_gate

    def defers(self) -> str | None:
        if self.window.wait() <= 0:
            return None
        return f"waiting for window ({self.window.opens_in()})"

    async def passage(self) -> None:
        return None


class WaitingGate:
    """The daemon's gate: before the switch, wait for the window (unless `ignore_window`, or
    until `take_over` is set), then while inhibitors are held."""

    def __init__(self, window_gate: WindowGate, *, ignore_window: bool, take_over: trio.Event,
                 waiting: Callable[[str], None],
                 inhibitors: Callable[[], Awaitable[None]]) -> None:
        self.window, self.ignore_window = window_gate, ignore_window
        self.take_over, self.waiting, self.inhibitors = take_over, waiting, inhibitors

    def defers(self) -> str | None:
        return None

    async def passage(self) -> None:
        if not self.ignore_window:
            await self.window.passage(self.waiting, self.take_over)
        await self.inhibitors()
