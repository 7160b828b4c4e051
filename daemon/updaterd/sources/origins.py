"""How each origin of a mirrored feed (`url`, then `mirrors`) has answered during this run:
which to ask first, and what the metrics tell of each. No I/O and no clock of its own.

An origin that failed (not reached, an HTTP error) or whose answer the trusted set refused
(stale, replayed, expired, badly signed) is asked after the others for a back-off that
doubles with each failure in a row (1 minute to 1 hour); it is never skipped outright, so a
host with every origin backing off still asks them all before it gives up.
"""

from __future__ import annotations

from dataclasses import dataclass

BACKOFF_FIRST = 60.0
BACKOFF_MAX = 3600.0


@dataclass
class Health:
    """One origin of one app, since the daemon started."""

    served: int = 0  # refreshes and downloads whose answer was used
    failed: int = 0  # no usable answer: not reached, an HTTP error, bytes that did not verify
    refused: int = 0  # a feed the trusted set refused: stale, replayed, expired, signature
    in_a_row: int = 0  # failures and refusals since its last answer used
    until: float = 0.0  # asked after the others before this moment (epoch seconds)


class Origins:
    """The health of every origin, by app and URL (shared by every operation of a run)."""

    def __init__(self) -> None:
        self._health: dict[tuple[str, str], Health] = {}

    def of(self, app: str, url: str) -> Health:
        return self._health.setdefault((app, url), Health())

    def order(self, app: str, urls: list[str], now: float) -> list[str]:
        """`urls` in the order to ask them: those not backing off as configured, then those
        backing off, the one whose back-off ends first first."""
        ready = [u for u in urls if self.of(app, u).until <= now]
        waiting = sorted((u for u in urls if self.of(app, u).until > now),
                         key=lambda u: self.of(app, u).until)
        return ready + waiting

    def served(self, app: str, url: str) -> None:
        health = self.of(app, url)
        health.served += 1
        health.in_a_row, health.until = 0, 0.0

    def failed(self, app: str, url: str, now: float, *, refused: bool = False,
               not_before: float | None = None) -> float:
        """Count a failure (`refused`: the answer came and was refused) and return the
        back-off it starts: doubled for each failure in a row, at least until `not_before`
        (a server's Retry-After)."""
        health = self.of(app, url)
        if refused:
            health.refused += 1
        else:
            health.failed += 1
        health.in_a_row += 1
        backoff = min(BACKOFF_FIRST * 2.0 ** (health.in_a_row - 1), BACKOFF_MAX)
        if not_before is not None:
            backoff = max(backoff, not_before - now)
        health.until = now + backoff
        return backoff
