"""Key rotation, decided: a signed `keys.json` replaces the keys a feed is verified with.
Pure: the keys in use and a document's bytes in, the new keys (or a refusal) out.

A rotation is accepted when it is newer than the keys in use, names the app, and is signed by
enough of the keys in use (their threshold) and by enough of the keys it brings (its own
threshold). Keys it leaves out are revoked. Accepting one resets the serial high-water mark:
that is how a feed recovers after a stolen key published a huge serial (TUF's fast-forward
recovery). The chain starts at the configured `public_keys` and `threshold` (host/trustroot.py
says which keys are in use); a host that missed rotations walks them one by one through
`keys-<N>.json` (sources/keys.py), as TUF clients walk `N.root.json`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal

from msgspec import Meta, Struct

from updaterd.errors import FeedError, SignatureError
from updaterd.trust import minisign, signed

KEYS = "keys.json"
MAX_KEYS_SIZE = 64 * 1024


def versioned(version: int) -> str:
    """The name under which rotation `version` stays in the feed for hosts that missed it."""
    return f"keys-{version}.json"


class KeySet(Struct, forbid_unknown_fields=True, kw_only=True):
    """`keys.json`, schema 1."""

    schema: Literal[1]
    app: str
    version: Annotated[int, Meta(ge=1, le=2**31)]
    keys: Annotated[list[str], Meta(min_length=1, max_length=16)]
    threshold: Annotated[int, Meta(ge=1, le=16)] = 1


KIND = signed.Kind(KEYS, KeySet, missing=f"{KEYS}: signature is missing")


@dataclass(frozen=True)
class Keys:
    """The keys a feed is verified with: at least `threshold` of them sign each document."""

    keys: list[minisign.PublicKey]
    threshold: int
    version: int  # 0: the configured keys


def parse_keys(texts: list[str], where: str) -> list[minisign.PublicKey]:
    """Public keys from their base64 lines; FeedError names `where` they were read."""
    try:
        return [minisign.PublicKey.parse(k) for k in texts]
    except ValueError as e:
        raise FeedError(f"{where}: {e}") from None


def rotate(app: str, current: Keys, raw: bytes, signature: bytes | None) -> Keys | None:
    """The keys `raw` rotates to, or None when it is not newer than `current`. Raises
    FeedError naming the reason when it is refused."""
    new, _ = signed.open_signed(
        KIND, raw, signature, current.keys, current.threshold, app=app,
        refused=f"{KEYS}: not signed by the keys in use (version {current.version})")
    if new.version <= current.version:
        return None
    new_keys = parse_keys(new.keys, f"{KEYS} version {new.version}")
    if new.threshold > len({k.raw for k in new_keys}):
        raise FeedError(f"{KEYS} version {new.version}: threshold {new.threshold} is more "
                        "than its distinct keys")
    assert signature is not None  # open_signed refused a document without one
    try:
        minisign.verify_threshold(raw, signature, new_keys, new.threshold)
    except SignatureError as e:
        raise FeedError(f"{KEYS} version {new.version}: not signed by its own new keys: "
                        f"{e}") from None
    return Keys(new_keys, new.threshold, new.version)
