"""Key rotation: a signed `keys.json` in the feed replaces the keys a host trusts.

A rotation is accepted when it is newer than the key set in use, names the app, and is signed
by enough of the keys in use (their threshold) and by enough of the keys it brings (its own
threshold). Keys it leaves out are revoked. Accepting one resets the serial high-water mark:
that is how a feed recovers after a stolen key published a huge serial (TUF's fast-forward
recovery). The chain starts at the configured `public_keys` and `threshold`; changing those
starts it again (the operator re-pins). A host that missed rotations walks them one by one
through `keys-<N>.json`, as TUF clients walk `N.root.json`.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Annotated, Literal

import msgspec
from msgspec import Meta, Struct

from updaterd.errors import FeedError, SignatureError
from updaterd.host import outcome
from updaterd.host.config import AppConfig
from updaterd.host.state import AppState, TrustRoot
from updaterd.trust import minisign
from updaterd.trust.feed import reject_duplicate_keys

log = logging.getLogger("updaterd.keys")

KEYS = "keys.json"
MAX_KEYS_SIZE = 64 * 1024
MAX_STEPS = 32  # rotations walked in one check


def versioned(version: int) -> str:
    return f"keys-{version}.json"


class KeySet(Struct, forbid_unknown_fields=True, kw_only=True):
    """`keys.json`, schema 1."""

    schema: Literal[1]
    app: str
    version: Annotated[int, Meta(ge=1, le=2**31)]
    keys: Annotated[list[str], Meta(min_length=1, max_length=16)]
    threshold: Annotated[int, Meta(ge=1, le=16)] = 1


@dataclass(frozen=True)
class InUse:
    """The keys a feed is verified with now."""

    keys: list[minisign.PublicKey]
    threshold: int
    version: int  # 0: the configured keys


def _parse_keys(texts: list[str], where: str) -> list[minisign.PublicKey]:
    try:
        return [minisign.PublicKey.parse(k) for k in texts]
    except ValueError as e:
        raise FeedError(f"{where}: {e}") from None


def host_trusting(keys: list[minisign.PublicKey], threshold: int) -> AppConfig:
    """An app configured with exactly these keys: how the publisher's commands run the hosts'
    own rotation checks as a host on those keys would."""
    return AppConfig(source="directory", path=".", public_keys=[k.to_base64() for k in keys],
                     threshold=threshold)


def origin_of(cfg: AppConfig) -> str:
    """Which configured keys a stored rotation descends from."""
    keys = sorted(minisign.PublicKey.parse(k).to_base64() for k in cfg.public_keys)
    return hashlib.sha256(f"{cfg.threshold}:{','.join(keys)}".encode()).hexdigest()


def in_use(cfg: AppConfig, state: AppState) -> InUse:
    """The rotated key set when it descends from the configured keys, else those keys."""
    root = state.trust
    if root is not None and root.origin == origin_of(cfg):
        return InUse(_parse_keys(root.keys, "stored key set"), root.threshold, root.version)
    return InUse(_parse_keys(cfg.public_keys, "public_keys"), cfg.threshold, 0)


def apply(app: str, cfg: AppConfig, state: AppState, raw: bytes, sig: bytes | None) -> bool:
    """Take one rotation document into `state`; False when it is not newer than the keys in
    use. Raises FeedError naming the reason when it is refused (nothing is changed then)."""
    current = in_use(cfg, state)
    if sig is None:
        raise FeedError(f"{KEYS}: signature is missing")
    try:
        minisign.verify_threshold(raw, sig, current.keys, current.threshold)
    except SignatureError as e:
        raise FeedError(f"{KEYS}: not signed by the keys in use (version {current.version}): "
                        f"{e}") from None
    reject_duplicate_keys(raw, KEYS)
    try:
        new = msgspec.json.decode(raw, type=KeySet, strict=True)
    except (msgspec.ValidationError, msgspec.DecodeError) as e:
        raise FeedError(f"{KEYS} does not match schema 1: {e}") from None
    if new.app != app:
        raise FeedError(f"{KEYS} is for app {new.app!r}, not {app!r}")
    if new.version <= current.version:
        return False
    new_keys = _parse_keys(new.keys, f"{KEYS} version {new.version}")
    if new.threshold > len({k.raw for k in new_keys}):
        raise FeedError(f"{KEYS} version {new.version}: threshold {new.threshold} is more "
                        "than its distinct keys")
    try:
        minisign.verify_threshold(raw, sig, new_keys, new.threshold)
    except SignatureError as e:
        raise FeedError(f"{KEYS} version {new.version}: not signed by its own new keys: "
                        f"{e}") from None
    outcome.trust_rotated(state, TrustRoot(origin=origin_of(cfg), version=new.version,
                                           keys=[k.to_base64() for k in new_keys],
                                           threshold=new.threshold))
    log.info("%s: key rotation to version %d accepted (%d keys, threshold %d); the serial "
                "high-water mark starts again", app, new.version, len(new_keys), new.threshold)
    return True


@contextlib.contextmanager
def said_aside() -> Iterator[list[logging.LogRecord]]:
    """What this module logs, collected instead of logged: the publisher's commands run the
    hosts' own code and say what it found in their own words (a host's "rotation accepted"
    line on the publisher's terminal said nothing to them)."""
    records: list[logging.LogRecord] = []

    class _Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    keep, propagate = _Keep(), log.propagate
    log.addHandler(keep)
    log.propagate = False
    try:
        yield records
    finally:
        log.removeHandler(keep)
        log.propagate = propagate


Fetch = Callable[[str], Awaitable[tuple[bytes, bytes | None] | None]]


async def refresh(app: str, cfg: AppConfig, state: AppState, fetch: Fetch) -> None:
    """Follow the feed's rotations from the keys in use, before its manifest is checked.

    `fetch(name)` returns a document of the feed and its signature, or None when absent. A
    refused rotation is logged and the keys in use stay: the manifest check then decides.
    """
    if not cfg.public_keys or cfg.verify != "required":
        return
    latest = await fetch(KEYS)
    if latest is None:
        return
    for _ in range(MAX_STEPS):
        try:
            apply(app, cfg, state, *latest)
            return
        except FeedError as e:
            refused = e
        step = await fetch(versioned(in_use(cfg, state).version + 1))
        if step is None:
            log.warning("%s: %s", app, refused)
            return
        try:
            if not apply(app, cfg, state, *step):
                log.warning("%s: %s", app, refused)
                return
        except FeedError as e:
            log.warning("%s: %s", app, e)
            return
    log.warning("%s: more than %d key rotations at once; the rest at the next check", app,
                MAX_STEPS)
