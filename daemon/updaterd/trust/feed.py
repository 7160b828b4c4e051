"""The signed feed: manifest Structs and the trust checks on it (pure: bytes in, verdict out).

Order matters: the signature is checked over the raw bytes before anything is decoded; then the
strict decode; then app, expiry (against the fixed start time of the check cycle) and serial.
"""

from __future__ import annotations

import hashlib
import json
import re
from datetime import UTC, datetime
from typing import Annotated, Literal

import msgspec
from msgspec import Meta, Struct

from updaterd import versions
from updaterd.errors import FeedError, SignatureError
from updaterd.trust import minisign

MANIFEST = "manifest.json"
SIGNATURE = "manifest.json.minisig"
Hex64 = Annotated[str, Meta(pattern=r"^[0-9a-f]{64}$")]
# Artifact file names as they may appear in a feed: no path separators, no leading dot.
SAFE_FILE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,254}$")
# Artifact entries that are not files: a yank (trust/yank.py) and a rollout key
# (trust/rollout.py) travel as entries of these platforms, which no host installs.
MARKER_PLATFORMS = frozenset({"yanked", "rollout-key"})


class Artifact(Struct, forbid_unknown_fields=True, kw_only=True):
    """One downloadable file of a release, for one platform."""

    platform: Annotated[str, Meta(pattern=r"^[A-Za-z0-9_.-]{1,64}$")]
    url: Annotated[str, Meta(min_length=1, max_length=2048)]
    size: Annotated[int, Meta(ge=0, le=2**50)]
    sha256: Hex64 | None = None
    blake3: Hex64 | None = None


class Release(Struct, forbid_unknown_fields=True, kw_only=True):
    """One version in the feed."""

    version: Annotated[str, Meta(min_length=1, max_length=128)]
    published: datetime
    channel: Annotated[str, Meta(pattern=r"^[A-Za-z0-9_.-]{1,64}$")] = "stable"
    notes: str = ""
    rollout: Annotated[int, Meta(ge=0, le=100)] = 100
    artifacts: list[Artifact]


class Manifest(Struct, forbid_unknown_fields=True, kw_only=True):
    """`manifest.json`, schema 1."""

    schema: Literal[1]
    app: str
    serial: Annotated[int, Meta(ge=0, le=2**63 - 1)]
    expires: datetime
    releases: list[Release]

    def release(self, version: str, channel: str | None = None) -> Release | None:
        for r in self.releases:
            if r.version == version and (channel is None or r.channel == channel):
                return r
        return None


def is_marker(artifact: Artifact) -> bool:
    """An entry that marks the release (a yank, a rollout key), not a file to download."""
    return artifact.platform in MARKER_PLATFORMS


RolloutState = Literal["active", "halted", "recalled"]


class RolloutEntry(Struct, forbid_unknown_fields=True, kw_only=True):
    """What the rollout key says of one release: its share, and whether it is halted (no
    new host takes it) or recalled (hosts on it go back)."""

    share: Annotated[int, Meta(ge=0, le=100)]
    state: RolloutState = "active"
    since: datetime  # when the share or the state was last changed: the controller's clock
    why: Annotated[str, Meta(max_length=500)] = ""


class RolloutDoc(Struct, forbid_unknown_fields=True, kw_only=True):
    """`rollout.json`, schema 1, signed by a rollout key the manifest declares."""

    schema: Literal[1]
    app: str
    serial: Annotated[int, Meta(ge=0, le=2**63 - 1)]
    expires: datetime
    releases: Annotated[dict[str, RolloutEntry], Meta(max_length=256)] = {}


class RolloutMark(Struct, kw_only=True):
    """The newest `rollout.json` a host accepted, for the keys that signed it: an older
    serial, or the same serial with other bytes, is refused (a replayed document)."""

    keys: str  # fingerprint of the declared rollout keys; new keys start the mark again
    serial: int
    digest: str


class TrustedFeed(Struct, frozen=True):
    """A manifest that passed every check, with the facts to persist about it."""

    manifest: Manifest
    digest: str  # sha256 of the raw manifest bytes
    unchanged: bool  # same serial and bytes as the stored high-water mark
    validators: tuple[str | None, str | None] | None = None  # new (etag, last-modified)
    # rollout.json when the manifest declares rollout keys: the document and who signed it,
    # or why none is used (then guarded releases reach no new host, and no host moves)
    rollout: RolloutDoc | None = None
    rollout_signer: str | None = None  # the base64 of the rollout key that signed it
    rollout_mark: RolloutMark | None = None
    rollout_problem: str | None = None


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


def verify_manifest(
    raw: bytes,
    signature: bytes | None,
    *,
    keys: list[minisign.PublicKey],
    threshold: int = 1,
    app: str,
    stored_serial: int | None,
    stored_digest: str | None,
    cycle_start: datetime,
    require_signature: bool,
) -> TrustedFeed:
    """Every trust decision about one fetched manifest; raises FeedError naming the reason."""
    if keys:
        if signature is None:
            raise FeedError("manifest signature is missing")
        try:
            minisign.verify_threshold(raw, signature, keys, threshold)
        except SignatureError as e:
            raise FeedError(f"manifest signature refused: {e}") from None
    elif require_signature:
        raise FeedError("no public_keys configured, and this feed must be signed")
    reject_duplicate_keys(raw)
    try:
        manifest = msgspec.json.decode(raw, type=Manifest, strict=True)
    except msgspec.ValidationError as e:
        raise FeedError(f"manifest does not match schema 1: {e}") from None
    except msgspec.DecodeError as e:
        raise FeedError(f"manifest is not valid JSON: {e}") from None
    if manifest.app != app:
        raise FeedError(f"manifest is for app {manifest.app!r}, not {app!r}")
    expires = manifest.expires if manifest.expires.tzinfo else manifest.expires.replace(tzinfo=UTC)
    if expires <= cycle_start:
        raise FeedError(f"manifest expired at {expires.isoformat()} (freeze attack or stale feed)")
    digest = hashlib.sha256(raw).hexdigest()
    unchanged = False
    if stored_serial is not None:
        if manifest.serial < stored_serial:
            raise FeedError(f"manifest serial {manifest.serial} is below {stored_serial} "
                            "already seen (rollback attack or stale mirror)")
        if manifest.serial == stored_serial:
            if stored_digest is not None and digest != stored_digest:
                raise FeedError(f"manifest serial {manifest.serial} was seen before "
                                "with different content")
            unchanged = True
    for release in manifest.releases:
        validate_release(release)
    return TrustedFeed(manifest=manifest, digest=digest, unchanged=unchanged)


def validate_release(release: Release) -> None:
    """Names from the feed become paths: refuse anything unsafe before a path is built."""
    if not versions.is_safe_name(release.version):
        raise FeedError(f"release version {release.version!r} is not a safe name")
    for a in release.artifacts:
        if a.sha256 is None and a.blake3 is None:
            raise FeedError(f"artifact {a.url!r} of {release.version} lists no known digest")
        name = a.url.rsplit("/", 1)[-1]
        if ".." in a.url.split("?")[0].split("/") or not SAFE_FILE_NAME.fullmatch(name):
            raise FeedError(f"artifact name {name!r} of {release.version} is not a safe name")


def encode(document: Struct) -> bytes:
    """Canonical bytes of a signed document (sorted keys, indented, trailing newline)."""
    return msgspec.json.format(msgspec.json.encode(document, order="sorted"), indent=2) + b"\n"
