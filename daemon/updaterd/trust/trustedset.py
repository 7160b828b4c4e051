"""What one refresh of a feed has accepted so far (model: python-tuf's TrustedMetadataSet).

Documents arrive in the fixed order of a refresh and each is checked against the ones before
it: the key rotations (each against the keys in use), then the manifest (against the keys the
rotations left and the serial mark they left), then rollout.json (against the rollout keys that
manifest names and the rollout mark). A step accepts or raises FeedError; a step out of order is
a programming error. No I/O: `sources/refresh.py` fetches, this decides, and the engine records
what was accepted (a rotation even when the manifest after it is refused: a revoked key must
stay revoked).
"""

from __future__ import annotations

from datetime import datetime

from updaterd.errors import FeedError
from updaterd.trust import feed, rollout, rotation
from updaterd.trust.feed import RolloutMark, TrustedFeed
from updaterd.trust.rotation import Keys


class TrustedSet:
    """The trust of one refresh. `keys` None: the operator turned signatures off
    (`verify = "skip"`); `serial`/`digest`: the manifest mark this host keeps."""

    def __init__(self, app: str, keys: Keys | None, *, now: datetime,
                 serial: int | None = None, digest: str | None = None,
                 rollout_mark: RolloutMark | None = None) -> None:
        self.app, self.now = app, now
        self._keys, self._serial, self._digest = keys, serial, digest
        self._rollout_mark = rollout_mark
        self.rotated = False  # a rotation was accepted: the engine keeps the new keys
        self._feed: TrustedFeed | None = None

    @property
    def keys(self) -> Keys | None:
        """The keys in use now (the last rotation accepted, else the ones given)."""
        return self._keys

    @property
    def has_keys(self) -> bool:
        """Whether the feed is verified with keys (then its signature is fetched and its key
        rotations followed); not when none are configured, nor with `verify = "skip"`."""
        return self._keys is not None and bool(self._keys.keys)

    def rotate(self, raw: bytes, signature: bytes | None) -> bool:
        """Take one rotation; False when it is not newer than the keys in use."""
        if self._feed is not None:
            raise RuntimeError("key rotations come before the manifest")
        if self._keys is None or not self._keys.keys:
            raise RuntimeError("no keys in use to rotate from")
        new = rotation.rotate(self.app, self._keys, raw, signature)
        if new is None:
            return False
        self._keys, self.rotated = new, True
        self._serial = self._digest = None  # the mark belonged to the keys now gone
        return True

    def manifest(self, raw: bytes, signature: bytes | None, *, remote: bool) -> TrustedFeed:
        """The manifest, against the keys in use and the mark. `remote`: it came over a
        network, so it must be signed even when no key is configured."""
        if self._feed is not None:  # a refused one is not taken: the next origin's may be
            raise RuntimeError("one manifest per refresh")
        keys = self._keys
        self._feed = feed.verify_manifest(
            raw, signature, keys=keys.keys if keys is not None else [],
            threshold=keys.threshold if keys is not None else 1, app=self.app,
            stored_serial=self._serial, stored_digest=self._digest, cycle_start=self.now,
            require_signature=remote and keys is not None)
        return self._feed

    def rollout(self, raw: bytes | None, signature: bytes | None) -> rollout.Accepted:
        """rollout.json (None: absent), against the rollout keys the manifest names."""
        if self._feed is None:
            raise RuntimeError("rollout.json comes after the manifest")
        keys = rollout.declared(self._feed.manifest)
        if not keys:
            raise FeedError("no rollout key the manifest names can be read")
        return rollout.verify(raw, signature, keys, app=self.app, mark=self._rollout_mark,
                              cycle_start=self.now)
