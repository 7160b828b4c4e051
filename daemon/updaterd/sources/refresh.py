"""One refresh of a signed feed, read top to bottom (as python-tuf's `Updater.refresh`):

1. the copy kept from the last refresh, whose validators make the fetch conditional;
2. the manifest: a "not modified" answer re-verifies the kept copy, and that is all;
3. new bytes: the feed's key rotations are followed from the keys in use;
4. the manifest's signature, and every check on the manifest;
5. the verified copy is kept for the next "not modified";
6. when its releases name rollout keys, `rollout.json` (fetched every time, however the
   manifest answered: it changes on its own), whose problems are logged, never raised.

Every decision is the trusted set's (trust/trustedset.py), which the engine opens from the
app's state and keeps what it accepted: this module only fetches and keeps copies. The feed's
files come through a `Transport` of two methods, which the HTTP feed, the local folder and the
tests' FeedSimulator implement alike; `FeedSource` is the engine's `Source` over any of them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO, Protocol

import msgspec

from updaterd.errors import DownloadError, FeedError
from updaterd.host.config import AppConfig, Limits
from updaterd.host.state import AppState
from updaterd.net.cachefile import Expected, ProgressFn
from updaterd.net.document import Document, Validators
from updaterd.sources import keys, verified
from updaterd.trust import minisign, rollout
from updaterd.trust.feed import MANIFEST, SIGNATURE, Artifact, TrustedFeed
from updaterd.trust.rotation import MAX_KEYS_SIZE
from updaterd.trust.trustedset import TrustedSet
from updaterd.units import parse_size

log = logging.getLogger("updaterd.rollout")


class Transport(Protocol):
    """Where a feed's files come from. `remote`: over a network, so the manifest must be
    signed and is fetched conditionally against the kept copy (a folder is read whole)."""

    remote: bool

    async def document(self, name: str, cap: int, *, missing_ok: bool = False,
                       validators: Validators | None = None) -> Document:
        """A small file of at most `cap` bytes; with `missing_ok`, an absent one is
        `missing` instead of an error."""
        ...

    async def file(self, name: str, dest: Path, expected: Expected,
                   progress: ProgressFn | None) -> BinaryIO:
        """The file `name` (as the manifest lists it) at `dest`, verified, open for reading."""
        ...

    def describe(self, name: str) -> str:
        """Where `name` comes from, for messages."""
        ...


async def refresh(app: str, trust: TrustedSet, limits: Limits, state: AppState,
                  transport: Transport, state_folder: Path) -> TrustedFeed:
    """The feed of `app`, verified by `trust` (FeedError naming the reason otherwise)."""
    trusted = await _manifest(app, trust, limits, state, transport, state_folder)
    return await _with_rollout(app, trust, transport, trusted)


async def _manifest(app: str, trust: TrustedSet, limits: Limits, state: AppState,
                    transport: Transport, state_folder: Path) -> TrustedFeed:
    kept = verified.load_copy(state_folder) if transport.remote else None
    conditional = kept is not None and state.serial is not None
    doc = await transport.document(
        MANIFEST, parse_size(limits.max_manifest_size),
        validators=(state.etag, state.last_modified) if conditional else None)
    if doc.not_modified:
        if not conditional or kept is None:  # bad input from a server: a message, no assert
            raise FeedError(f"{transport.describe(MANIFEST)}: the server answered 304 Not "
                            "Modified to a request that carried no validator (a broken "
                            "server or cache in between); nothing was changed")
        return trust.manifest(*kept, remote=transport.remote)
    walk = await keys.follow(trust, lambda name: _signed_document(transport, name))
    for rotated in walk.accepted:
        log.info("%s: key rotation to version %d accepted (%d keys, threshold %d); the serial "
                 "high-water mark starts again", app, rotated.version, len(rotated.keys),
                 rotated.threshold)
    if walk.stopped is not None:
        log.warning("%s: %s", app, walk.stopped)
    signature = None
    if trust.has_keys:
        sig = await transport.document(SIGNATURE, minisign.MAX_SIGNATURE_FILE,
                                       missing_ok=not transport.remote)
        signature = None if sig.missing else sig.body
    trusted = trust.manifest(doc.body, signature, remote=transport.remote)
    if not transport.remote:
        return trusted
    verified.keep_copy(state_folder, doc.body, signature)
    return msgspec.structs.replace(trusted, validators=(doc.etag, doc.last_modified))


async def _with_rollout(app: str, trust: TrustedSet, transport: Transport,
                        trusted: TrustedFeed) -> TrustedFeed:
    """The verified feed with its rollout.json, when its releases name rollout keys. Any
    problem is logged and kept as the reason: guarded releases then reach no new host."""
    if not any(rollout.is_guarded(r) for r in trusted.manifest.releases):
        return trusted
    try:
        if not rollout.declared(trusted.manifest):  # nothing to verify with: no fetch
            raise FeedError("no rollout key the manifest names can be read")
        found = await _signed_document(transport, rollout.DOCUMENT, rollout.MAX_DOCUMENT)
        accepted = trust.rollout(*(found if found is not None else (None, None)))
    except (FeedError, DownloadError) as e:  # a fetch that fails is no rollout.json either
        log.warning("%s: %s; guarded releases reach no new host and no host moves", app, e)
        return msgspec.structs.replace(trusted, rollout_problem=str(e))
    return msgspec.structs.replace(trusted, rollout=accepted.doc,
                                   rollout_signer=accepted.signer.to_base64(),
                                   rollout_mark=accepted.mark)


async def _signed_document(transport: Transport, name: str,
                           cap: int = MAX_KEYS_SIZE) -> tuple[bytes, bytes | None] | None:
    """A document beside the manifest (keys.json, rollout.json) and its signature, or None
    when absent."""
    doc = await transport.document(name, cap, missing_ok=True)
    if doc.missing:
        return None
    sig = await transport.document(f"{name}.minisig", minisign.MAX_SIGNATURE_FILE,
                                   missing_ok=True)
    return doc.body, None if sig.missing else sig.body


class FeedSource:
    """The engine's `Source` for a signed feed behind any transport. `trusted` is told of
    each verified feed (the HTTP feed admits the hosts its manifest names)."""

    def __init__(self, app: str, cfg: AppConfig, limits: Limits, transport: Transport,
                 state_folder: Path,
                 trusted: Callable[[TrustedFeed], None] | None = None) -> None:
        self.app, self.cfg, self.limits, self.transport = app, cfg, limits, transport
        self.state_folder, self.trusted = state_folder, trusted

    async def fetch(self, state: AppState, trust: TrustedSet) -> TrustedFeed:
        feed = await refresh(self.app, trust, self.limits, state, self.transport,
                             self.state_folder)
        if self.trusted is not None:
            self.trusted(feed)
        return feed

    def describe(self, artifact: Artifact) -> str:
        return self.transport.describe(artifact.url)

    async def fetch_artifact(self, artifact: Artifact, dest: Path, expected: Expected,
                             progress: ProgressFn | None) -> BinaryIO:
        return await self.transport.file(artifact.url, dest, expected, progress)
