"""Release sources: each fetches a feed, proves it trusted, and fetches its artifacts.

`make_source` picks one for an app's `source` key: a signed feed (on the web or in a folder)
is a `refresh.FeedSource` over that place's transport; GitHub Releases is an adapter that
makes a manifest of the API's answer. Every source returns a `feed.TrustedFeed` (or raises
FeedError) and downloads into a verified, open file.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Protocol
from urllib.parse import unquote, urlsplit

from updaterd.host.config import AppConfig, Limits
from updaterd.host.state import AppState
from updaterd.net.cachefile import Expected, ProgressFn
from updaterd.sources.origins import Origins
from updaterd.trust.feed import Artifact, TrustedFeed
from updaterd.trust.trustedset import TrustedSet

Consume = Callable[[bytes], Awaitable[None]]

if TYPE_CHECKING:  # the HTTP client is loaded only for an app whose feed is on the network
    from updaterd.net.fetcher import Fetcher


class Source(Protocol):
    """What the engine needs from any source."""

    async def fetch(self, state: AppState, trust: TrustedSet) -> TrustedFeed:
        """The feed, verified by `trust` (a signed feed's; GitHub's has its own checks); a
        304 re-verifies the cached copy."""
        ...

    def describe(self, artifact: Artifact) -> str:
        """Where an artifact comes from, for messages."""
        ...

    async def fetch_artifact(self, artifact: Artifact, dest: Path, expected: Expected,
                       progress: ProgressFn | None) -> BinaryIO:
        """The artifact at `dest`, verified, open for reading."""
        ...

    def streams(self, artifact: Artifact) -> bool:
        """Whether `stream_artifact` can hand over this artifact as it downloads."""
        ...

    async def stream_artifact(self, artifact: Artifact, expected: Expected,
                              consume: Consume, progress: ProgressFn | None) -> None:
        """Each byte of the artifact to `consume`, in order, as it arrives; verifying them is
        the consumer's (engine/streaming.py)."""
        ...

    def stream_refused(self, artifact: Artifact) -> bool:
        """The bytes `stream_artifact` handed over did not verify: whether another origin
        may have good ones (then `fetch_artifact` asks the others first)."""
        ...


def local_folder(cfg: AppConfig) -> Path | None:
    """The folder of an app whose feed is on this host (`directory`, or a `file://` manifest):
    such an app needs no HTTP client."""
    if cfg.source == "directory":
        assert cfg.path is not None
        return Path(cfg.path)
    if cfg.source == "manifest" and cfg.url is not None and urlsplit(cfg.url).scheme == "file":
        return Path(unquote(urlsplit(cfg.url).path)).parent
    return None


def make_source(app: str, cfg: AppConfig, limits: Limits, fetcher: Fetcher | None,
                state_folder: Path, fresh: bool = False,
                book: Origins | None = None) -> Source:
    """The source of `app`; `fetcher` may be None only when `local_folder(cfg)` is a folder.
    `fresh`: every cache on the way revalidates the feed's documents (`check --fresh`);
    `book`: how each origin of a feed with mirrors has answered this run."""
    from updaterd.sources.refresh import FeedSource

    folder = local_folder(cfg)
    if folder is not None:
        from updaterd.sources.local import FolderTransport

        return FeedSource(app, cfg, limits, FolderTransport(folder), state_folder)
    assert fetcher is not None, f"{app}: a network source needs an HTTP client"
    if cfg.source == "manifest" and cfg.mirrors:
        from updaterd.sources.mirrors import MirroredSource

        return MirroredSource(app, cfg, limits, fetcher, state_folder,
                              book if book is not None else Origins(), fresh=fresh)
    if cfg.source == "manifest":
        from updaterd.sources.manifest import HttpTransport

        http = HttpTransport(cfg, fetcher, fresh)
        return FeedSource(app, cfg, limits, http, state_folder, http.admit_named_hosts)
    from updaterd.sources.github import GitHubSource

    return GitHubSource(app, cfg, limits, fetcher, state_folder)
