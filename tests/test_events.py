"""The event bus: a slow subscriber loses events (and is told) instead of blocking the engine."""

from __future__ import annotations

import trio

from updaterctl.protocol import Event
from updaterd.service.events import EventBus


def test_slow_subscriber_never_blocks_and_gets_a_notice() -> None:
    async def main() -> None:
        bus = EventBus(buffer=4)
        with bus.subscribe() as slow, bus.subscribe(frozenset({"b"})) as only_b:
            for i in range(10):
                bus.publish(Event(app="a", kind="progress", done=i, total=10))  # never blocks
            bus.publish(Event(app="b", kind="phase", phase="checking"))
            first = await slow.next()
            assert first.kind == "notice" and "7 events dropped" in first.message
            assert [(await slow.next()).done for _ in range(4)] == [0, 1, 2, 3]
            assert (await only_b.next()).app == "b"
        assert len(bus) == 0

    trio.run(main)
