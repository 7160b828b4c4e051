"""`updaterd keygen`, `updaterd publish` and `updaterd rotate-keys`: write a signed feed.

Publishing copies the artifacts in under names of its own (`APP-VERSION-PLATFORM.EXT`),
computes sizes and digests, raises the serial and rewrites and re-signs the manifest
atomically (the signature first, then the manifest, so a reader that sees the new manifest finds
a signature for it). A published version never changes (H155), and nothing is written that
a host trusting the feed's keys would refuse (H156): the result is verified first, with the
hosts' own checks.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import msgspec

from updaterd import failpoints, fsutil, versions
from updaterd.errors import FeedError, SignatureError, UpdaterError
from updaterd.host.config import host_platform
from updaterd.install import delta
from updaterd.release import feedfolder
from updaterd.trust import archive, digests, feed, minisign, rotation, yank
from updaterd.trust import rollout as rollout_guard
from updaterd.trust.feed import Artifact, Manifest, Release
from updaterd.units import parse_duration

log = logging.getLogger("updaterd.publish")
_PLATFORM_IN_NAME = re.compile(
    r"(linux|darwin|windows|freebsd)[-_](x86_64|aarch64|arm64|armv7l?|i686|riscv64|ppc64le|s390x)")


def keygen(out_prefix: str, force: bool = False) -> tuple[Path, Path]:
    """Write PREFIX.pub and PREFIX.key (unencrypted minisign formats); returns both paths."""
    pub, key = Path(out_prefix + ".pub"), Path(out_prefix + ".key")
    for p in (pub, key):
        if p.exists() and not force:
            raise UpdaterError(f"{p} exists; refusing to overwrite a key")
    secret = minisign.SecretKey.generate()
    try:
        fsutil.atomic_write(key, secret.to_file().encode(), mode=0o600)
        fsutil.atomic_write(pub, secret.public.to_file().encode(), mode=0o644)
    except OSError as e:
        raise UpdaterError(f"cannot write {key.parent}/: {e.strerror or e}") from None
    return pub, key


def platform_of(file_name: str, explicit: str | None) -> str:
    if explicit:
        return explicit
    m = _PLATFORM_IN_NAME.search(file_name)
    return f"{m.group(1)}-{m.group(2)}" if m else host_platform()


def signing_keys(key_paths: Path | Sequence[Path]) -> list[minisign.SecretKey]:
    paths = [key_paths] if isinstance(key_paths, Path) else list(key_paths)
    if not paths:
        raise SignatureError("no signing key given")
    out = []
    for p in paths:
        try:
            out.append(minisign.SecretKey.parse(p.read_text()))
        except OSError as e:
            raise SignatureError(f"cannot read {p}: {e.strerror}") from None
    return out


def sign(raw: bytes, comment: str, signers: list[minisign.SecretKey]) -> bytes:
    """One signature block per key, one after the other (threshold feeds)."""
    return "".join(s.sign(raw, comment) for s in signers).encode()


@dataclass(frozen=True)
class Trust:
    """The keys hosts verify this feed with now, and how many of them must sign."""

    keys: list[minisign.PublicKey]
    threshold: int
    where: str  # what says so, for messages


def current_trust(feed_dir: Path, signers: list[minisign.SecretKey]) -> Trust | None:
    """What hosts trust for the feed at `feed_dir` (None: a new feed). The latest `keys.json`
    when the feed rotated; else the keys that signed the manifest there, all of which must be
    among `signers` (their public halves are what the publisher has)."""
    keyset_path = feed_dir / rotation.KEYS
    if (keyset_raw := feedfolder.read(feed_dir, rotation.KEYS, feedfolder.SMALL_CAP)) is not None:
        try:
            keyset = msgspec.json.decode(keyset_raw, type=rotation.KeySet)
            listed = [minisign.PublicKey.parse(k) for k in keyset.keys]
        except (msgspec.DecodeError, msgspec.ValidationError, ValueError) as e:
            raise FeedError(f"{keyset_path}: cannot read the feed's key set: {e}") from None
        return Trust(listed, keyset.threshold,
                     f"the key set in {keyset_path}, threshold {keyset.threshold}")
    signature = feedfolder.read(feed_dir, feed.SIGNATURE, feedfolder.SIGNATURE_CAP)
    if signature is None:
        return None
    try:
        ids = set(minisign.signer_ids(signature))
    except SignatureError as e:
        raise FeedError(f"{feed_dir / feed.SIGNATURE}: {e}") from None
    mine = {s.public.id_hex: s.public for s in signers}
    if not ids <= mine.keys():
        raise FeedError(
            f"{feed_dir} is signed by key {', '.join(sorted(ids))} "
            f"({feed_dir / feed.SIGNATURE}); signing it with {', '.join(sorted(mine))} would "
            "break every host that follows it. Sign with the feed's key, move to a new key "
            "with `updaterd rotate-keys` (signed by the old and the new key), or pass "
            "--new-key when every host is re-configured for it")
    return Trust([mine[i] for i in sorted(ids)], len(ids), str(feed_dir / feed.SIGNATURE))


def require_signed_as_is(feed_dir: Path, known: list[minisign.PublicKey]) -> bytes | None:
    """The manifest in the folder, refused when a key we know signed it and it no longer
    verifies: someone edited it by hand, and re-signing it would launder the edit to every
    host. None when there is no manifest yet."""
    raw = feedfolder.read(feed_dir, feed.MANIFEST, feedfolder.MANIFEST_CAP)
    if raw is None:
        return None
    sig = feedfolder.read(feed_dir, feed.SIGNATURE, feedfolder.SIGNATURE_CAP)
    if sig is None:
        return raw  # an unsigned feed: nothing to launder
    by_id = {k.id_hex: k for k in known}
    try:
        signed_by = [by_id[i] for i in minisign.signer_ids(sig) if i in by_id]
    except SignatureError as e:
        raise FeedError(f"{feed_dir / feed.SIGNATURE}: {e}") from None
    if signed_by:
        try:
            minisign.verify_threshold(raw, sig, signed_by, 1)
        except SignatureError:
            raise FeedError(f"{feed_dir / feed.MANIFEST} does not verify with its signature "
                            f"(edited by hand?); refusing to sign it again. Restore the "
                            f"signed copy, or publish into a new folder") from None
    return raw


def open_feed(feed_dir: Path, signers: list[minisign.SecretKey],
              new_key: bool = False) -> tuple[Trust | None, Manifest | None]:
    """What hosts trust for the feed at `feed_dir`, and its manifest as signed (None: a new
    feed), for a command that will sign it again: refused when the keys given are not enough
    for those hosts, or when the manifest was edited by hand. With `new_key` the hosts are being
    re-configured, so whatever they trust now does not bind."""
    trust = None if new_key else current_trust(feed_dir, signers)
    if trust is not None and (missing := missing_signers(trust, signers)):
        raise FeedError(f"{feed_dir} is verified by hosts with {trust.where}; the keys given "
                        f"are not enough: add --key for {missing}")
    known = [s.public for s in signers] + (trust.keys if trust is not None else [])
    raw = require_signed_as_is(feed_dir, known)
    return trust, None if raw is None else decode_manifest(raw, feed_dir / feed.MANIFEST)


def decode_manifest(raw: bytes, path: Path) -> Manifest:
    try:
        return msgspec.json.decode(raw, type=Manifest)
    except (msgspec.DecodeError, msgspec.ValidationError) as e:
        raise FeedError(f"{path}: cannot read the feed: {e}") from None


def expiry(now: datetime, expires: str) -> datetime:
    """When a manifest signed at `now` for `--expires` stops being accepted."""
    try:
        lifetime = parse_duration(expires)
    except ValueError as e:
        raise FeedError(f"--expires: {e}") from None
    return (now + timedelta(seconds=lifetime)).replace(microsecond=0)


def sign_manifest(manifest: Manifest, signers: list[minisign.SecretKey],
                  now: datetime) -> tuple[bytes, bytes]:
    """The manifest's bytes and their signature (a block per key)."""
    raw = feed.encode(manifest)
    comment = f"timestamp:{int(now.timestamp())}\tfile:{feed.MANIFEST}\tapp:{manifest.app}" \
              f"\tserial:{manifest.serial}"
    return raw, sign(raw, comment, signers)


def missing_signers(trust: Trust, signers: list[minisign.SecretKey]) -> str:
    """The key IDs of `trust` that no --sign/--key gives, when too few of them sign."""
    mine = {s.public.raw for s in signers}
    signing = [k for k in trust.keys if k.raw in mine]
    if len(signing) >= trust.threshold:
        return ""
    return ", ".join(k.id_hex for k in trust.keys if k.raw not in mine)


def canonical_name(app: str, version: str, platform: str, given: str) -> str:
    """`APP-VERSION-PLATFORM.EXT`: the name an artifact is stored under in the feed, whatever
    the file was called (a CI job's fixed `dist/app.tar.gz` included), so no two versions
    ever share a file (H155). EXT is the archive's own suffix; a raw executable has none."""
    name = f"{app}-{version}-{platform}{archive.suffix_of(given)}"
    if not feed.SAFE_FILE_NAME.fullmatch(name):
        raise FeedError(f"artifact name {name!r} (app, version, platform) is not a safe file "
                        "name")
    return name


def _artifact_entries(artifacts: list[Path], platform: str | None, app: str,
                      version: str) -> list[tuple[Path, Artifact]]:
    """Every artifact checked and hashed before anything is written to the feed."""
    entries: list[tuple[Path, Artifact]] = []
    for path in artifacts:
        if not path.is_file():
            raise FeedError(f"{path}: no such file" if not path.exists() else
                            f"{path}: not a regular file")
        where = platform_of(path.name, platform)
        if where in feed.MARKER_PLATFORMS or where.endswith(delta.SUFFIX):
            raise FeedError(f"platform {where!r} is reserved: it marks a yank, a rollout key "
                            "or a delta descriptor, which no host installs")
        if any(a.platform == where for _, a in entries):
            raise FeedError(f"two artifacts for platform {where}: {entries[0][0]} and {path} "
                            "(name each platform in the file name, or publish them one by one "
                            "with --platform)")
        try:
            d = digests.of_file(str(path))
        except OSError as e:
            raise FeedError(f"{path}: cannot read: {e.strerror or e}") from None
        entries.append((path, Artifact(platform=where,
                                       url=canonical_name(app, version, where, path.name),
                                       size=d.size, sha256=d.sha256, blake3=d.blake3)))
    return entries


def _same_bytes(a: Artifact, b: Artifact) -> bool:
    return (a.size, a.sha256, a.blake3) == (b.size, b.sha256, b.blake3)


def _extract_for_delta(path: Path, into: Path) -> Path:
    """A release as our extractor makes it on a host (with the default limits), from its full
    artifact."""
    from updaterd.host.config import Limits

    into.mkdir()
    with open(path, "rb") as f:
        return archive.extract(f, archive.kind_of(path.name), into, Limits().extraction(),
                               path.name)


def delta_files(feed_dir: Path, app: str, version: str, artifact: Artifact,
                earlier: list[Release], count: int,
                skipped: list[str] | None = None) -> list[tuple[str, bytes]]:
    """The descriptor of `artifact` (in the feed folder) and its packs from the `count`
    releases before it that have an artifact for the same platform: (file name, bytes), the
    descriptor last. Empty for a single executable, or with nothing to build from. Each
    pack not made is said in `skipped` (a line for the publisher), else logged."""
    def skip(why: str) -> None:
        if skipped is None:
            log.warning("%s: %s", artifact.url, why)
        else:
            skipped.append(why)

    if count <= 0 or archive.kind_of(artifact.url) == "raw":
        return []
    bases: list[tuple[str, Path]] = []
    for r in sorted(earlier, key=lambda r: versions.key(r.version), reverse=True):
        a = next((a for a in r.artifacts if a.platform == artifact.platform), None)
        if a is not None and (feed_dir / a.url).is_file() and \
                archive.kind_of(a.url) != "raw" and len(bases) < count:
            bases.append((r.version, feed_dir / a.url))
    if not bases:
        return []
    with tempfile.TemporaryDirectory(prefix="updaterd-delta-") as tmp:
        try:
            new_root = _extract_for_delta(feed_dir / artifact.url, Path(tmp) / "new")
        except (UpdaterError, OSError) as e:  # deltas save bytes; they never stop a publish
            skip(f"no delta packs: it does not extract ({e})")
            return []
        desc, entries = delta.describe(new_root, app, version, artifact)
        out = []
        for base, path in bases:
            try:
                base_root = _extract_for_delta(path, Path(tmp) / f"base-{base}")
            except (UpdaterError, OSError) as e:
                skip(f"no delta pack from {base}: {path.name} does not extract ({e})")
                continue
            made = delta.make_pack(new_root, entries, base_root, base,
                                   f"{artifact.url}.from-{base}.delta")
            if made is None:
                skip(f"no delta pack from {base}: hosts would need more than "
                     f"2^{delta.MAX_USABLE_WINDOW_LOG} bytes of memory to build from it")
                continue
            pack, data = made
            why = delta.unusable(pack, 0, artifact.size)
            if why:
                skip(f"no delta pack from {base}: {why}")
                continue
            desc.packs.append(pack)
            out.append((pack.url, data))
        if not desc.packs:
            return []  # a descriptor with no pack would only cost hosts a download
        out.append((f"{artifact.url}.delta.zst", delta.compress(desc)))
        return out


@dataclass
class Published:
    """What `publish` did: the manifest (as written, or as it stands when nothing changed) and
    a line per thing done, for the summary it prints."""

    manifest: Manifest
    changed: bool
    lines: list[str] = field(default_factory=list)


def _check_immutable(manifest: Manifest, version: str,
                     entries: list[tuple[Path, Artifact]]) -> tuple[Release | None, list[str]]:
    """The release already published as `version` (None: a new version), and the platforms the
    new artifacts add to it. Raises FeedError when one would change bytes hosts were promised."""
    same = [r for r in manifest.releases if versions.same(r.version, version)]
    if not same:
        return None, []
    old = same[0]
    if old.version != version:
        raise FeedError(f"{manifest.app} {version} is published already, as {old.version}")
    added = []
    for _path, artifact in entries:
        promised = next((a for a in old.artifacts if a.platform == artifact.platform), None)
        if promised is None:
            added.append(artifact.platform)
        elif not _same_bytes(promised, artifact):
            raise FeedError(
                f"{manifest.app} {version} is already published with other bytes for "
                f"{artifact.platform} ({promised.size} bytes, sha256 {promised.sha256}; these "
                f"are {artifact.size} bytes, sha256 {artifact.sha256}). A published version "
                "never changes, since hosts were promised those bytes: publish a new version "
                f"(and `updaterd feed yank` this one if it is bad)")
    return old, added


def _check_names(feed_dir: Path, manifest: Manifest, entries: list[tuple[Path, Artifact]]) -> None:
    """No file the signed manifest points to is overwritten with other content. A file of
    the same name that no release names is a leftover of a publish that did not finish."""
    promised = {a.url: a for r in manifest.releases for a in r.artifacts}
    for _path, artifact in entries:
        other = promised.get(artifact.url)
        if other is not None and not _same_bytes(other, artifact):
            raise FeedError(f"{feed_dir / artifact.url} holds bytes the signed manifest "
                            "promises; refusing to overwrite it")


def warn_missing(feed_dir: Path, manifest: Manifest) -> list[str]:
    """Files the signed manifest names that the folder lacks or holds at another size: hosts
    cannot install those releases. Said, not refused: the publish at hand (often the fix)
    must not be held up by an old loss, but nobody should learn of it from a host."""
    found = []
    for r in manifest.releases:
        for a in r.artifacts:
            if feed.is_marker(a) or "://" in a.url:
                continue
            try:
                size = (feed_dir / a.url).stat().st_size
            except OSError:
                size = None
            if size != a.size:
                what = "is missing" if size is None else f"holds {size} bytes, not {a.size}"
                found.append(f"{feed_dir / a.url} {what}: hosts cannot install "
                             f"{manifest.app} {r.version} from this feed: put the published "
                             "file back (`updaterd feed check` lists every such file)")
    for line in found:
        log.warning("%s", line)
    return found


def verify_as_hosts(raw: bytes, signature: bytes, trust: Trust | None, app: str,
                    serial: int | None, now: datetime) -> None:
    """The manifest about to be written, checked by the hosts' own `verify_manifest` as a
    host trusting `trust` would (H156); FeedError says why a host would refuse it."""
    if trust is None:
        return
    try:
        feed.verify_manifest(raw, signature, keys=trust.keys, threshold=trust.threshold,
                             app=app, stored_serial=serial, stored_digest=None,
                             cycle_start=now, require_signature=True)
    except FeedError as e:
        raise FeedError(f"hosts trusting {trust.where} would refuse this feed ({e}); "
                        "nothing was written") from None


def read_public_keys(given: Sequence[str]) -> list[minisign.PublicKey]:
    """Public keys named as a `.pub` file or as its base64 line."""
    found = []
    for text in given:
        path = Path(text)
        try:
            found.append(minisign.PublicKey.parse(path.read_text() if path.is_file() else text))
        except (OSError, ValueError) as e:
            raise FeedError(f"{text}: {e}") from None
    return found


def publish(*, feed_dir: Path, key_path: Path | Sequence[Path], app: str, version: str,
            artifacts: list[Path], channel: str = "stable", notes: str | None = None,
            expires: str = "30d", rollout: int | None = None, platform: str | None = None,
            now: datetime | None = None, new_key: bool = False,
            delta_from: int = 2, dry_run: bool = False,
            rollout_keys: Sequence[str] = ()) -> Published:
    """Add `version` to the feed at `feed_dir` and re-sign it.

    A published version is immutable: the same bytes again change nothing, other bytes are
    refused; an artifact for a platform the release lacks may be added. Several keys sign one
    after the other, for hosts with a `threshold` above 1. Everything is checked, and the new
    manifest verified as the hosts would verify it, before the feed folder is touched; at every
    instant the folder holds a manifest that its signature file verifies (G144). Each
    archive gets a delta descriptor and packs from the `delta_from` releases before it.
    `rollout_keys` (key files or base64 lines) may steer the release through rollout.json."""
    guards = [(k, rollout_guard.marker(k)) for k in read_public_keys(rollout_keys)]
    try:
        versions.parse(version)
    except ValueError as e:
        raise FeedError(str(e)) from None
    if not versions.is_safe_name(version):
        raise FeedError(f"version {version!r} is not a safe name")
    if rollout is not None and not 0 <= rollout <= 100:
        raise FeedError("--rollout must be between 0 and 100")
    signers = signing_keys(key_path)
    trust, existing = open_feed(feed_dir, signers, new_key)
    now = now or datetime.now(UTC)
    entries = _artifact_entries(artifacts, platform, app, version)
    manifest_path = feed_dir / feed.MANIFEST
    serial = None
    if existing is not None:
        manifest = existing
        if manifest.app != app:
            raise FeedError(f"{manifest_path} is the feed of {manifest.app!r}, not {app!r}")
        serial = manifest.serial
    else:
        manifest = Manifest(schema=1, app=app, serial=0, expires=now, releases=[])
    old, added = _check_immutable(manifest, version, entries)
    warn_missing(feed_dir, manifest)
    if old is not None and yank.reason(old) is not None and rollout is not None:
        raise FeedError(f"{app} {old.version} is yanked: `updaterd feed unyank` it before "
                        "changing its rollout")
    _check_names(feed_dir, manifest, entries)
    # Of an existing release only what is given on purpose changes (a re-run CI job with the
    # default rollout must not widen a rollout someone narrowed).
    edits = []
    if old is not None and rollout is not None and rollout != old.rollout:
        edits.append(f"rollout {old.rollout}% -> {rollout}%")
    if old is not None and notes is not None and notes != old.notes:
        edits.append("new notes")
    guards = [(k, g) for k, g in guards if old is None or g not in old.artifacts]
    if old is not None and guards:
        edits.append("guarded by a rollout key")
    if old is not None and not added and not edits:
        where = "" if old.channel == channel else \
            f"; it stays on {old.channel} (`updaterd feed promote` moves it)"
        what = "these bytes" if entries else "this rollout and these notes"
        return Published(manifest, False, [f"{app} {version} is already published with "
                                           f"{what}: nothing changed{where}"])
    if old is None and not artifacts:
        raise FeedError(f"{app} {version} has no artifact: name at least one file to publish")
    manifest.expires = expiry(now, expires)
    manifest.serial += 1
    if old is None:
        release = Release(version=version, published=now.replace(microsecond=0),
                          channel=channel, notes=notes or "",
                          rollout=100 if rollout is None else rollout, artifacts=[])
    else:  # new notes or rollout, or an artifact for another platform: the rest stays
        release = old
        release.notes = old.notes if notes is None else notes
        release.rollout = old.rollout if rollout is None else rollout
    new_entries = [(p, a) for p, a in entries if old is None or a.platform in added]
    release.artifacts = [*release.artifacts, *(a for _, a in new_entries),
                         *(g for _, g in guards)]
    lines = [f"{app} {version}: {release.channel}, rollout {release.rollout}%, serial "
             f"{manifest.serial}, expires {manifest.expires:%Y-%m-%d %H:%M} UTC"
             + (f" ({', '.join(edits)})" if edits else "")]
    lines += [f"  {a.platform}: {a.url} ({_size(a.size)}, from {p})" for p, a in new_entries]
    lines += [f"  guarded by rollout key {k.to_base64()}: hosts take it as rollout.json allows"
              for k, _g in guards]
    if dry_run:
        return Published(manifest, False, ["would publish " + lines[0], *lines[1:]])
    feed_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    try:
        for path, artifact in new_entries:
            target = feed_dir / artifact.url
            tmp = fsutil.temp_name(target)
            shutil.copyfile(path, tmp)
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
            os.replace(tmp, target)
            written.append(target)
        earlier = [r for r in manifest.releases if r.version != version]
        for _path, artifact in new_entries:
            skipped: list[str] = []
            for name, data in delta_files(feed_dir, app, version, artifact, earlier,
                                          delta_from, skipped):
                fsutil.atomic_write(feed_dir / name, data, mode=0o644)
                written.append(feed_dir / name)
                if name.endswith(".delta.zst"):
                    d = digests.Digests()
                    d.update(data)
                    release.artifacts.append(Artifact(
                        platform=delta.descriptor_platform(artifact.platform), url=name,
                        size=len(data), sha256=d.sha256, blake3=d.blake3))
                else:
                    base = name.rsplit(".from-", 1)[-1].removesuffix(".delta")
                    lines.append(f"  delta from {base}: {_size(len(data))} "
                                 f"({len(data) / artifact.size:.1%} of the artifact)")
            lines += [f"  {why}" for why in skipped]
        fsutil.fsync_dir(feed_dir)
        manifest.releases = [r for r in manifest.releases if r.version != version]
        manifest.releases.append(release)
        with contextlib.suppress(ValueError):
            manifest.releases.sort(key=lambda r: versions.key(r.version))
        raw, signature = sign_manifest(manifest, signers, now)
        verify_as_hosts(raw, signature, trust, app, serial, now)
    except BaseException:
        for path in written:  # files no manifest names: a refused publish leaves nothing
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        raise
    write_signed(feed_dir, manifest_path, raw, signature)
    return Published(manifest, True, ["published " + lines[0], *lines[1:]])


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB"):
        if n < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def write_signed(feed_dir: Path, manifest_path: Path, raw: bytes, signature: bytes,
                 sig_path: Path | None = None) -> None:
    """Replace the manifest (or another signed document: rollout.json and `sig_path`) and its
    signature so that at every instant the folder holds a document its signature verifies."""
    old_mtime = manifest_path.stat().st_mtime if manifest_path.exists() else None
    sig_path = sig_path or feed_dir / feed.SIGNATURE
    # Two renames cannot be one: for the instant between them the signature file carries the
    # new blocks and the old ones, so the old and the new manifest both verify. Of the old file
    # only what parses as signatures is carried (J171: never bytes read through a link).
    if old := feedfolder.signature_blocks(sig_path.parent, sig_path.name):
        fsutil.atomic_write(sig_path, signature + old)
    failpoints.hit("publish.after_signature")
    fsutil.atomic_write(manifest_path, raw)
    fsutil.atomic_write(sig_path, signature)
    if old_mtime is not None:
        # Static servers derive ETag and Last-Modified from mtime (whole seconds) and size: a
        # second publish within the same second could otherwise look unchanged (304) to hosts.
        mtime = max(time.time(), old_mtime + 1)
        os.utime(manifest_path, (mtime, mtime))


def rotate_keys(*, feed_dir: Path, app: str, new_keys: list[Path], sign_with: list[Path],
                threshold: int = 1, dry_run: bool = False) -> rotation.KeySet:
    """Write the feed's next `keys.json` (and `keys-<N>.json`, for hosts that missed some),
    signed by `sign_with`: enough of the keys in use and enough of the new ones.

    Before a byte is written the set is checked as the hosts check it (`rotation.rotate`): as a
    host trusting the keys in use, and as one trusting only the new keys (H156). A set
    that either would refuse is refused here, naming the --sign that is missing."""
    signers = signing_keys(sign_with)
    try:
        listed = [minisign.PublicKey.parse(p.read_text()) for p in new_keys]
    except OSError as e:
        raise SignatureError(f"cannot read a public key: {e.strerror}") from None
    except ValueError as e:
        raise SignatureError(str(e)) from None
    pubs = [k.to_base64() for k in listed]
    if not pubs:
        raise FeedError("a key set needs at least one key")
    if threshold > len(set(pubs)):
        raise FeedError(f"threshold {threshold} is more than the {len(set(pubs))} keys given")
    current = current_trust_for_rotation(feed_dir, signers)
    new = Trust(listed, threshold, f"the new key set (threshold {threshold})")
    files = {k.id_hex: p for k, p in zip(listed, new_keys, strict=True)}
    for trust in (t for t in (current, new) if t is not None):
        if missing := missing_signers(trust, signers):
            named = ", ".join(f"{i} ({_secret_beside(files[i])})" if i in files else
                              f"{i} (a key the feed is signed with now)"
                              for i in missing.split(", "))
            raise FeedError(f"{trust.where} must sign the new key set, {trust.threshold} of "
                            f"its keys, and too few do: add --sign for key {named}; nothing "
                            "was written")
    keyset_path = feed_dir / rotation.KEYS
    version = 1
    if (keyset_raw := feedfolder.read(feed_dir, rotation.KEYS, feedfolder.SMALL_CAP)) is not None:
        try:
            version = msgspec.json.decode(keyset_raw, type=rotation.KeySet).version + 1
        except (msgspec.DecodeError, msgspec.ValidationError) as e:
            raise FeedError(f"{keyset_path}: cannot read the existing key set: {e}") from None
    keyset = rotation.KeySet(schema=1, app=app, version=version, keys=pubs, threshold=threshold)
    raw = feed.encode(keyset)
    comment = f"timestamp:{int(time.time())}\tfile:{rotation.KEYS}\tapp:{app}\tversion:{version}"
    sig = sign(raw, comment, signers)
    for trust in (t for t in (current, new) if t is not None):
        _verify_rotation_as_host(app, trust, raw, sig)
    if dry_run:
        return keyset
    feed_dir.mkdir(parents=True, exist_ok=True)
    for name in (rotation.versioned(version), rotation.KEYS):
        fsutil.atomic_write(feed_dir / f"{name}.minisig", sig)
        fsutil.atomic_write(feed_dir / name, raw)
    return keyset


def _secret_beside(public: Path) -> str:
    """The secret key file that goes with a public one (keygen writes PREFIX.pub and .key)."""
    return str(public.with_suffix(".key")) if public.suffix == ".pub" else \
        f"the secret key of {public}"


def current_trust_for_rotation(feed_dir: Path,
                               signers: list[minisign.SecretKey]) -> Trust | None:
    """The keys in use, for a rotation: as for a publish, but a manifest signed by a key none of
    `signers` holds is named as the --sign that is missing."""
    try:
        return current_trust(feed_dir, signers)
    except FeedError as e:
        if (feed_dir / rotation.KEYS).exists():
            raise
        signature = feedfolder.read(feed_dir, feed.SIGNATURE, feedfolder.SIGNATURE_CAP) or b""
        ids = ", ".join(sorted(minisign.signer_ids(signature)))
        raise FeedError(f"{feed_dir}'s manifest is signed by key {ids}, which hosts trust now: "
                        f"it must sign the new key set too: add --sign for key {ids}; nothing "
                        "was written") from e


def _verify_rotation_as_host(app: str, trust: Trust, raw: bytes, sig: bytes) -> None:
    """`rotation.rotate`, the hosts' own decision, on the new key set, by a host trusting
    `trust`."""
    try:
        rotation.rotate(app, rotation.Keys(trust.keys, trust.threshold, 0), raw, sig)
    except FeedError as e:
        raise FeedError(f"hosts trusting {trust.where} would refuse this key set ({e}); "
                        "nothing was written") from None
