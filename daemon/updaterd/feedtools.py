"""`updaterd feed ...`: the publisher's day-to-day commands on a feed folder (SPEC section 10).

Each command that writes reads the feed as it is, changes the manifest, signs it with the keys
given, verifies the result as the hosts would (`publish.verify_as_hosts`) and writes it the one
way that keeps a verifiable manifest in the folder at every instant (`publish.write_signed`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import msgspec

from updaterd import feed, keys, publish
from updaterd.errors import FeedError
from updaterd.feed import Manifest
from updaterd.keys import KeySet
from updaterd.units import parse_duration


def load(feed_dir: Path) -> Manifest:
    """The feed's manifest as it is in the folder (its signature is checked when re-signed)."""
    path = feed_dir / feed.MANIFEST
    try:
        return msgspec.json.decode(path.read_bytes(), type=Manifest)
    except FileNotFoundError:
        raise FeedError(f"{path}: no feed here (`updaterd publish` creates one)") from None
    except (msgspec.DecodeError, msgspec.ValidationError) as e:
        raise FeedError(f"{path}: cannot read the feed: {e}") from None


@dataclass
class Resigned:
    manifest: Manifest
    line: str


def resign(*, feed_dir: Path, key_path: Sequence[Path], expires: str = "30d",
           now: datetime | None = None, dry_run: bool = False) -> Resigned:
    """A new serial and expiry, nothing else: for a timer on the publishing side, so that an
    idle feed never expires under its hosts (and to add the signatures of more keys)."""
    now = now or datetime.now(UTC)
    signers = publish.signing_keys(key_path)
    trust = publish.current_trust(feed_dir, signers)
    if trust is not None and (missing := publish.missing_signers(trust, signers)):
        raise FeedError(f"{feed_dir} is verified by hosts with {trust.where}; the keys given "
                        f"are not enough: add --key for {missing}")
    publish.require_signed_as_is(feed_dir, [s.public for s in signers] +
                                 (trust.keys if trust is not None else []))
    manifest = load(feed_dir)
    before = manifest.serial
    try:
        lifetime = parse_duration(expires)
    except ValueError as e:
        raise FeedError(f"--expires: {e}") from None
    manifest.serial += 1
    manifest.expires = (now + timedelta(seconds=lifetime)).replace(microsecond=0)
    raw = feed.encode(manifest)
    comment = f"timestamp:{int(now.timestamp())}\tfile:{feed.MANIFEST}\tapp:{manifest.app}" \
              f"\tserial:{manifest.serial}"
    signature = publish.sign(raw, comment, signers)
    publish.verify_as_hosts(raw, signature, trust, manifest.app, before, now)
    line = (f"{manifest.app}: serial {manifest.serial}, expires "
            f"{manifest.expires:%Y-%m-%d %H:%M} UTC, signed by "
            f"{', '.join(s.public.id_hex for s in signers)}")
    if dry_run:
        return Resigned(manifest, "would re-sign " + line)
    publish.write_signed(feed_dir, feed_dir / feed.MANIFEST, raw, signature)
    return Resigned(manifest, "re-signed " + line)


def listing(feed_dir: Path) -> dict[str, object]:
    """Everything `feed list` shows, as plain values (its --json)."""
    manifest = load(feed_dir)
    keyset = None
    if (feed_dir / keys.KEYS).exists():
        try:
            keyset = msgspec.json.decode((feed_dir / keys.KEYS).read_bytes(), type=KeySet)
        except (msgspec.DecodeError, msgspec.ValidationError) as e:
            raise FeedError(f"{feed_dir / keys.KEYS}: cannot read the key set: {e}") from None
    return {"app": manifest.app, "serial": manifest.serial,
            "expires": manifest.expires.isoformat(),
            "keys": msgspec.to_builtins(keyset) if keyset is not None else None,
            "releases": msgspec.to_builtins(manifest.releases)}


def describe(listed: dict[str, object]) -> str:
    """`feed list` for people: the feed, then a line per release and per artifact."""
    out = [f"{listed['app']}: serial {listed['serial']}, expires {listed['expires']}"]
    ks = listed["keys"]
    if isinstance(ks, dict):
        out.append(f"key set version {ks['version']}: {len(ks['keys'])} keys, threshold "
                   f"{ks['threshold']}")
    releases = listed["releases"]
    assert isinstance(releases, list)
    for r in releases:
        out.append(f"{r['version']}  {r['channel']}  rollout {r['rollout']}%  published "
                   f"{r['published']}")
        for a in r["artifacts"]:
            out.append(f"  {a['platform']}: {a['url']} ({a['size']} bytes)")
    return "\n".join(out)
