"""Download rate caps (`max_rate` of an app and of the daemon), shared by every download that
must stay under them."""

from __future__ import annotations

import trio


class TokenBucket:
    """A smooth download rate cap: bytes may go into debt, and each consumer sleeps the debt off.

    Shared by every download that must stay under one cap (one per app, one for the daemon).
    The bucket starts empty and holds at most 50 ms worth of bytes, so there is no burst.
    """

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.capacity = rate * 0.05
        self.tokens = 0.0
        self.last: float | None = None

    async def consume(self, n: int) -> None:
        now = trio.current_time()
        if self.last is not None:
            self.tokens = min(self.capacity, self.tokens + (now - self.last) * self.rate)
        self.last = now
        self.tokens -= n
        if self.tokens < 0:
            await trio.sleep(-self.tokens / self.rate)
