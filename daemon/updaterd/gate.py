"""An app's maintenance window as one gate, asked by everything that may switch or restart it:
the scheduler (download now, come back when it opens), the daemon before a switch (wait, unless
`updaterctl update --now` takes the waiting update over), and `updaterd --once` (defer)."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime

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
