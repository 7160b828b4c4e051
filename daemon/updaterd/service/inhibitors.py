"""Inhibitors: local programs asking that an app not be switched or restarted for a while
(`updaterctl inhibit`, or the `inhibit` method), held for as long as their connection is open."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import trio


@dataclass
class Hold:
    """One inhibitor: a local program asking that the app not be switched or restarted."""

    who: str
    why: str
    uid: int
    pid: int
    since: float = field(default_factory=time.time)


class Inhibitors:
    """Holds per app, for as long as the holders' connections stay open."""

    def __init__(self) -> None:
        self.held: dict[str, list[Hold]] = {}
        self._changed = trio.Event()

    @contextlib.contextmanager
    def hold(self, app: str, who: str, why: str, uid: int, pid: int) -> Iterator[Hold]:
        h = Hold(who, why, uid, pid)
        self.held.setdefault(app, []).append(h)
        try:
            yield h
        finally:
            self.held[app].remove(h)
            self._changed.set()
            self._changed = trio.Event()

    async def released(self) -> None:
        await self._changed.wait()
