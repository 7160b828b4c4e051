"""`source = "manifest"`: a signed feed on any static web host, fetched conditionally."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import BinaryIO
from urllib.parse import urljoin, urlsplit

from updaterd.errors import FeedError
from updaterd.host.config import AppConfig, origins
from updaterd.net.cachefile import Expected, ProgressFn
from updaterd.net.document import Document, Validators
from updaterd.net.fetcher import Fetcher
from updaterd.trust.feed import MANIFEST, SIGNATURE, TrustedFeed

# asked of every cache on the way: revalidate with the origin before answering (no-cache),
# and the same for HTTP/1.0 caches (Pragma)
FRESH = {"Cache-Control": "no-cache", "Pragma": "no-cache"}


class HttpTransport:
    """A feed at `url` (the app's `url` or one of its `mirrors`), its signature at
    `url + ".minisig"`, every other file relative to it."""

    remote = True

    def __init__(self, cfg: AppConfig, fetcher: Fetcher, fresh: bool = False,
                 url: str | None = None) -> None:
        self.url = url or cfg.url or ""
        self.origin: str | None = self.url
        self.fetcher, self.fresh = fetcher, fresh
        # every origin's host, whichever is asked: a redirect from one mirror to another
        # is no surprise, and the hosts the manifest names are added to the same set
        origin_hosts = {urlsplit(u).hostname or "" for u in origins(cfg)}
        fetcher.allowed_hosts = {*origin_hosts, *(cfg.allowed_hosts or []),
                                 *(fetcher.allowed_hosts or ())}
        self.named_hosts = cfg.allowed_hosts is None  # the signed manifest adds its hosts

    @property
    def base(self) -> str:
        """The feed's address: `url`, or where the server moved it for good (this run)."""
        return self.fetcher.moved.get(self.url, self.url)

    def _url(self, name: str) -> str:
        if name == MANIFEST:
            return self.url
        if name == SIGNATURE:
            return self.base + ".minisig"
        return urljoin(self.base, name)

    async def document(self, name: str, cap: int, *, missing_ok: bool = False,
                       validators: Validators | None = None, fresh: bool = False) -> Document:
        etag, last_modified = validators or (None, None)
        return await self.fetcher.fetch_small(self._url(name), max_bytes=cap, etag=etag,
                                              last_modified=last_modified, missing_ok=missing_ok,
                                              headers=FRESH if fresh or self.fresh else None)

    def admit_named_hosts(self, trusted: TrustedFeed) -> None:
        """Without `allowed_hosts`, artifacts may come from the hosts the signed manifest
        names, and from no other (redirects included)."""
        if self.named_hosts and self.fetcher.allowed_hosts is not None:
            for release in trusted.manifest.releases:
                for artifact in release.artifacts:
                    host = urlsplit(urljoin(self.base, artifact.url)).hostname
                    if host:
                        self.fetcher.allowed_hosts.add(host)

    def describe(self, name: str) -> str:
        return urljoin(self.base, name)

    async def file(self, name: str, dest: Path, expected: Expected,
                   progress: ProgressFn | None) -> BinaryIO:
        return await self.fetcher.fetch_file(self._artifact_url(name), dest, expected,
                                             progress)

    async def stream(self, name: str, expected: Expected,
                     consume: Callable[[bytes], Awaitable[None]],
                     progress: ProgressFn | None) -> None:
        await self.fetcher.stream(self._artifact_url(name), expected, consume, progress)

    def _artifact_url(self, name: str) -> str:
        url = urljoin(self.base, name)
        if not url.startswith(("https://", "http://")):
            raise FeedError(f"artifact URL {url!r} is not http(s)")
        return url
