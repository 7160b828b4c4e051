"""A signed document of the feed (keys.json, manifest.json, rollout.json): the checks every one
passes, in one order, written once. Pure: bytes in, a decoded document or FeedError out.

1. the signature over the raw bytes, by enough of the keys given (nothing is decoded before);
2. no key twice in any object (a parser keeps one of the two; the signer may have meant the
   other);
3. the strict decode into the document's schema;
4. the app it names.

Then, for the documents that carry them: `fresh` (its expiry against the refresh's start) and
`not_replayed` (its serial against the mark this host keeps). What is particular to one
document (a manifest's release names, a rotation's own signatures) stays with it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Generic, Protocol, TypeVar

import msgspec

from updaterd.errors import FeedError, SignatureError, SignatureRefused
from updaterd.trust import minisign


class _Named(Protocol):
    app: str


T = TypeVar("T", bound=_Named)


@dataclass(frozen=True)
class Kind(Generic[T]):
    """One kind of signed document: its name in messages, its schema, and what the refusals
    say of it."""

    name: str
    schema: type[T]
    missing: str  # said when the signature is absent
    stale: str = ""  # why an expired one may be served
    replayed: str = ""  # why an older serial may be served


def reject_duplicate_keys(raw: bytes, what: str = "manifest") -> None:
    """msgspec keeps the last of duplicate keys; a signed document with duplicates is refused."""

    def pairs(items: list[tuple[str, object]]) -> dict[str, object]:
        seen: dict[str, object] = {}
        for k, v in items:
            if k in seen:
                raise FeedError(f"{what} has the key {k!r} twice")
            seen[k] = v
        return seen

    try:
        json.loads(raw, object_pairs_hook=pairs)
    except RecursionError:
        raise FeedError(f"{what} is nested too deeply") from None
    except ValueError as e:
        raise FeedError(f"{what} is not valid JSON: {e}") from None


def open_signed(kind: Kind[T], raw: bytes, signature: bytes | None,
                keys: list[minisign.PublicKey] | None, threshold: int, *, app: str,
                refused: str) -> tuple[T, list[minisign.Verified]]:
    """Steps 1-4 for one document: the document and the signatures that count. `keys` None:
    the signature is not checked (an unsigned feed the operator allowed); `refused` begins
    the message when the signature check fails."""
    signers: list[minisign.Verified] = []
    if keys is not None:
        if signature is None:
            raise SignatureRefused(kind.missing)
        try:
            signers = minisign.verify_threshold(raw, signature, keys, threshold)
        except SignatureError as e:
            raise SignatureRefused(f"{refused}: {e}") from None
    reject_duplicate_keys(raw, kind.name)
    try:
        doc = msgspec.json.decode(raw, type=kind.schema, strict=True)
    except msgspec.ValidationError as e:
        raise FeedError(f"{kind.name} does not match schema 1: {e}") from None
    except msgspec.DecodeError as e:
        raise FeedError(f"{kind.name} is not valid JSON: {e}") from None
    if doc.app != app:
        raise FeedError(f"{kind.name} is for app {doc.app!r}, not {app!r}")
    return doc, signers


def fresh(kind: Kind[T], expires: datetime, now: datetime) -> None:
    """An expired document is refused: whoever serves it is frozen in the past."""
    expires = expires if expires.tzinfo else expires.replace(tzinfo=UTC)
    if expires <= now:
        raise FeedError(f"{kind.name} expired at {expires.isoformat()} ({kind.stale})")


def not_replayed(kind: Kind[T], serial: int, digest: str, mark_serial: int | None,
                 mark_digest: str | None) -> bool:
    """True when the document is the one the mark names (same serial, same bytes); an older
    serial, or the same serial with other bytes, is refused."""
    if mark_serial is None:
        return False
    if serial < mark_serial:
        raise FeedError(f"{kind.name} serial {serial} is below {mark_serial} already seen "
                        f"({kind.replayed})")
    if serial == mark_serial:
        if mark_digest is not None and digest != mark_digest:
            raise FeedError(f"{kind.name} serial {serial} was seen before with different "
                            "content")
        return True
    return False
