"""`updaterd keygen` and `updaterd publish`: write a signed feed into a folder.

Publishing copies the artifacts in, computes sizes and digests, raises the serial and rewrites
and re-signs the manifest atomically (the signature first, then the manifest, so a reader that
sees the new manifest finds a signature for it).
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
from datetime import UTC, datetime, timedelta
from pathlib import Path

import msgspec

from updaterd import archive, delta, digests, failpoints, feed, fsutil, keys, minisign, versions
from updaterd.config import host_platform
from updaterd.errors import FeedError, SignatureError, UpdaterError
from updaterd.feed import Artifact, Manifest, Release
from updaterd.keys import KeySet
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


def _secrets(key_paths: Path | Sequence[Path]) -> list[minisign.SecretKey]:
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


def _sign(raw: bytes, comment: str, signers: list[minisign.SecretKey]) -> bytes:
    """One signature block per key, one after the other (threshold feeds)."""
    return "".join(s.sign(raw, comment) for s in signers).encode()


def _require_same_signers(feed_dir: Path, signers: list[minisign.SecretKey]) -> None:
    """The keys hosts trust for this feed must be the ones signing (row 144): those of the
    feed's latest `keys.json` when it rotated, else those that signed the manifest there."""
    mine = {s.public.id_hex for s in signers}
    keyset_path = feed_dir / keys.KEYS
    if keyset_path.exists():
        try:
            keyset = msgspec.json.decode(keyset_path.read_bytes(), type=KeySet)
            trusted = {minisign.PublicKey.parse(k).id_hex for k in keyset.keys}
        except (msgspec.DecodeError, msgspec.ValidationError, ValueError) as e:
            raise FeedError(f"{keyset_path}: cannot read the feed's key set: {e}") from None
        if len(mine & trusted) >= keyset.threshold:
            return
        where = f"the key set in {keyset_path}, threshold {keyset.threshold}"
    else:
        try:
            trusted = set(minisign.signer_ids((feed_dir / feed.SIGNATURE).read_bytes()))
        except FileNotFoundError:
            return  # a new feed: any key may start it
        except SignatureError as e:
            raise FeedError(f"{feed_dir / feed.SIGNATURE}: {e}") from None
        if trusted <= mine:  # every key that signed signs again (more may join)
            return
        where = f"{feed_dir / feed.SIGNATURE}"
    raise FeedError(
        f"{feed_dir} is signed by key {', '.join(sorted(trusted))} ({where}); signing it "
        f"with {', '.join(sorted(mine))} would break every host that follows it. Sign with "
        "the feed's key, move to a new key with `updaterd rotate-keys` (signed by the old "
        "and the new key), or pass --new-key when every host is re-configured for it")


def _artifact_entries(artifacts: list[Path], platform: str | None) -> list[tuple[Path, Artifact]]:
    """Every artifact checked and hashed before anything is written to the feed."""
    entries = []
    for path in artifacts:
        name = path.name
        if not feed.SAFE_FILE_NAME.fullmatch(name):
            raise FeedError(f"artifact name {name!r} is not a safe file name")
        if not path.is_file():
            raise FeedError(f"{path}: no such file" if not path.exists() else
                            f"{path}: not a regular file")
        try:
            d = digests.of_file(str(path))
        except OSError as e:
            raise FeedError(f"{path}: cannot read: {e.strerror or e}") from None
        entries.append((path, Artifact(platform=platform_of(name, platform), url=name,
                                       size=d.size, sha256=d.sha256, blake3=d.blake3)))
    return entries


def _extract_for_delta(path: Path, into: Path) -> Path:
    """A release as our extractor makes it on a host (with the default limits), from its full
    artifact."""
    from updaterd.config import Limits

    into.mkdir()
    with open(path, "rb") as f:
        return archive.extract(f, archive.kind_of(path.name), into, Limits().extraction(),
                               path.name)


def delta_files(feed_dir: Path, app: str, version: str, artifact: Artifact,
            earlier: list[Release], count: int) -> list[tuple[str, bytes]]:
    """The descriptor of `artifact` (in the feed folder) and its packs from the `count`
    releases before it that have an artifact for the same platform: (file name, bytes), the
    descriptor last. Empty for a single executable, or with nothing to build from."""
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
            log.warning("%s: no delta packs: it does not extract (%s)", artifact.url, e)
            return []
        desc, entries = delta.describe(new_root, app, version, artifact)
        out = []
        for base, path in bases:
            try:
                base_root = _extract_for_delta(path, Path(tmp) / f"base-{base}")
            except (UpdaterError, OSError) as e:
                log.warning("%s: no delta pack from %s: %s does not extract (%s)",
                            artifact.url, base, path.name, e)
                continue
            made = delta.make_pack(new_root, entries, base_root, base,
                                   f"{artifact.url}.from-{base}.delta")
            if made is None:
                log.info("%s: no delta pack from %s: hosts would need more than 2^%d bytes "
                         "of memory to build from it", artifact.url, base,
                         delta.MAX_USABLE_WINDOW_LOG)
                continue
            pack, data = made
            why = delta.unusable(pack, 0, artifact.size)
            if why:
                log.info("%s: no delta pack from %s: %s", artifact.url, base, why)
                continue
            desc.packs.append(pack)
            out.append((pack.url, data))
        if not desc.packs:
            return []  # a descriptor with no pack would only cost hosts a download
        out.append((f"{artifact.url}.delta.zst", delta.compress(desc)))
        return out


def publish(*, feed_dir: Path, key_path: Path | Sequence[Path], app: str, version: str,
            artifacts: list[Path], channel: str = "stable", notes: str = "",
            expires: str = "30d", rollout: int = 100, platform: str | None = None,
            now: datetime | None = None, new_key: bool = False,
            delta_from: int = 2) -> Manifest:
    """Add (or replace) `version` in the feed at `feed_dir`, re-sign it; returns the manifest.

    Several keys sign one after the other, for hosts with a `threshold` above 1. Everything is
    checked before the feed folder is touched, and at every instant the folder holds a
    manifest that its signature file verifies (row 144). Each archive gets a delta descriptor
    and packs from the `delta_from` releases before it (see `delta`)."""
    try:
        versions.parse(version)
    except ValueError as e:
        raise FeedError(str(e)) from None
    if not versions.is_safe_name(version):
        raise FeedError(f"version {version!r} is not a safe name")
    if not 0 <= rollout <= 100:
        raise FeedError("--rollout must be between 0 and 100")
    signers = _secrets(key_path)
    if not new_key:
        _require_same_signers(feed_dir, signers)
    now = now or datetime.now(UTC)
    entries = _artifact_entries(artifacts, platform)
    manifest_path = feed_dir / feed.MANIFEST
    if manifest_path.exists():
        try:
            manifest = msgspec.json.decode(manifest_path.read_bytes(), type=Manifest)
        except (msgspec.DecodeError, msgspec.ValidationError) as e:
            raise FeedError(f"{manifest_path}: cannot read the existing feed: {e}") from None
        if manifest.app != app:
            raise FeedError(f"{manifest_path} is the feed of {manifest.app!r}, not {app!r}")
        manifest.serial += 1
    else:
        manifest = Manifest(schema=1, app=app, serial=1, expires=now, releases=[])
    try:
        lifetime = parse_duration(expires)
    except ValueError as e:
        raise FeedError(f"--expires: {e}") from None
    manifest.expires = (now + timedelta(seconds=lifetime)).replace(microsecond=0)
    release = Release(version=version, published=now.replace(microsecond=0), channel=channel,
                      notes=notes, rollout=rollout, artifacts=[a for _, a in entries])
    old = manifest.release(version, channel)
    if old is not None and not artifacts:
        release.artifacts = old.artifacts  # re-signed with new notes, rollout or expiry
    elif not artifacts:
        raise FeedError(f"{app} {version} has no artifact: name at least one file to publish")
    feed_dir.mkdir(parents=True, exist_ok=True)
    for path, artifact in entries:
        target = feed_dir / artifact.url
        if path.resolve() != target.resolve():
            tmp = fsutil.temp_name(target)
            shutil.copyfile(path, tmp)
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
            os.replace(tmp, target)
    earlier = [r for r in manifest.releases if r.version != version]
    for _path, artifact in entries:
        for name, data in delta_files(feed_dir, app, version, artifact, earlier, delta_from):
            fsutil.atomic_write(feed_dir / name, data, mode=0o644)
            if name.endswith(".delta.zst"):
                d = digests.Digests()
                d.update(data)
                release.artifacts.append(Artifact(
                    platform=delta.descriptor_platform(artifact.platform), url=name,
                    size=len(data), sha256=d.sha256, blake3=d.blake3))
    fsutil.fsync_dir(feed_dir)
    manifest.releases = [r for r in manifest.releases
                         if not (r.version == version and r.channel == channel)]
    manifest.releases.append(release)
    with contextlib.suppress(ValueError):
        manifest.releases.sort(key=lambda r: versions.key(r.version))
    raw = feed.encode(manifest)
    comment = f"timestamp:{int(now.timestamp())}\tfile:{feed.MANIFEST}\tapp:{app}" \
              f"\tserial:{manifest.serial}"
    old_mtime = manifest_path.stat().st_mtime if manifest_path.exists() else None
    signature = _sign(raw, comment, signers)
    sig_path = feed_dir / feed.SIGNATURE
    # Two renames cannot be one: for the instant between them the signature file carries the
    # new blocks and the old ones, so the old and the new manifest both verify.
    with contextlib.suppress(FileNotFoundError):
        fsutil.atomic_write(sig_path, signature + sig_path.read_bytes())
    failpoints.hit("publish.after_signature")
    fsutil.atomic_write(manifest_path, raw)
    fsutil.atomic_write(sig_path, signature)
    if old_mtime is not None:
        # Static servers derive ETag and Last-Modified from mtime (whole seconds) and size: a
        # second publish within the same second could otherwise look unchanged (304) to hosts.
        mtime = max(time.time(), old_mtime + 1)
        os.utime(manifest_path, (mtime, mtime))
    return manifest


def rotate_keys(*, feed_dir: Path, app: str, new_keys: list[Path], sign_with: list[Path],
                threshold: int = 1) -> KeySet:
    """Write the feed's next `keys.json` (and `keys-<N>.json`, for hosts that missed some),
    signed by `sign_with`: enough of the keys in use and enough of the new ones."""
    signers = _secrets(sign_with)
    try:
        pubs = [minisign.PublicKey.parse(p.read_text()).to_base64() for p in new_keys]
    except OSError as e:
        raise SignatureError(f"cannot read a public key: {e.strerror}") from None
    except ValueError as e:
        raise SignatureError(str(e)) from None
    if not pubs:
        raise FeedError("a key set needs at least one key")
    if threshold > len(set(pubs)):
        raise FeedError(f"threshold {threshold} is more than the {len(set(pubs))} keys given")
    feed_dir.mkdir(parents=True, exist_ok=True)
    current = feed_dir / keys.KEYS
    version = 1
    if current.exists():
        try:
            version = msgspec.json.decode(current.read_bytes(), type=KeySet).version + 1
        except (msgspec.DecodeError, msgspec.ValidationError) as e:
            raise FeedError(f"{current}: cannot read the existing key set: {e}") from None
    keyset = KeySet(schema=1, app=app, version=version, keys=pubs, threshold=threshold)
    raw = feed.encode(keyset)
    comment = f"timestamp:{int(time.time())}\tfile:{keys.KEYS}\tapp:{app}\tversion:{version}"
    sig = _sign(raw, comment, signers)
    for name in (keys.versioned(version), keys.KEYS):
        fsutil.atomic_write(feed_dir / f"{name}.minisig", sig)
        fsutil.atomic_write(feed_dir / name, raw)
    return keyset
