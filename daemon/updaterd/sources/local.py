"""`source = "directory"` (and `file://` manifests): a feed in a local folder.

For air-gapped hosts and the demo. Artifacts must sit in the same folder as the manifest; they
are copied into the cache and hashed in one pass, exactly like a download.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path
from typing import BinaryIO

import trio

from updaterd import failpoints, fsutil, keys, minisign
from updaterd.cachefile import Expected, ProgressFn, fresh_part, verify_expected
from updaterd.config import AppConfig, Limits
from updaterd.digests import Digests
from updaterd.errors import DigestMismatch, DownloadError, FeedError
from updaterd.feed import MANIFEST, SAFE_FILE_NAME, SIGNATURE, Artifact, TrustedFeed
from updaterd.sources import trust
from updaterd.state import AppState
from updaterd.units import parse_size


def _open_plain(path: Path) -> int | None:
    """Open a feed file for reading, refusing anything but a plain file, without blocking: a
    FIFO, device, socket or symlink planted in the folder is an error, never a hang (row 135).
    None when the file does not exist."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as e:
        why = "a symbolic link" if e.errno == errno.ELOOP else e.strerror or str(e)
        raise FeedError(f"{path}: {why}; a feed folder holds plain files only") from None
    kind = stat.S_IFMT(os.fstat(fd).st_mode)
    if kind != stat.S_IFREG:
        os.close(fd)
        names = {stat.S_IFIFO: "a FIFO", stat.S_IFCHR: "a device", stat.S_IFBLK: "a device",
                 stat.S_IFSOCK: "a socket", stat.S_IFDIR: "a folder"}
        raise FeedError(f"{path}: {names.get(kind, 'not a plain file')}; a feed folder "
                        "holds plain files only")
    os.set_blocking(fd, True)
    return fd


def _read_capped_now(path: Path, cap: int) -> bytes | None:
    fd = _open_plain(path)
    if fd is None:
        return None
    with os.fdopen(fd, "rb") as f:
        data = f.read(cap + 1)
    if len(data) > cap:
        raise FeedError(f"{path}: larger than {cap} bytes; refused")
    return data


async def _read_capped(path: Path, cap: int) -> bytes | None:
    """A small feed file, read on a worker thread: no file I/O on the event loop (row 135)."""
    return await trio.to_thread.run_sync(_read_capped_now, path, cap)


class LocalSource:
    """A feed folder on this host."""

    def __init__(self, app: str, cfg: AppConfig, limits: Limits, folder: Path,
                 state_folder: Path) -> None:
        self.app, self.cfg, self.limits, self.folder = app, cfg, limits, folder
        self.state_folder = state_folder

    async def _optional(self, name: str) -> tuple[bytes, bytes | None] | None:
        """A document beside the manifest (keys.json) and its signature, or None."""
        raw = await _read_capped(self.folder / name, keys.MAX_KEYS_SIZE)
        if raw is None:
            return None
        return raw, await _read_capped(self.folder / f"{name}.minisig",
                                       minisign.MAX_SIGNATURE_FILE)

    async def fetch(self, state: AppState, cache: Path, cycle_start_ts: float) -> TrustedFeed:
        cap = parse_size(self.limits.max_manifest_size)
        await keys.refresh(self.app, self.cfg, state, self._optional)
        raw = await _read_capped(self.folder / MANIFEST, cap)
        if raw is None:
            raise FeedError(f"no {MANIFEST} in {self.folder}")
        sig = await _read_capped(self.folder / SIGNATURE, minisign.MAX_SIGNATURE_FILE)
        return trust.verify_feed(self.app, self.cfg, state, raw, sig, cycle_start_ts, False)

    def _path(self, artifact: Artifact) -> Path:
        if not SAFE_FILE_NAME.fullmatch(artifact.url):
            raise FeedError(f"artifact {artifact.url!r}: a local feed names files in its folder")
        return self.folder / artifact.url

    def describe(self, artifact: Artifact) -> str:
        return str(self._path(artifact))

    async def fetch_artifact(self, artifact: Artifact, dest: Path, expected: Expected,
                       progress: ProgressFn | None) -> BinaryIO:
        src = self._path(artifact)
        return await trio.to_thread.run_sync(_copy_verified, src, dest, expected)


def _copy_verified(src: Path, dest: Path, expected: Expected) -> BinaryIO:
    """Copy with hashing in one pass, through a fresh `.part` (never a link planted in the
    cache) and the download's own checks; the verified copy is returned open."""
    part = dest.with_name(dest.name + ".part")
    try:
        out = fresh_part(part)
    except OSError as e:
        raise DownloadError(f"{dest.parent}: {e.strerror or e} while copying "
                            f"{src.name}") from None
    try:
        digests = Digests(expected.signature is not None)
        fd = _open_plain(src)
        if fd is None:
            raise FeedError(f"{src}: missing from the feed folder")
        with os.fdopen(fd, "rb") as f:
            while chunk := f.read(fsutil.COPY_CHUNK):
                if digests.size + len(chunk) > expected.size:
                    raise DigestMismatch(f"{src}: longer than the signed {expected.size} bytes")
                digests.update(chunk)
                fsutil.write_all(out, chunk)
        verify_expected(src.name, digests, expected)
        os.fsync(out)
        os.replace(part, dest)
        failpoints.hit("download.after_verify")
        os.lseek(out, 0, os.SEEK_SET)
        return os.fdopen(out, "rb")
    except BaseException as e:
        os.close(out)
        if part.exists():
            part.unlink()
        if isinstance(e, OSError):
            raise DownloadError(f"{dest.parent}: {e.strerror or e} while copying "
                                f"{src.name}") from None
        raise
