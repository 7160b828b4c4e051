"""`updaterd feed ...`: the publisher's day-to-day commands on a feed folder (docs/feed.md).

Each command that writes reads the feed as it is, changes the manifest, signs it with the keys
given, verifies the result as the hosts would (`publish.verify_as_hosts`) and writes it the one
way that keeps a verifiable manifest in the folder at every instant (`publish.write_signed`).
"""

from __future__ import annotations

import glob
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import msgspec

from updaterd import logtext, versions
from updaterd.errors import FeedError
from updaterd.release import feedfolder, publish
from updaterd.trust import feed, rollout, rotation, yank
from updaterd.trust.feed import Manifest, Release, RolloutDoc

_NO_FEED = "{path}: no feed here (`updaterd publish` creates one)"


def load(feed_dir: Path) -> Manifest:
    """The feed's manifest as it is in the folder (its signature is checked when re-signed)."""
    path = feed_dir / feed.MANIFEST
    raw = feedfolder.read(feed_dir, feed.MANIFEST, feedfolder.MANIFEST_CAP)
    if raw is None:
        raise FeedError(_NO_FEED.format(path=path))
    return publish.decode_manifest(raw, path)


@dataclass
class Rewritten:
    """What a command that rewrites the manifest did (or would do, with --dry-run)."""

    manifest: Manifest
    line: str
    removed: list[str] = field(default_factory=list)  # files gone with pruned releases
    notes: list[str] = field(default_factory=list)  # what the operator should do next


def _rewrite(feed_dir: Path, key_path: Sequence[Path], change: Callable[[Manifest], str],
             *, expires: str | None = None, now: datetime | None = None,
             dry_run: bool = False) -> Rewritten:
    """Read the feed, apply `change` (it returns what it did, "" for nothing), raise the
    serial, sign, verify as the hosts would, write. Nothing is written when `change` changed
    nothing, on --dry-run, or when any check fails."""
    now = now or datetime.now(UTC)
    signers = publish.signing_keys(key_path)
    trust, manifest = publish.open_feed(feed_dir, signers)
    if manifest is None:
        raise FeedError(_NO_FEED.format(path=feed_dir / feed.MANIFEST))
    before = manifest.serial
    publish.warn_missing(feed_dir, manifest)
    what = change(manifest)
    if not what:
        return Rewritten(manifest, "nothing to change")
    if expires is not None:
        manifest.expires = publish.expiry(now, expires)
    manifest.serial += 1
    raw, signature = publish.sign_manifest(manifest, signers, now)
    publish.verify_as_hosts(raw, signature, trust, manifest.app, before, now)
    line = f"{what}; serial {manifest.serial}, expires {manifest.expires:%Y-%m-%d %H:%M} UTC"
    if dry_run:
        return Rewritten(manifest, "would have: " + line)
    publish.write_signed(feed_dir, feed_dir / feed.MANIFEST, raw, signature)
    return Rewritten(manifest, line)


def resign(*, feed_dir: Path, key_path: Sequence[Path], expires: str = "30d",
           now: datetime | None = None, dry_run: bool = False) -> Rewritten:
    """A new serial and expiry, nothing else: for a timer on the publishing side, so that an
    idle feed never expires under its hosts (and to add the signatures of more keys)."""
    return _rewrite(feed_dir, key_path, lambda m: f"re-signed {m.app}", expires=expires,
                    now=now, dry_run=dry_run)


def promote(*, feed_dir: Path, key_path: Sequence[Path], version: str, channel: str,
            dry_run: bool = False) -> Rewritten:
    """Move a release to another channel; its artifacts stay as they are."""
    if not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", channel):
        raise FeedError(f"channel {channel!r}: letters, digits, '.', '_' and '-' only")

    def change(m: Manifest) -> str:
        release = _find(m, version)
        if release.channel == channel:
            return ""
        was, release.channel = release.channel, channel
        return f"moved {m.app} {release.version} from {was} to {channel}"

    return _rewrite(feed_dir, key_path, change, dry_run=dry_run)


def yank_release(*, feed_dir: Path, key_path: Sequence[Path], version: str, why: str,
                 dry_run: bool = False) -> Rewritten:
    """Withdraw a release without removing it: hosts never install it automatically (only on
    purpose), and a host running it shows `why` in its status."""
    yank.marker(why, 100)  # a reason the manifest cannot carry is refused before anything

    def change(m: Manifest) -> str:
        release = _find(m, version)
        if yank.reason(release) == yank.normalised(why):
            return ""
        yank.apply(release, why)
        return f"yanked {m.app} {release.version}"

    return _rewrite(feed_dir, key_path, change, dry_run=dry_run)


def guard_release(*, feed_dir: Path, key_path: Sequence[Path], version: str,
                  rollout_keys: Sequence[str], dry_run: bool = False) -> Rewritten:
    """Let a rollout key steer a release (`rollout.json`): from now on hosts take the smaller
    of its share and the manifest's, and none at all until the rollout starts."""
    markers = [(k, rollout.marker(k)) for k in publish.read_public_keys(rollout_keys)]

    def change(m: Manifest) -> str:
        release = _find(m, version)
        new = [(k, g) for k, g in markers if g not in release.artifacts]
        if not new:
            return ""
        release.artifacts = [*release.artifacts, *(g for _k, g in new)]
        return (f"{m.app} {release.version} is guarded by rollout key"
                f"{'s' if len(new) > 1 else ''} " + ", ".join(k.id_hex for k, _g in new)
                + ": hosts take it as rollout.json allows")

    return _rewrite(feed_dir, key_path, change, dry_run=dry_run)


def unyank_release(*, feed_dir: Path, key_path: Sequence[Path], version: str,
                   dry_run: bool = False) -> Rewritten:
    """Undo a yank: the release is offered again, at the rollout it had before."""

    def change(m: Manifest) -> str:
        release = _find(m, version)
        if yank.reason(release) is None:
            return ""
        yank.undo(release)
        return f"unyanked {m.app} {release.version} (rollout {release.rollout}%)"

    return _rewrite(feed_dir, key_path, change, dry_run=dry_run)


def prune(*, feed_dir: Path, key_path: Sequence[Path], keep: int,
          dry_run: bool = False) -> Rewritten:
    """Keep the newest `keep` releases of each channel; the others leave the manifest, then
    their files leave the folder (never before the manifest that names them is replaced)."""
    if keep < 1:
        raise FeedError("--keep must be 1 or more")
    gone: list[Release] = []
    steered = _rollout_for_prune(feed_dir)

    def change(m: Manifest) -> str:
        by_channel: dict[str, list[Release]] = {}
        for r in m.releases:
            by_channel.setdefault(r.channel, []).append(r)
        for releases in by_channel.values():
            gone.extend(_beyond_keep(_newest_first(releases), keep, steered))
        m.releases = [r for r in m.releases if r not in gone]
        return f"pruned {', '.join(r.version for r in gone)}" if gone else ""

    done = _rewrite(feed_dir, key_path, change, dry_run=dry_run)
    named = sorted(v for v in (steered.releases if steered is not None else {})
                   if v in {r.version for r in gone})
    if named:  # signed by the rollout key, which prune does not hold
        done.notes.append(f"rollout.json still names {', '.join(named)} until the rollout key "
                          "signs it again (`updaterd rollout resign`, or its timer), which "
                          "drops them; hosts ignore entries of releases the manifest lacks")
    kept = {a.url for r in done.manifest.releases for a in r.artifacts}
    for r in gone:
        for a in r.artifacts:
            name = a.url.rsplit("/", 1)[-1]
            for path in [feed_dir / name, *feed_dir.glob(f"{glob.escape(name)}.from-*.delta")]:
                if path.name not in kept and path.is_file():
                    done.removed.append(path.name)
                    if not dry_run:
                        path.unlink()
    return done


def rollout_as_written(feed_dir: Path) -> RolloutDoc | None:
    """rollout.json as the folder holds it, unverified: for what is shown (`rollout status`)
    and what can only keep more (prune), never for what is signed again. None when there is
    none; FeedError when it cannot be read."""
    path = feed_dir / rollout.DOCUMENT
    raw = feedfolder.read(feed_dir, rollout.DOCUMENT, rollout.MAX_DOCUMENT)
    if raw is None:
        return None
    try:
        return msgspec.json.decode(raw, type=RolloutDoc)
    except (msgspec.DecodeError, msgspec.ValidationError) as e:
        raise FeedError(f"{path} cannot be read ({e}): restore the copy the controller "
                        "signed") from None


def _rollout_for_prune(feed_dir: Path) -> RolloutDoc | None:
    """rollout.json as written, or None when it cannot be read: prune then keeps by the
    manifest alone."""
    try:
        return rollout_as_written(feed_dir)
    except FeedError:
        return None


def _reaches_every_host(release: Release, steered: RolloutDoc | None) -> bool:
    """Offered to every host: at 100%, not yanked, and when guarded, active at 100% in
    rollout.json (a halted, recalled or partly rolled-out release leaves hosts behind)."""
    if release.rollout < 100 or yank.reason(release) is not None:
        return False
    if not rollout.is_guarded(release):
        return True
    entry = steered.releases.get(release.version) if steered is not None else None
    return entry is not None and entry.state == "active" and entry.share >= 100


def _beyond_keep(newest_first: list[Release], keep: int,
                 steered: RolloutDoc | None = None) -> list[Release]:
    """The releases past the newest `keep`, less those a rollout still holds hosts back to:
    while the oldest kept release is not offered to every host (a partial rollout, a yank, a
    guarded release halted, recalled or short of 100%), the hosts it leaves out run an older
    one, which stays until one kept reaches them all."""
    kept = newest_first[:keep]
    rest = newest_first[keep:]
    while rest and not _reaches_every_host(kept[-1], steered):
        kept.append(rest.pop(0))
    return rest


def _newest_first(releases: list[Release]) -> list[Release]:
    """Semantic versions by version, newest first; then tags, by publication time."""
    ordered = sorted((r for r in releases if versions.orderable(r.version)),
                     key=lambda r: versions.key(r.version), reverse=True)
    tags = sorted((r for r in releases if not versions.orderable(r.version)),
                  key=lambda r: r.published, reverse=True)
    return ordered + tags


def _oldest_first(releases: list[Release]) -> list[Release]:
    """In version order, as every list of versions is shown (tags last, by name)."""
    return sorted(releases, key=lambda r: versions.order_key(r.version))


def _find(m: Manifest, version: str) -> Release:
    found = next((r for r in m.releases if versions.same(r.version, version)), None)
    if found is None:
        raise FeedError(f"{m.app} has no release {version!r} (`updaterd feed list` shows them)")
    return found


def listing(feed_dir: Path) -> dict[str, object]:
    """Everything `feed list` shows, as plain values (its --json)."""
    manifest = load(feed_dir)
    keyset = None
    if (keyset_raw := feedfolder.read(feed_dir, rotation.KEYS, feedfolder.SMALL_CAP)) is not None:
        try:
            keyset = msgspec.json.decode(keyset_raw, type=rotation.KeySet)
        except (msgspec.DecodeError, msgspec.ValidationError) as e:
            raise FeedError(f"{feed_dir / rotation.KEYS}: cannot read the key set: {e}") from None
    return {"app": manifest.app, "serial": manifest.serial,
            "expires": manifest.expires.isoformat(),
            "keys": msgspec.to_builtins(keyset) if keyset is not None else None,
            "releases": [_listed(r) for r in _oldest_first(manifest.releases)]}


def _listed(release: Release) -> dict[str, object]:
    """A release as `feed list` shows it: a yank as a reason and the rollout it had before,
    not as the marker entry that carries them."""
    out: dict[str, object] = msgspec.to_builtins(release)
    out["yanked"] = yank.reason(release)
    out["rollout"] = yank.rollout_before(release)
    out["artifacts"] = [msgspec.to_builtins(a) for a in release.artifacts if not feed.is_marker(a)]
    out["rollout_keys"] = [k.to_base64() for k in rollout.keys_of(release)]
    return out


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
        if r["yanked"] is not None:
            out.append(f"  YANKED: {logtext.clean(str(r['yanked']))}")
        for k in r["rollout_keys"]:
            out.append(f"  guarded by rollout key {k} (rollout.json steers it)")
        for a in r["artifacts"]:
            out.append(f"  {a['platform']}: {a['url']} ({a['size']} bytes)")
    return "\n".join(out)
