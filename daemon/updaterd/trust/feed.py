"""The signed feed: manifest Structs and the trust checks on it (pure: bytes in, verdict out).

A manifest passes the checks of every signed document (`signed`: signature over the raw bytes
before anything is decoded, strict decode, app), then expiry (against the fixed start time of
the check cycle) and serial, then the names its releases give to files.
"""

from __future__ import annotations

import hashlib
import re
from datetime import datetime
from typing import Annotated, Literal

import msgspec
from msgspec import Meta, Struct

from updaterd import versions
from updaterd.errors import FeedError
from updaterd.trust import minisign, signed

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
    origin: str | None = None  # the origin whose `validators` they are (mirrors)
    # rollout.json when the manifest declares rollout keys: the document and who signed it,
    # or why none is used (then guarded releases reach no new host, and no host moves)
    rollout: RolloutDoc | None = None
    rollout_signer: str | None = None  # the base64 of the rollout key that signed it
    rollout_mark: RolloutMark | None = None
    rollout_problem: str | None = None
    # the validators of a rollout.json fetched whole this time (None: it was not, or 304)
    rollout_validators: tuple[str | None, str | None] | None = None


MANIFEST_KIND = signed.Kind(MANIFEST.removesuffix(".json"), Manifest,
                            missing="manifest signature is missing",
                            stale="freeze attack or stale feed",
                            replayed="rollback attack or stale mirror")


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
    """Every trust decision about one fetched manifest; raises FeedError naming the reason.
    Without `keys` the signature is not checked, unless `require_signature`: then refused."""
    if not keys and require_signature:
        raise FeedError("no public_keys configured, and this feed must be signed")
    manifest, _ = signed.open_signed(MANIFEST_KIND, raw, signature, keys or None, threshold,
                                     app=app, refused="manifest signature refused")
    signed.fresh(MANIFEST_KIND, manifest.expires, cycle_start)
    digest = hashlib.sha256(raw).hexdigest()
    unchanged = signed.not_replayed(MANIFEST_KIND, manifest.serial, digest, stored_serial,
                                    stored_digest)
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
