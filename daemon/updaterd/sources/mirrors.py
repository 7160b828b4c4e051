"""A signed feed served by several origins (`url`, then `mirrors`): the engine's `Source` over
one `FeedSource` per origin.

A refresh is taken whole from one origin (manifest, key rotations, signature, rollout.json),
so that a mirror's files are never paired with another's; an origin that cannot be reached,
or whose feed the trusted set refuses (an older serial, an expired or badly signed manifest),
is passed over with a log line for the next. Every origin's answer meets the same keys, the
same serial and rollout marks and the same expiry, so a mirror can withhold, never harm.
Each origin's feed is asked once, the last one's with the `[limits] retries` (the next origin
is the retry). Artifacts come first from the origin whose manifest was taken, then from the
others, each with its retries (a broken download resumes where it is); every byte is verified
against the signed digests, wherever it came from.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from updaterctl.vocabulary import clock
from updaterd.errors import DownloadError, FeedError, RateLimited, UpdaterError
from updaterd.host.config import AppConfig, Limits, origins
from updaterd.host.state import AppState
from updaterd.net.cachefile import Expected, ProgressFn
from updaterd.net.fetcher import Fetcher
from updaterd.sources import watch
from updaterd.sources.manifest import HttpTransport
from updaterd.sources.origins import Origins
from updaterd.sources.refresh import FeedSource
from updaterd.trust.feed import Artifact, TrustedFeed
from updaterd.trust.trustedset import TrustedSet

log = logging.getLogger("updaterd.mirrors")


class MirroredSource:
    """The engine's `Source` for a manifest feed with mirrors."""

    def __init__(self, app: str, cfg: AppConfig, limits: Limits, fetcher: Fetcher,
                 state_folder: Path, book: Origins, *, fresh: bool,
                 now: Callable[[], float] = time.time) -> None:
        self.app, self.book, self.now, self.fetcher = app, book, now, fetcher
        self.feeds: dict[str, FeedSource] = {}
        for url in origins(cfg):
            http = HttpTransport(cfg, fetcher, fresh, url)
            self.feeds[url] = FeedSource(app, cfg, limits, http, state_folder,
                                         http.admit_named_hosts)
        self.primary = next(iter(self.feeds))
        self.served: str | None = None  # the origin whose manifest this operation took
        self.refused: set[str] = set()  # origins whose streamed bytes did not verify

    async def look(self, state: AppState, limits: Limits, seen: watch.Seen) -> str | None:
        """A look between checks (`watch.changed`): asked of the origin whose validators are
        kept, conditionally; when it fails, of the others, whole (their documents compared by
        digest): one origin down must not keep a recall from a host for hours."""
        first = state.feed_origin if state.feed_origin in self.feeds else self.primary
        order = self._from(first)
        failed: UpdaterError | None = None
        for url in order:
            try:
                with self._retried_if_last(url, order):
                    return await watch.changed(self.feeds[url].transport, state, limits, seen,
                                               conditional=url == first)
            except UpdaterError as e:
                log.debug("%s: a look at %s failed: %s", self.app, url, e)
                failed = failed or e
        assert failed is not None
        raise failed

    async def fetch(self, state: AppState, trust: TrustedSet) -> TrustedFeed:
        failures: list[tuple[str, UpdaterError]] = []
        order = self.book.order(self.app, list(self.feeds), self.now())
        for url in order:  # a manifest refused is not taken: the set takes the next one's
            try:
                with self._retried_if_last(url, order):
                    feed = await self.feeds[url].fetch(state, trust)
            except (FeedError, DownloadError) as e:
                self._passed_over(url, e, "feed")
                failures.append((url, e))
                continue
            self.book.served(self.app, url)
            if self.served != url and (failures or url != self.primary):
                log.info("%s: the feed is taken from %s", self.app, url)
            self.served = url
            return feed
        raise every_origin_failed(failures)

    def _from(self, first: str) -> list[str]:
        """Every origin: `first`, then the others in the book's order."""
        return [first, *(u for u in self.book.order(self.app, list(self.feeds), self.now())
                         if u != first)]

    @contextmanager
    def _retried_if_last(self, url: str, order: list[str]) -> Iterator[None]:
        """The next origin is the retry: only the last is asked with the [limits] retries."""
        self.fetcher.retries = self.fetcher.limits.retries if url == order[-1] else 0
        try:
            yield
        finally:
            self.fetcher.retries = self.fetcher.limits.retries

    def _passed_over(self, url: str, e: UpdaterError, what: str) -> None:
        refused = isinstance(e, FeedError)
        backoff = self.book.failed(self.app, url, self.now(), refused=refused,
                                   not_before=e.until if isinstance(e, RateLimited) else None)
        how = "answered with a feed this host refuses" if refused else "failed"
        log.warning("%s: origin %s %s (%s): %s; passed over for the next, and asked after "
                    "the others for %s", self.app, url, how, what, e, clock(backoff))

    def describe(self, artifact: Artifact) -> str:
        return self.feeds[self.served or self.primary].describe(artifact)

    async def fetch_artifact(self, artifact: Artifact, dest: Path, expected: Expected,
                             progress: ProgressFn | None) -> BinaryIO:
        order = self._from(self.served or self.primary)
        order = [u for u in order if u not in self.refused] + \
            [u for u in order if u in self.refused]  # asked again only when all else fails
        failures: list[tuple[str, UpdaterError]] = []
        asked: set[str] = set()
        for url in order:
            where = self.feeds[url].describe(artifact)
            if where in asked:  # an absolute URL in the manifest: the same for every origin
                continue
            asked.add(where)
            try:
                got = await self.feeds[url].fetch_artifact(artifact, dest, expected, progress)
            except DownloadError as e:
                self._passed_over(url, e, artifact.url)
                failures.append((url, e))
                continue
            self.book.served(self.app, url)
            return got
        raise every_origin_failed(failures)

    def streams(self, artifact: Artifact) -> bool:
        return True

    async def stream_artifact(self, artifact: Artifact, expected: Expected,
                              consume: Callable[[bytes], Awaitable[None]],
                              progress: ProgressFn | None) -> None:
        """From the origin whose manifest was taken only: a stream cannot move to another
        origin half-way, and a stopped one goes through the cache, which tries them all."""
        url = self.served or self.primary
        try:
            await self.feeds[url].stream_artifact(artifact, expected, consume, progress)
        except DownloadError as e:
            self._passed_over(url, e, artifact.url)
            raise
        self.book.served(self.app, url)

    def stream_refused(self, artifact: Artifact) -> bool:
        url = self.served or self.primary
        self.refused.add(url)
        self.book.failed(self.app, url, self.now())
        return True  # a feed with mirrors has another origin to ask


def every_origin_failed(failures: list[tuple[str, UpdaterError]]) -> UpdaterError:
    """One error for a refresh or a download no origin could answer: the only one's as it
    was; else each origin's reason, as a FeedError when one refused its feed (the feed's
    fault, not the network's), a RateLimited when every origin asked to wait."""
    if len(failures) == 1:
        return failures[0][1]
    text = "no origin answered: " + "; ".join(f"{url}: {e}" for url, e in failures)
    errors = [e for _url, e in failures]
    if all(isinstance(e, RateLimited) for e in errors):
        return RateLimited(text, min(e.until for e in errors if isinstance(e, RateLimited)))
    if any(isinstance(e, FeedError) for e in errors):
        return FeedError(text)
    return DownloadError(text)
