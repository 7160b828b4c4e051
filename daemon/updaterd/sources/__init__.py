"""Release sources: each fetches a feed, proves it trusted, and fetches its artifacts.

`make_source` picks the module for an app's `source` key. Every source returns a
`feed.TrustedFeed` (or raises FeedError) and downloads into a verified, open file.
"""

from __future__ import annotations

from pathlib import Path
from typing import BinaryIO, Protocol
from urllib.parse import unquote, urlsplit

from updaterd.config import AppConfig, Limits
from updaterd.feed import Artifact, TrustedFeed
from updaterd.fetcher import Expected, Fetcher, ProgressFn
from updaterd.state import AppState


class Source(Protocol):
    """What the engine needs from any source."""

    async def fetch(self, state: AppState, cache: Path, cycle_start_ts: float) -> TrustedFeed:
        """The feed, verified; a 304 re-verifies the cached copy."""
        ...

    def describe(self, artifact: Artifact) -> str:
        """Where an artifact comes from, for messages."""
        ...

    async def fetch_artifact(self, artifact: Artifact, dest: Path, expected: Expected,
                       progress: ProgressFn | None) -> BinaryIO:
        """The artifact at `dest`, verified, open for reading."""
        ...


def make_source(app: str, cfg: AppConfig, limits: Limits, fetcher: Fetcher,
                state_folder: Path) -> Source:
    from updaterd.sources.local import LocalSource
    from updaterd.sources.manifest import ManifestSource

    if cfg.source == "directory":
        assert cfg.path is not None
        return LocalSource(app, cfg, limits, Path(cfg.path), state_folder)
    if cfg.source == "manifest":
        assert cfg.url is not None
        if urlsplit(cfg.url).scheme == "file":
            folder = Path(unquote(urlsplit(cfg.url).path)).parent
            return LocalSource(app, cfg, limits, folder, state_folder)
        return ManifestSource(app, cfg, limits, fetcher, state_folder)
    from updaterd.sources.github import GitHubSource

    return GitHubSource(app, cfg, limits, fetcher, state_folder)
