"""A file in the download cache: what the signed feed promises about it (`Expected`), how its
partial file is created so that nothing planted in the cache is written through, and the check
of the finished bytes against the promise.

Every source uses these, the HTTP ones through `fetcher` and the local folder directly; none of
it needs an HTTP client, so a daemon whose feeds are all local never loads one. `commit` is the
one step that makes a verified file of the cache: every writer (a download, a resumed one, a
copy from a folder or from the tests' simulator) ends in it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import stat
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from updaterd import failpoints, fsutil
from updaterd.errors import DigestMismatch, DownloadError
from updaterd.trust.digests import Digests

log = logging.getLogger("updaterd.fetcher")  # the logger these lines had in fetcher.py: unchanged


@dataclass(frozen=True)
class Expected:
    """What the trusted feed promises about an artifact.

    `signature` checks a detached signature against the file's BLAKE2b-512 prehash (computed in
    the same pass); it raises DigestMismatch when the signature does not verify.
    """

    size: int
    sha256: str | None
    blake3: str | None
    signature: Callable[[bytes], None] | None = None


ProgressFn = Callable[[int, int], None]


def open_partial(part: Path) -> int:
    """The partial download: a new file is created with O_EXCL; an existing one is resumed
    only when it is a plain file of ours with one link (no symlink, no hard link planted in
    the private cache), else it is replaced by a fresh O_EXCL file."""
    flags = os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(part, flags)
    except FileNotFoundError:
        return os.open(part, flags | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError:  # a symlink (ELOOP), a folder ...: not ours to resume
        fd = -1
    if fd >= 0:
        st = os.fstat(fd)
        if stat.S_ISREG(st.st_mode) and st.st_uid == os.geteuid() and st.st_nlink == 1:
            return fd
        os.close(fd)
    log.warning("%s is not a plain file of ours; replacing it", part)
    return fresh_part(part)


def fresh_part(part: Path) -> int:
    """A new, empty partial file of ours: whatever had its name (a planted symlink or hard
    link included) is unlinked first, and O_EXCL proves nothing was slipped in since."""
    if part.is_dir() and not part.is_symlink():
        raise DownloadError(f"{part} is a folder; refusing to download there")
    with contextlib.suppress(FileNotFoundError):
        part.unlink()
    return os.open(part, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_CREAT | os.O_EXCL,
                   0o600)


def keep_only(cache: Path, wanted: list[str]) -> list[str]:
    """Remove every file of the cache that belongs to no artifact in `wanted`: an artifact
    `NAME` owns `NAME` and `NAME.*` (its partial file, its partial's record, its delta files).
    Returns what was removed. Without this a server could grow the cache without bound by
    failing downloads of ever new names (H149)."""
    removed = []
    try:
        entries = list(os.scandir(cache))
    except FileNotFoundError:
        return []
    for entry in entries:
        if any(entry.name == n or entry.name.startswith(n + ".") for n in wanted):
            continue
        if entry.is_file(follow_symlinks=False) or entry.is_symlink():
            discard(Path(entry.path))
            removed.append(entry.name)
    return removed


def discard(path: Path) -> None:
    """Remove a cache file that may already be gone."""
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


def verify_expected(name: str, digests: Digests, expected: Expected) -> None:
    """Size and digests, then the signature over the prehash; DigestMismatch on any fault."""
    digests.require_match(name, expected.size, expected.sha256, expected.blake3,
                  signature_checked=expected.signature is not None)
    if expected.signature is not None:
        expected.signature(digests.prehash)


def open_verified(path: Path, expected: Expected) -> BinaryIO | None:
    """Open a cached file once, hash it, and return that descriptor if it matches."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    digests = Digests(expected.signature is not None)
    try:
        digests.update_from_fd(fd, os.fstat(fd).st_size)
        verify_expected(path.name, digests, expected)
    except (DigestMismatch, OSError):
        os.close(fd)
        log.info("%s: cached copy does not verify; downloading again", path.name)
        discard(path)
        return None
    os.lseek(fd, 0, os.SEEK_SET)
    return os.fdopen(fd, "rb")


def commit(fd: int, part: Path, dest: Path, leftovers: Iterable[Path] = ()) -> BinaryIO:
    """The partial file `fd` at `part`, its bytes verified (`verify_expected`) and on disk
    (fsync), becomes `dest`; its `leftovers` (a download's record) are removed. Returned open
    at its start: the very descriptor that was hashed."""
    os.replace(part, dest)
    for path in leftovers:
        discard(path)
    failpoints.hit("download.after_verify")
    os.lseek(fd, 0, os.SEEK_SET)
    return os.fdopen(fd, "rb")


def write_verified(chunks: Iterable[bytes], dest: Path, expected: Expected,
                   name: str) -> BinaryIO:
    """Write `chunks` to `dest` through a fresh partial file, hashing in the same pass and
    never past the promised size (`name` says where the bytes came from, in errors). Raises
    DigestMismatch, or OSError; nothing of a failed copy is left."""
    part = dest.with_name(dest.name + ".part")
    out = fresh_part(part)
    try:
        digests = Digests(expected.signature is not None)
        for chunk in chunks:
            if digests.size + len(chunk) > expected.size:
                raise DigestMismatch(f"{name}: longer than the signed {expected.size} bytes")
            digests.update(chunk)
            fsutil.write_all(out, chunk)
        verify_expected(dest.name, digests, expected)
        os.fsync(out)
        return commit(out, part, dest)
    except BaseException:
        os.close(out)
        discard(part)
        raise
