"""`source = "manifest"`: a signed feed on any static web host, fetched conditionally."""

from __future__ import annotations

from pathlib import Path
from typing import BinaryIO
from urllib.parse import urljoin, urlsplit

import msgspec

from updaterd import keys, minisign
from updaterd.cachefile import Expected, ProgressFn
from updaterd.config import AppConfig, Limits
from updaterd.errors import FeedError
from updaterd.feed import Artifact, TrustedFeed
from updaterd.fetcher import Fetcher
from updaterd.sources import trust
from updaterd.state import AppState
from updaterd.units import parse_size


class ManifestSource:
    """A feed at `url`, its signature at `url + ".minisig"`, artifacts relative to it."""

    def __init__(self, app: str, cfg: AppConfig, limits: Limits, fetcher: Fetcher,
                 state_folder: Path) -> None:
        assert cfg.url is not None
        self.app, self.cfg, self.limits, self.fetcher = app, cfg, limits, fetcher
        self.url = cfg.url
        self.state_folder = state_folder
        feed_host = urlsplit(cfg.url).hostname or ""
        fetcher.allowed_hosts = {feed_host, *(cfg.allowed_hosts or [])}
        self.named_hosts = cfg.allowed_hosts is None  # the signed manifest adds its hosts

    async def _optional(self, name: str) -> tuple[bytes, bytes | None] | None:
        """A document beside the manifest (keys.json) and its signature, or None."""
        url = urljoin(self.url, name)
        doc = await self.fetcher.fetch_small(url, max_bytes=keys.MAX_KEYS_SIZE, missing_ok=True)
        if doc.missing:
            return None
        sig = await self.fetcher.fetch_small(url + ".minisig",
                                             max_bytes=minisign.MAX_SIGNATURE_FILE,
                                             missing_ok=True)
        return doc.body, None if sig.missing else sig.body

    async def fetch(self, state: AppState, cache: Path, cycle_start_ts: float) -> TrustedFeed:
        cap = parse_size(self.limits.max_manifest_size)
        cached = trust.load_copy(self.state_folder)
        use_validators = cached is not None and state.serial is not None
        doc = await self.fetcher.fetch_small(
            self.url, max_bytes=cap,
            etag=state.etag if use_validators else None,
            last_modified=state.last_modified if use_validators else None)
        if doc.not_modified:
            assert cached is not None
            raw, sig = cached
            return self._allow_named_hosts(
                trust.verify_feed(self.app, self.cfg, state, raw, sig, cycle_start_ts, True))
        # New manifest bytes: follow the feed's key rotations first (a 304 costs nothing more).
        await keys.refresh(self.app, self.cfg, state, self._optional)
        sig = None
        if self.cfg.public_keys and self.cfg.verify == "required":
            sig_doc = await self.fetcher.fetch_small(self.url + ".minisig",
                                                     max_bytes=minisign.MAX_SIGNATURE_FILE)
            sig = sig_doc.body
        trusted = trust.verify_feed(self.app, self.cfg, state, doc.body, sig, cycle_start_ts, True)
        trust.keep_copy(self.state_folder, doc.body, sig)
        return self._allow_named_hosts(msgspec.structs.replace(
            trusted, validators=(doc.etag, doc.last_modified)))

    def _allow_named_hosts(self, trusted: TrustedFeed) -> TrustedFeed:
        """Without `allowed_hosts`, artifacts may come from the hosts the signed manifest
        names, and from no other (redirects included)."""
        if self.named_hosts and self.fetcher.allowed_hosts is not None:
            for release in trusted.manifest.releases:
                for artifact in release.artifacts:
                    host = urlsplit(urljoin(self.url, artifact.url)).hostname
                    if host:
                        self.fetcher.allowed_hosts.add(host)
        return trusted

    def describe(self, artifact: Artifact) -> str:
        return urljoin(self.url, artifact.url)

    async def fetch_artifact(self, artifact: Artifact, dest: Path, expected: Expected,
                       progress: ProgressFn | None) -> BinaryIO:
        url = urljoin(self.url, artifact.url)
        if not url.startswith(("https://", "http://")):
            raise FeedError(f"artifact URL {url!r} is not http(s)")
        return await self.fetcher.fetch_file(url, dest, expected, progress)
