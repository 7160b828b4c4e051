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

from updaterd import fsutil
from updaterd.errors import DownloadError, FeedError
from updaterd.net.cachefile import Expected, ProgressFn, write_verified
from updaterd.net.document import Document, Validators
from updaterd.trust.feed import SAFE_FILE_NAME


def _open_plain(path: Path) -> int | None:
    """Open a feed file for reading, refusing anything but a plain file, without blocking: a
    FIFO, device, socket or symlink planted in the folder is an error, never a hang (G135).
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
    """A small feed file, read on a worker thread: no file I/O on the event loop (G135)."""
    return await trio.to_thread.run_sync(_read_capped_now, path, cap)


class FolderTransport:
    """A feed folder on this host: read whole at each refresh (no kept copy), and a manifest
    without keys configured needs no signature."""

    remote = False
    origin: str | None = None

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    async def document(self, name: str, cap: int, *, missing_ok: bool = False,
                       validators: Validators | None = None, fresh: bool = False) -> Document:
        raw = await _read_capped(self.folder / name, cap)
        if raw is not None:
            return Document(raw)
        if missing_ok:
            return Document(missing=True)
        raise FeedError(f"no {name} in {self.folder}")

    def _path(self, name: str) -> Path:
        if not SAFE_FILE_NAME.fullmatch(name):
            raise FeedError(f"artifact {name!r}: a local feed names files in its folder")
        return self.folder / name

    def describe(self, name: str) -> str:
        return str(self._path(name))

    async def file(self, name: str, dest: Path, expected: Expected,
                   progress: ProgressFn | None) -> BinaryIO:
        return await trio.to_thread.run_sync(_copy_verified, self._path(name), dest, expected)


def _copy_verified(src: Path, dest: Path, expected: Expected) -> BinaryIO:
    """Copy with hashing in one pass, as a download is written (`cachefile.write_verified`:
    never through a link planted in the cache); the verified copy is returned open."""
    try:
        fd = _open_plain(src)
        if fd is None:
            raise FeedError(f"{src}: missing from the feed folder")
        with os.fdopen(fd, "rb") as f:
            return write_verified(iter(lambda: f.read(fsutil.COPY_CHUNK), b""), dest, expected,
                                  str(src))
    except OSError as e:
        raise DownloadError(f"{dest.parent}: {e.strerror or e} while copying "
                            f"{src.name}") from None
