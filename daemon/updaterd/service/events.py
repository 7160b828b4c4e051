"""Fan-out of engine events to subscribers: bounded buffers, a slow subscriber loses events
(and is told how many) instead of slowing the engine down."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

import trio

from updaterctl.protocol import Event


class Subscriber:
    """One subscription: a bounded queue of events for some (or all) apps."""

    def __init__(self, apps: frozenset[str] | None, buffer: int) -> None:
        self.apps = apps
        self._send, self._receive = trio.open_memory_channel[Event](buffer)
        self.dropped = 0

    def offer(self, event: Event) -> None:
        if self.apps is not None and event.app not in self.apps:
            return
        try:
            self._send.send_nowait(event)
        except trio.WouldBlock:
            self.dropped += 1

    async def next(self) -> Event:
        """The next event; a notice first when events were dropped since the last one."""
        if self.dropped:
            n, self.dropped = self.dropped, 0
            return Event(app="*", kind="notice", at=time.time(),
                         message=f"{n} events dropped: this subscriber reads too slowly")
        return await self._receive.receive()


class EventBus:
    """Publishes every event to every current subscriber, never blocking."""

    def __init__(self, buffer: int = 256) -> None:
        self.buffer = buffer
        self._subscribers: set[Subscriber] = set()

    def publish(self, event: Event) -> None:
        for sub in list(self._subscribers):
            sub.offer(event)

    @contextmanager
    def subscribe(self, apps: frozenset[str] | None = None) -> Iterator[Subscriber]:
        sub = Subscriber(apps, self.buffer)
        self._subscribers.add(sub)
        try:
            yield sub
        finally:
            self._subscribers.discard(sub)

    def __len__(self) -> int:
        return len(self._subscribers)
