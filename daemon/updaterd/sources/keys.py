"""Following a feed's key rotations, before its manifest is checked: fetch `keys.json`, and when
the keys in use cannot take it at once (a host that missed rotations), walk `keys-<N>.json`
one by one, as TUF clients walk `N.root.json`. The decisions are the trusted set's
(trust/rotation.py); this only fetches and says where the walk stopped.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from updaterd.errors import FeedError
from updaterd.trust.rotation import KEYS, Keys, versioned
from updaterd.trust.trustedset import TrustedSet

MAX_STEPS = 32  # rotations walked in one check

Fetch = Callable[[str], Awaitable[tuple[bytes, bytes | None] | None]]


@dataclass
class Walk:
    """What one walk did: the rotations accepted, in order, and why it stopped short of the
    feed's latest (None: it did not)."""

    accepted: list[Keys] = field(default_factory=list)
    stopped: str | None = None


async def follow(trust: TrustedSet, fetch: Fetch) -> Walk:
    """Follow the feed's rotations from the keys in use into `trust`.

    `fetch(name)` returns a document of the feed and its signature, or None when absent. A
    refused rotation stops the walk and the keys reached stay: the manifest check decides.
    """
    walk = Walk()
    if not trust.has_keys:
        return walk
    latest = await fetch(KEYS)
    if latest is None:
        return walk
    for _ in range(MAX_STEPS):
        try:
            _take(trust, walk, *latest)
            return walk
        except FeedError as e:
            refused = e
        assert trust.keys is not None  # has_keys
        step = await fetch(versioned(trust.keys.version + 1))
        if step is None:
            walk.stopped = str(refused)
            return walk
        try:
            if not _take(trust, walk, *step):
                walk.stopped = str(refused)
                return walk
        except FeedError as e:
            walk.stopped = str(e)
            return walk
    walk.stopped = f"more than {MAX_STEPS} key rotations at once; the rest at the next check"
    return walk


def _take(trust: TrustedSet, walk: Walk, raw: bytes, signature: bytes | None) -> bool:
    if not trust.rotate(raw, signature):
        return False
    assert trust.keys is not None
    walk.accepted.append(trust.keys)
    return True
