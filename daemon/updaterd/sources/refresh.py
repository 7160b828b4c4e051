"""One refresh of a signed feed, read top to bottom (as python-tuf's `Updater.refresh`):

1. the copy kept from the last refresh, whose validators make the fetch conditional;
2. the manifest: a "not modified" answer re-verifies the kept copy, and that is all;
3. new bytes: the feed's key rotations are followed from the keys in use;
4. the manifest's signature, and every check on the manifest; a refused signature is asked
   again with the manifest past every cache (a cache may pair files of two publishes);
5. the verified copy is kept for the next "not modified";
6. when its releases name rollout keys, `rollout.json` (asked for however the manifest
   answered: it changes on its own; conditionally, against the copy kept of the one
   accepted last), whose problems are logged, never raised.

Every decision is the trusted set's (trust/trustedset.py), which the engine opens from the
app's state and keeps what it accepted: this module only fetches and keeps copies. The feed's
files come through a `Transport` of two methods, which the HTTP feed, the local folder and the
tests' FeedSimulator implement alike; `FeedSource` is the engine's `Source` over any of them.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import BinaryIO, Protocol, runtime_checkable

import msgspec

from updaterd.errors import DownloadError, FeedError, SignatureRefused
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
    origin: str | None  # the configured URL this transport asks (None: not on a network)

    async def document(self, name: str, cap: int, *, missing_ok: bool = False,
                       validators: Validators | None = None,
                       fresh: bool = False) -> Document:
        """A small file of at most `cap` bytes; with `missing_ok`, an absent one is
        `missing` instead of an error; `fresh`: every cache on the way revalidates it."""
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
    return await _with_rollout(app, trust, state, transport, state_folder, trusted)


async def _manifest(app: str, trust: TrustedSet, limits: Limits, state: AppState,
                    transport: Transport, state_folder: Path) -> TrustedFeed:
    kept = verified.load_copy(state_folder) if transport.remote else None
    conditional = kept is not None and state.serial is not None and _validators_hold(
        state, transport)
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
    signature = await _signature(trust, transport)
    try:
        trusted = trust.manifest(doc.body, signature, remote=transport.remote)
    except SignatureRefused as refused:
        if not transport.remote:
            raise
        doc, signature, trusted = await _past_the_caches(app, trust, limits, transport, doc,
                                                         signature, refused)
    if not transport.remote:
        return trusted
    verified.keep_copy(state_folder, doc.body, signature)
    return msgspec.structs.replace(trusted, validators=(doc.etag, doc.last_modified),
                                   origin=transport.origin)


def _validators_hold(state: AppState, transport: Transport) -> bool:
    """Whether the validators kept are this origin's: an ETag or a date means nothing to
    another server (a stale mirror would answer 304 to a newer origin's date, and hide what
    the next origin has). A state from before mirrors names no origin: they hold."""
    return state.feed_origin is None or state.feed_origin == transport.origin


async def _signature(trust: TrustedSet, transport: Transport,
                     fresh: bool = False) -> bytes | None:
    """The manifest's signature, when the feed is verified with keys (None: absent)."""
    if not trust.has_keys:
        return None
    sig = await transport.document(SIGNATURE, minisign.MAX_SIGNATURE_FILE,
                                   missing_ok=not transport.remote, fresh=fresh)
    return None if sig.missing else sig.body


async def _past_the_caches(app: str, trust: TrustedSet, limits: Limits, transport: Transport,
                           doc: Document, signature: bytes | None,
                           refused: SignatureRefused) -> tuple[Document, bytes | None,
                                                               TrustedFeed]:
    """A manifest whose signature was refused, asked again with its signature past every
    cache (Cache-Control: no-cache): a cache that purged one of the two files, or kept them
    from different publishes, pairs a new manifest with an old signature, for every host."""
    again = await transport.document(MANIFEST, parse_size(limits.max_manifest_size), fresh=True)
    signature_again = await _signature(trust, transport, fresh=True)
    try:
        trusted = trust.manifest(again.body, signature_again, remote=transport.remote)
    except SignatureRefused as e:
        if (again.body, signature_again) == (doc.body, signature):
            raise SignatureRefused(f"{e} (asked again past any cache with Cache-Control: "
                                   "no-cache: the same answer, so the feed itself is signed "
                                   "so, or a cache in front of it ignores no-cache, as "
                                   "Varnish does by default: docs/feed.md, Serving a "
                                   "feed)") from None
        raise
    log.warning("%s: %s, as a cache in front of the feed served them; asked again past it "
                "(Cache-Control: no-cache), the manifest and its signature go together: the "
                "cache pairs files of different publishes (purge manifest.json and its "
                ".minisig together: docs/feed.md, Serving a feed)", app, refused)
    return again, signature_again, trusted


async def _with_rollout(app: str, trust: TrustedSet, state: AppState, transport: Transport,
                        state_folder: Path, trusted: TrustedFeed) -> TrustedFeed:
    """The verified feed with its rollout.json, when its releases name rollout keys: asked
    for conditionally against the copy kept of the one accepted last (a 304 re-verifies the
    copy, and the signature is fetched only with new bytes). Any problem is logged and kept
    as the reason: guarded releases then reach no new host."""
    if not any(rollout.is_guarded(r) for r in trusted.manifest.releases):
        return trusted
    validators = None
    try:
        if not rollout.declared(trusted.manifest):  # nothing to verify with: no fetch
            raise FeedError("no rollout key the manifest names can be read")
        kept = verified.load_copy(state_folder, ROLLOUT_COPY) if transport.remote else None
        asked = (state.rollout_etag, state.rollout_last_modified)
        doc = await transport.document(rollout.DOCUMENT, rollout.MAX_DOCUMENT, missing_ok=True,
                                       validators=asked if kept and any(asked)
                                       and _validators_hold(state, transport) else None)
        raw, sig = kept if doc.not_modified and kept else (None, None)
        if doc.not_modified and not kept:  # bad input from a server: a message, no assert
            raise FeedError(f"{transport.describe(rollout.DOCUMENT)}: the server answered 304 "
                            "Not Modified to a request that carried no validator")
        if not doc.not_modified and not doc.missing:
            raw, sig = doc.body, await _signature_of(transport, rollout.DOCUMENT)
            validators = (doc.etag, doc.last_modified) if transport.remote else None
        accepted = trust.rollout(raw, sig)
        if validators is not None:
            verified.keep_copy(state_folder, doc.body, sig, ROLLOUT_COPY)
    except (FeedError, DownloadError) as e:  # a fetch that fails is no rollout.json either
        log.warning("%s: %s; guarded releases reach no new host and no host moves", app, e)
        return msgspec.structs.replace(trusted, rollout_problem=str(e))
    return msgspec.structs.replace(trusted, rollout=accepted.doc,
                                   rollout_signer=accepted.signer.to_base64(),
                                   rollout_mark=accepted.mark, rollout_validators=validators)


ROLLOUT_COPY = rollout.DOCUMENT  # the copy kept in the state folder, beside feed.json


async def _signed_document(transport: Transport, name: str) -> tuple[bytes, bytes | None] | None:
    """A key rotation beside the manifest and its signature, or None when absent."""
    doc = await transport.document(name, MAX_KEYS_SIZE, missing_ok=True)
    if doc.missing:
        return None
    return doc.body, await _signature_of(transport, name)


async def _signature_of(transport: Transport, name: str) -> bytes | None:
    sig = await transport.document(f"{name}.minisig", minisign.MAX_SIGNATURE_FILE,
                                   missing_ok=True)
    return None if sig.missing else sig.body


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

    def streams(self, artifact: Artifact) -> bool:
        return isinstance(self.transport, StreamingTransport)

    async def stream_artifact(self, artifact: Artifact, expected: Expected,
                              consume: Callable[[bytes], Awaitable[None]],
                              progress: ProgressFn | None) -> None:
        if not isinstance(self.transport, StreamingTransport):
            raise DownloadError(f"{self.transport.describe(artifact.url)}: not streamed")
        await self.transport.stream(artifact.url, expected, consume, progress)

    def stream_refused(self, artifact: Artifact) -> bool:
        return False  # one origin: it would send the same bytes again


@runtime_checkable
class StreamingTransport(Protocol):
    """A transport over a network, whose files can be handed over as they arrive."""

    async def stream(self, name: str, expected: Expected,
                     consume: Callable[[bytes], Awaitable[None]],
                     progress: ProgressFn | None) -> None:
        """Each byte of `name` to `consume`, in order (a cut resumed where it stopped)."""
        ...
