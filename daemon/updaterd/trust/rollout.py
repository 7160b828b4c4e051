"""Guarded rollout, the host's side (docs/rollout.md): which share of hosts a release reaches
when a rollout key steers it, and whether it is halted or recalled. Pure: bytes in, verdict out.

The publisher's key delegates, release by release: a release names the rollout keys that may
steer it as artifact entries of the platform `rollout-key` (no daemon installs those, and a
daemon older than guarded rollout accepts the feed and follows the manifest's own `rollout`).
A rollout key signs `rollout.json` beside the manifest; it can lower or raise a release's share
up to the manifest's, halt it (no new host takes it) or recall it (hosts on it go back); it can
never name an artifact. Whatever goes wrong with `rollout.json` (missing, stale, expired, badly
signed, replayed) never widens a rollout and never moves a host: a guarded release then reaches
no new host, and the hosts on it stay.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime

from updaterd import versions
from updaterd.errors import FeedError
from updaterd.trust import minisign, signed
from updaterd.trust.feed import (
    Artifact,
    Manifest,
    Release,
    RolloutDoc,
    RolloutMark,
    TrustedFeed,
)

PLATFORM = "rollout-key"
DOCUMENT = "rollout.json"
SIGNATURE = "rollout.json.minisig"
MAX_DOCUMENT = 64 * 1024


def marker(key: minisign.PublicKey) -> Artifact:
    """The entry by which a release names a rollout key that may steer it."""
    encoded = key.to_base64().replace("+", "-").replace("/", "_")  # a safe file name
    return Artifact(platform=PLATFORM, url=f"rollout-key.{encoded}", size=0,
                    sha256=hashlib.sha256(key.raw).hexdigest())


def keys_of(release: Release) -> list[minisign.PublicKey]:
    """The rollout keys `release` names; an entry that cannot be read names none."""
    found = []
    for a in release.artifacts:
        if a.platform != PLATFORM or not a.url.startswith("rollout-key."):
            continue
        line = a.url.removeprefix("rollout-key.").replace("-", "+").replace("_", "/")
        try:
            found.append(minisign.PublicKey.parse(line))
        except ValueError:
            continue
    return found


def is_guarded(release: Release) -> bool:
    """A release that names a rollout key (even one this daemon cannot read: the publisher
    meant it to be guarded, so it is never offered past what a rollout.json allows)."""
    return any(a.platform == PLATFORM for a in release.artifacts)


def declared(manifest: Manifest) -> list[minisign.PublicKey]:
    """Every rollout key the manifest's releases name, once each."""
    seen: dict[bytes, minisign.PublicKey] = {}
    for r in manifest.releases:
        for k in keys_of(r):
            seen.setdefault(k.raw, k)
    return list(seen.values())


def fingerprint(keys: list[minisign.PublicKey]) -> str:
    return hashlib.sha256(b"".join(sorted(k.raw for k in keys))).hexdigest()


@dataclass(frozen=True)
class Accepted:
    doc: RolloutDoc
    signer: minisign.PublicKey
    mark: RolloutMark


KIND = signed.Kind(DOCUMENT, RolloutDoc, missing=f"{DOCUMENT}: signature is missing",
                   stale="the controller stopped re-signing it, or it is replayed",
                   replayed="replayed or a stale mirror")


def verify(raw: bytes | None, signature: bytes | None, keys: list[minisign.PublicKey], *,
           app: str, mark: RolloutMark | None, cycle_start: datetime) -> Accepted:
    """Every check on a fetched rollout.json; FeedError names why it is not used."""
    if raw is None:
        raise FeedError(f"{DOCUMENT} is missing")
    # one rollout key suffices; several blocks: while the controller replaces the document,
    # its signature file holds the old and the new document's (as the manifest's does)
    doc, signers = signed.open_signed(
        KIND, raw, signature, keys, 1, app=app,
        refused=f"{DOCUMENT}: not signed by a rollout key the manifest names")
    signed.fresh(KIND, doc.expires, cycle_start)
    keys_fp = fingerprint(keys)
    digest = hashlib.sha256(raw).hexdigest()
    if mark is not None and mark.keys == keys_fp:
        signed.not_replayed(KIND, doc.serial, digest, mark.serial, mark.digest)
    for version in doc.releases:
        if not versions.is_safe_name(version):
            raise FeedError(f"{DOCUMENT} names a version {version!r} that is not a safe name")
    return Accepted(doc=doc, signer=signers[0].key,
                    mark=RolloutMark(keys=keys_fp, serial=doc.serial, digest=digest))


@dataclass(frozen=True)
class Governed:
    """A release as the rollout key leaves it: its share, and why no new host takes it
    (`held`) or why hosts on it go back (`recalled`)."""

    share: int
    held: str | None = None
    recalled: str | None = None


def govern(release: Release, doc: RolloutDoc | None, signer: str | None,
           problem: str | None) -> Governed:
    """The share a host uses for `release`: the manifest's alone when the release is not
    guarded; else the smaller of the manifest's and rollout.json's, and nothing new at all
    when there is no usable rollout.json or no entry for it."""
    if not is_guarded(release):
        return Governed(release.rollout)
    if doc is None:
        return Governed(0, held=f"guarded by a rollout key, and {problem or 'no rollout.json'}"
                                "; no new host takes it")
    entry = doc.releases.get(release.version)
    allowed = {k.to_base64() for k in keys_of(release)}
    if entry is None or signer not in allowed:
        return Governed(0, held="guarded by a rollout key; its rollout has not started")
    why = f": {entry.why}" if entry.why else ""
    if entry.state == "recalled":
        return Governed(0, held=f"recalled by its rollout{why}",
                        recalled=entry.why or "recalled by its rollout")
    if entry.state == "halted":
        return Governed(0, held=f"rollout halted at {min(entry.share, release.rollout)}%{why}")
    return Governed(min(entry.share, release.rollout))


def governed(trusted: TrustedFeed) -> dict[str, Governed]:
    """`govern` of every release of a verified feed, by version."""
    return {r.version: govern(r, trusted.rollout, trusted.rollout_signer,
                              trusted.rollout_problem) for r in trusted.manifest.releases}
