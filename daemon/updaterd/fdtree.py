"""Trees another user can write (an app's old releases, its `shared/` data), acted on by
descriptor only: the one place where root walks, copies or removes them (catalogue rows
168-170; `tests/security/test_tree_rows.py` fails on such an operation by path anywhere
else).

A path names whatever is there when it is resolved; the app can swap a folder for a link
between two calls, and root then acts on the host. So every folder is opened with
`O_DIRECTORY | O_NOFOLLOW` relative to the descriptor of its parent, every entry is opened
with `O_PATH | O_NOFOLLOW` and judged by the `fstat` of that descriptor, and every change
(`unlinkat`, `mkdirat`, `fchown`, `fchmod`) goes through the descriptor that was judged. An
entry swapped for a link after it was judged is met as the link (never followed), or fails
the operation with an error naming the path and its owner: never a retry by name.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Iterator
from pathlib import Path

from updaterd import fsutil
from updaterd.errors import UnsafePath

# Folders nested this deep below the entry acted on are refused: each level holds one
# descriptor while it is walked, and a tree made to exhaust them must fail with a message, not
# with EMFILE somewhere else. The same count for removing, copying and walking.
MAX_DEPTH = 256

_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_PATH = os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC


class TreeError(UnsafePath):
    """An operation inside a tree another user can write that could not be done safely."""


def _owner(fd: int | None) -> str:
    if fd is not None:
        with contextlib.suppress(OSError):
            return f" (owned by uid {os.fstat(fd).st_uid})"
    return ""


def _fail(shown: str, e: OSError, what: str, fd: int | None = None) -> TreeError:
    why = "it is a link or not a folder" if e.errno in (errno.ELOOP, errno.ENOTDIR) \
        else (e.strerror or str(e))
    return TreeError(f"cannot {what} {shown}: {why}{_owner(fd)}; refusing to act on it by "
                     "name")


@contextlib.contextmanager
def opened(fd: int) -> Iterator[int]:
    try:
        yield fd
    finally:
        os.close(fd)


def open_folder(base: Path, *parts: str) -> int:
    """A descriptor of `base/parts...`, each part opened from its parent's descriptor and never
    through a link. `base` itself is updaterd's own (a prefix, a release, a staging folder):
    only it is opened by path, and it must not be a link either. FileNotFoundError when a
    part is missing; TreeError when one is a link or not a folder."""
    shown = base
    try:
        fd = os.open(base, _DIR)
    except FileNotFoundError:
        raise
    except OSError as e:
        raise _fail(str(base), e, "open") from None
    for part in parts:
        shown = shown / part
        try:
            child = os.open(part, _DIR, dir_fd=fd)
        except FileNotFoundError:
            os.close(fd)
            raise
        except OSError as e:
            os.close(fd)
            raise _fail(str(shown), e, "open") from None
        os.close(fd)
        fd = child
    return fd


def kind(dir_fd: int, name: str) -> int | None:
    """The file type (`stat.S_IFMT`) of the entry `name` itself (a link is a link), or None
    when there is none."""
    try:
        return stat.S_IFMT(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode)
    except FileNotFoundError:
        return None


def remove_tree(path: Path) -> None:
    """Remove `path` (a folder with all it holds, a file or a link) without ever acting
    outside it. Its parent is updaterd's own folder; inside, the app may have made anything."""
    try:
        parent = os.open(path.parent, _DIR)
    except OSError as e:
        raise _fail(str(path), e, "remove") from None
    with opened(parent):
        remove_entry(parent, path.name, str(path))


def remove_entry(dir_fd: int, name: str, shown: str, depth: int = 0) -> None:
    """Remove the entry `name` of the folder `dir_fd` and, when it is a folder, all it holds:
    `unlinkat` for anything that is not a folder, a folder emptied through a descriptor
    opened with `O_NOFOLLOW` and then `unlinkat(AT_REMOVEDIR)`."""
    try:
        os.unlink(name, dir_fd=dir_fd)
        return
    except FileNotFoundError:
        return
    except IsADirectoryError:
        pass  # Linux's answer for a folder: emptied below, then removed
    except OSError as e:
        raise _fail(shown, e, "remove") from None
    if depth >= MAX_DEPTH:
        raise TreeError(f"cannot remove {shown}: more than {MAX_DEPTH} folders deep; remove "
                        "it by hand")
    try:
        folder = _open_child_folder(dir_fd, name)
    except OSError as e:
        raise _fail(shown, e, "remove") from None
    with opened(folder):
        try:
            names = os.listdir(folder)
        except OSError as e:
            raise _fail(shown, e, "list", folder) from None
        for child in names:
            remove_entry(folder, child, f"{shown}/{child}", depth + 1)
        try:
            os.rmdir(name, dir_fd=dir_fd)
        except FileNotFoundError:
            pass
        except OSError as e:
            raise _fail(shown, e, "remove", folder) from None


def _open_child_folder(dir_fd: int, name: str) -> int:
    """Open a sub-folder to empty it; one whose mode shuts out its owner (0000, possible only
    where updaterd does not run as root) is opened up through its own descriptor first."""
    try:
        return os.open(name, _DIR, dir_fd=dir_fd)
    except PermissionError:
        with opened(os.open(name, _PATH, dir_fd=dir_fd)) as handle:
            st = os.fstat(handle)
            if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid():
                raise
            # chmod of the very inode the descriptor holds: /proc's link is never re-resolved
            # by name (fchmod refuses O_PATH descriptors)
            os.chmod(f"/proc/self/fd/{handle}", 0o700)
            return os.open(".", _DIR, dir_fd=handle)


class Entry:
    """One entry met by `walk`: its name below the root, the `fstat` of the very inode, the
    target of a link, and for a regular file a descriptor to read it (valid until the walk
    moves on)."""

    __slots__ = ("fd", "link", "name", "st")

    def __init__(self, name: str, st: os.stat_result, link: str = "", fd: int = -1) -> None:
        self.name, self.st, self.link, self.fd = name, st, link, fd


def walk(root: Path, contents: bool = True) -> Iterator[Entry]:
    """Every entry below `root`, parents before children, links never followed: what a
    re-hash of a release the app may have written reads (`updaterd verify`, a rollback's
    check). A regular file is read through the descriptor that was judged, so a FIFO or a
    link swapped in after its `fstat` is never opened; with `contents` False none is opened
    (sizes are all that is wanted)."""
    with opened(open_folder(root)) as fd:
        yield from _walk(fd, "", str(root), 0, contents)


def _walk(folder: int, prefix: str, shown: str, depth: int,
          contents: bool) -> Iterator[Entry]:
    if depth >= MAX_DEPTH:
        raise TreeError(f"cannot read {shown}: more than {MAX_DEPTH} folders deep")
    for name in sorted(os.listdir(folder)):
        try:
            handle = os.open(name, _PATH, dir_fd=folder)
        except FileNotFoundError:
            continue
        with opened(handle):
            st = os.fstat(handle)
            rel = prefix + name
            if stat.S_ISLNK(st.st_mode):
                yield Entry(rel, st, link=_link_text(handle))
            elif stat.S_ISREG(st.st_mode) and contents:
                with opened(_reopen(handle, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY)) as fd:
                    yield Entry(rel, st, fd=fd)
            elif stat.S_ISDIR(st.st_mode):
                yield Entry(rel, st)
                with opened(_reopen(handle, os.O_RDONLY | os.O_DIRECTORY)) as sub:
                    yield from _walk(sub, rel + "/", f"{shown}/{name}", depth + 1, contents)
            else:
                yield Entry(rel, st)


def copy_entry(src_dir: int, name: str, dest_dir: int, dest_name: str, shown: str,
               depth: int = 0) -> bool:
    """Copy the entry `name` of `src_dir` to a new `dest_name` in `dest_dir`: a regular file
    with its bytes, a folder with all it holds, a link as a link (never followed). Owner and
    mode are those of the very inode read (its descriptor's `fstat`), so a file the app's user
    could not read stays unreadable to it. Anything else (a FIFO, a socket, a device) is left
    out and never opened; returns False for it."""
    try:
        handle = os.open(name, _PATH, dir_fd=src_dir)
    except FileNotFoundError:
        return False  # removed while the copy ran: the app's choice
    except OSError as e:
        raise _fail(shown, e, "copy") from None
    with opened(handle):
        st = os.fstat(handle)
        if stat.S_ISLNK(st.st_mode):
            _copy_link(handle, dest_dir, dest_name, st)
        elif stat.S_ISREG(st.st_mode):
            _copy_file(handle, dest_dir, dest_name, st, shown)
        elif stat.S_ISDIR(st.st_mode):
            _copy_folder(handle, dest_dir, dest_name, st, shown, depth)
        else:
            return False
    return True


def _reopen(handle: int, flags: int) -> int:
    """A readable descriptor of the inode an `O_PATH` descriptor holds, through /proc's link to
    it (never re-resolved by name: a swap after the fstat cannot change what is read)."""
    return os.open(f"/proc/self/fd/{handle}", flags | os.O_CLOEXEC)


def _copy_link(handle: int, dest_dir: int, dest_name: str, st: os.stat_result) -> None:
    os.symlink(_link_text(handle), dest_name, dir_fd=dest_dir)
    os.chown(dest_name, st.st_uid, st.st_gid, dir_fd=dest_dir, follow_symlinks=False)


def _link_text(handle: int) -> str:
    """The target of the link an `O_PATH | O_NOFOLLOW` descriptor holds (readlinkat with an
    empty name reads the descriptor's own link)."""
    return os.readlink("", dir_fd=handle)


def _copy_file(handle: int, dest_dir: int, dest_name: str, st: os.stat_result,
               shown: str) -> None:
    try:
        src = _reopen(handle, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY)
    except OSError as e:
        raise _fail(shown, e, "read") from None
    with opened(src):
        dest = os.open(dest_name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                       | os.O_CLOEXEC, 0o600, dir_fd=dest_dir)
        with opened(dest):
            fsutil.clone_or_copy(src, dest, os.fstat(src).st_size)
            # a data file needs no setuid or setgid bit; a copy must not make a new one
            _same_owner_and_mode(dest, st, drop=stat.S_ISUID | stat.S_ISGID)


def _copy_folder(handle: int, dest_dir: int, dest_name: str, st: os.stat_result, shown: str,
                 depth: int) -> None:
    if depth >= MAX_DEPTH:
        raise TreeError(f"cannot copy {shown}: more than {MAX_DEPTH} folders deep")
    try:
        src = _reopen(handle, os.O_RDONLY | os.O_DIRECTORY)
    except OSError as e:
        raise _fail(shown, e, "read") from None
    with opened(src):
        os.mkdir(dest_name, 0o700, dir_fd=dest_dir)
        with opened(os.open(dest_name, _DIR, dir_fd=dest_dir)) as dest:
            for child in sorted(os.listdir(src)):
                copy_entry(src, child, dest, child, f"{shown}/{child}", depth + 1)
            _same_owner_and_mode(dest, st)  # last: 0700 and root's while it is filled


def _same_owner_and_mode(fd: int, st: os.stat_result, drop: int = 0) -> None:
    """Owner first: chown(2) clears the setuid and setgid bits, which the mode then sets as the
    original has them (less `drop`)."""
    os.fchown(fd, st.st_uid, st.st_gid)
    os.fchmod(fd, stat.S_IMODE(st.st_mode) & ~drop)
