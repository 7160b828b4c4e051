"""Crash-safe disk writes: every durable write and every symlink swap goes through here.

The order is always: write a temp file, fsync it, rename(2) it over the target, fsync the folder.
A crash at any instant leaves either the old or the new content, never a torn one.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import os
import secrets
import time
from collections.abc import Callable
from pathlib import Path

from updaterd import failpoints
from updaterd.errors import UnsafePath

TMP_MARK = ".updaterd-tmp-"
# Bytes read or copied at a time: large enough that Python's per-call cost vanishes.
COPY_CHUNK = 1 << 20


def utc_stamp() -> str:
    """`20261130T070641Z`: the time in the names of files set aside (inplace backups, a corrupt
    state file); sorts as it reads, whatever the host's time zone."""
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())

def write_all(fd: int, data: bytes | memoryview) -> None:
    """os.write until every byte is written (a write may take fewer)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


FICLONE = 0x40049409  # ioctl: share the source's extents copy-on-write (btrfs, XFS, bcachefs)


def clone_or_copy(src: int, dst: int, size: int) -> int:
    """Make the new file `dst` hold what `src` holds, never sharing an inode with it: a
    reflink where the filesystem has them (each file is then changed on its own), else an
    in-kernel copy. Returns the bytes the copy holds (a source that grew is cut at size + 1)."""
    import fcntl

    try:
        fcntl.ioctl(dst, FICLONE, src)
        return os.fstat(dst).st_size
    except OSError:
        pass  # ext4, tmpfs, another filesystem: copy
    done = 0
    while done <= size:
        try:
            n = os.copy_file_range(src, dst, size + 1 - done, done, done)
        except OSError as e:
            if e.errno not in (errno.EXDEV, errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL):
                raise
            n = _copy_by_hand(src, dst, size + 1 - done, done)
        if n == 0:
            break
        done += n
    return done


def _copy_by_hand(src: int, dst: int, count: int, offset: int) -> int:
    chunk = os.pread(src, min(count, COPY_CHUNK), offset)
    if chunk:
        os.pwrite(dst, chunk, offset)
    return len(chunk)


def fsync_dir(path: Path) -> None:
    """Make the entries of a folder (renames, new names) durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def temp_name(target: Path) -> Path:
    """A fresh sibling name that `clean_temp_files` recognises as a leftover."""
    return target.with_name(f"{TMP_MARK}{target.name}.{secrets.token_hex(4)}")


def atomic_write(path: Path, data: bytes, mode: int = 0o644, failpoint: str = "") -> None:
    """Replace `path` with `data` durably; refuses to write through a symlink."""
    tmp = temp_name(path)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    try:
        write_all(fd, data)
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    os.close(fd)
    if failpoint:
        failpoints.hit(failpoint)
    try:
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)


def replace_symlink(link: Path, target: str, failpoint: str = "") -> None:
    """Point `link` at `target` with one rename of a fresh symlink: readers never see it missing."""
    tmp = temp_name(link)
    os.symlink(target, tmp)
    if failpoint:
        failpoints.hit(failpoint + ".after_temp_link")
    os.replace(tmp, link)
    if failpoint:
        failpoints.hit(failpoint + ".after_rename")
    fsync_dir(link.parent)


@functools.cache
def _libc_syncfs() -> Callable[[int], int] | None:
    """glibc's syncfs(2), loaded on first use (ctypes costs memory an idle daemon needn't)."""
    import ctypes

    try:
        fn: Callable[[int], int] = ctypes.CDLL(None, use_errno=True).syncfs
    except (OSError, AttributeError):
        return None
    return fn


@functools.cache
def _libc_sync_file_range() -> Callable[[int, int, int, int], int] | None:
    """glibc's sync_file_range(2), with its 64-bit offsets declared, loaded on first use."""
    import ctypes

    try:
        fn = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_longlong, ctypes.c_longlong, ctypes.c_uint]
    fn.restype = ctypes.c_int
    return fn


SYNC_FILE_RANGE_WRITE = 2


def start_writeback(fd: int, offset: int, length: int) -> None:
    """Start writing the file's dirty pages to disk now, without waiting (sync_file_range(2)
    with SYNC_FILE_RANGE_WRITE): the final fsync then finds little left to do. A hint only:
    where the call is missing or fails, the fsync does all of it, as before."""
    fn = _libc_sync_file_range()
    if fn is not None:
        fn(fd, offset, length, SYNC_FILE_RANGE_WRITE)


def make_durable(root: Path) -> None:
    """Everything written under `root` on disk before it is renamed into place: one syncfs(2)
    of its file system (what OSTree does) instead of an fsync per file, which costs a journal
    commit each; fsync of every file where syncfs is missing. The same promise either way:
    after it returns, a power cut keeps every byte and name written below `root`."""
    syncfs = _libc_syncfs()
    if syncfs is None:
        fsync_tree(root)
        return
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        sync_filesystem(fd, str(root))
    finally:
        os.close(fd)


def sync_filesystem(fd: int, shown: str) -> None:
    """syncfs(2) of the file system `fd` is on (fsync of `fd` alone where it is missing)."""
    syncfs = _libc_syncfs()
    if syncfs is None:
        os.fsync(fd)
        return
    if syncfs(fd) != 0:
        import ctypes

        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), shown)


def fsync_tree(root: Path) -> None:
    """fsync every file and folder below `root`, children before parents."""
    for dirpath, _dirnames, filenames in os.walk(root, topdown=False):
        for name in filenames:
            p = os.path.join(dirpath, name)
            if os.path.islink(p):
                continue
            fd = os.open(p, os.O_RDONLY | os.O_NOFOLLOW)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        fsync_dir(Path(dirpath))


def clean_temp_files(folder: Path) -> list[Path]:
    """Remove temp files and links left in `folder` by a crash; returns what was removed."""
    removed = []
    with contextlib.suppress(FileNotFoundError):
        for entry in folder.iterdir():
            if entry.name.startswith(TMP_MARK) and (entry.is_symlink() or entry.is_file()):
                entry.unlink()
                removed.append(entry)
    return removed


def probe_writable(folder: Path, near: Path | None = None) -> None:
    """Create and remove a temp file in `folder`: access(2) says yes to root even on a
    read-only mount or an immutable folder. Raises OSError when the folder cannot be written."""
    probe = temp_name(near if near is not None else folder / "probe")
    fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    os.close(fd)
    os.unlink(probe)


def why_not_writable(folder: Path, e: OSError) -> str:
    """Why `folder` cannot be written, with the fix when systemd's sandbox is the cause."""
    why = e.strerror or str(e)
    if e.errno == errno.EROFS and os.environ.get("INVOCATION_ID"):
        return (f"{why}: under systemd (ProtectSystem=strict), list it in ReadWritePaths= of "
                "updaterd.service (systemctl edit updaterd)")
    return why


def ensure_private_dir(path: Path, mode: int = 0o700) -> None:
    """Create a folder (and parents) if missing, with at most `mode` whatever the umask;
    refuse a symlink or another user's folder in its place."""
    if path.is_symlink():
        raise UnsafePath(f"{path} is a symbolic link; refusing to use it")
    path.mkdir(parents=True, exist_ok=True, mode=mode)
    st = os.lstat(path)
    if st.st_uid != os.geteuid():
        raise UnsafePath(f"{path} belongs to uid {st.st_uid}; refusing to use it")
    if st.st_mode & 0o7777 & ~mode:  # only ever narrowed: an operator's 0700 stays
        os.chmod(path, st.st_mode & 0o7777 & mode)
