"""Safe extraction of release archives into a fresh, empty staging folder.

Every member is checked here, on every Python (catalogue B54: Debian 12's own 3.11.2 has no
`tarfile.data_filter`, and its first backports refused good links, cpython gh-107845): names by
`member_parts`; a member naming the release root must be a folder; no devices, fifos, setuid or
setgid; duplicates and case clashes refused; nothing written through a link; hard links only to
an earlier regular file; symlink targets relative, non-empty, without control characters or
backslashes, resolving strictly inside the release and through no other archive symlink, their
parent folders claimed when the link is read, and created last, after every path is known.
Regular files are written with O_EXCL|O_NOFOLLOW. Where `data_filter` exists, a property test
proves that whatever it refuses, we refuse. Any refusal raises ArchiveError naming the member;
the caller removes the staging folder.
"""

from __future__ import annotations

import lzma
import os
import posixpath
import stat
import tarfile
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, BinaryIO, Literal, Protocol

from updaterd import fsutil
from updaterd.errors import ArchiveError

Kind = Literal["tar.gz", "tar.xz", "tar.zst", "tar.bz2", "tar", "zip", "raw"]
_SUFFIXES: list[tuple[str, Kind]] = [
    (".tar.gz", "tar.gz"), (".tgz", "tar.gz"), (".tar.xz", "tar.xz"), (".txz", "tar.xz"),
    (".tar.zst", "tar.zst"), (".tzst", "tar.zst"), (".tar.bz2", "tar.bz2"), (".tbz2", "tar.bz2"),
    (".tar", "tar"), (".zip", "zip"),
]
MAX_COMPONENT = 255
MAX_PATH = 4096


@dataclass(frozen=True)
class ExtractLimits:
    """Caps that stop an archive bomb mid-stream."""

    max_members: int
    max_total: int
    max_file: int


def suffix_of(file_name: str) -> str:
    """The archive suffix of a file name as the list above spells it (`.tar.gz`), "" for a raw
    executable."""
    lower = file_name.lower()
    return next((suffix for suffix, _kind in _SUFFIXES if lower.endswith(suffix)), "")


def kind_of(file_name: str) -> Kind:
    """The archive kind from the artifact's file name; anything else is a raw executable."""
    lower = file_name.lower()
    for suffix, kind in _SUFFIXES:
        if lower.endswith(suffix):
            return kind
    return "raw"


def member_parts(name: str) -> tuple[str, ...]:
    """The path components of a member name, or ArchiveError saying what is wrong with it."""
    try:
        encoded = name.encode("utf-8")
    except UnicodeEncodeError:
        raise ArchiveError(f"member {name!r}: name is not valid UTF-8") from None
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        raise ArchiveError(f"member {name!r}: name contains NUL or control characters")
    if "\\" in name:
        raise ArchiveError(f"member {name!r}: name contains a backslash")
    if name.startswith("/"):
        raise ArchiveError(f"member {name!r}: absolute path")
    if len(name) >= 2 and name[1] == ":" and name[0].isalpha():
        raise ArchiveError(f"member {name!r}: drive-letter path")
    if len(encoded) > MAX_PATH:
        raise ArchiveError(f"member {name[:64]!r}...: path longer than {MAX_PATH} bytes")
    trimmed = name
    while trimmed.startswith("./"):
        trimmed = trimmed[2:]
    trimmed = trimmed.rstrip("/")
    if trimmed in ("", "."):
        return ()
    parts = tuple(trimmed.split("/"))
    for part in parts:
        if part in ("", ".", ".."):
            raise ArchiveError(f"member {name!r}: path contains {part or 'an empty component'!r}")
        if len(part.encode("utf-8")) > MAX_COMPONENT:
            raise ArchiveError(f"member {name[:64]!r}: a component is longer than 255 bytes")
    return parts


class Readable(Protocol):
    """Where a file's bytes come from: an archive member, or a delta's pack or kept file."""

    def read(self, n: int, /) -> bytes: ...


@dataclass
class Tree:
    """What has been written so far (an archive's members, or a delta's entries), to catch
    duplicates, case clashes and link tricks."""

    root: Path
    limits: ExtractLimits
    entries: dict[str, str] = field(default_factory=dict)  # path -> "dir" | "file" | "link"
    folded: dict[str, str] = field(default_factory=dict)
    links: dict[str, str] = field(default_factory=dict)  # symlink path -> target
    made: set[str] = field(default_factory=set)  # folders created so far (saves a stat each)
    members: int = 0
    total: int = 0

    def claim(self, member: str, parts: tuple[str, ...], kind: str) -> str:
        key = "/".join(parts)
        self.members += 1
        if self.members > self.limits.max_members:
            raise ArchiveError(f"member {member!r}: more than {self.limits.max_members} members")
        for i in range(1, len(parts)):
            parent = "/".join(parts[:i])
            seen = self.entries.get(parent)
            if seen == "link":
                raise ArchiveError(f"member {member!r}: its path goes through the link {parent!r}")
            if seen == "file":
                raise ArchiveError(f"member {member!r}: its parent {parent!r} is a file")
        previous = self.entries.get(key)
        if previous is not None and not (previous == "dir" == kind):
            raise ArchiveError(f"member {member!r}: duplicate name")
        other = self.folded.get(key.casefold())
        if other is not None and other != key:
            raise ArchiveError(f"member {member!r}: name differs only in case from {other!r}")
        self.entries[key] = kind
        self.folded[key.casefold()] = key
        return key

    def add_size(self, member: str, size: int) -> None:
        if size > self.limits.max_file:
            raise ArchiveError(f"member {member!r}: {size} bytes is over the per-file limit "
                               f"of {self.limits.max_file}")
        self.total += size
        if self.total > self.limits.max_total:
            raise ArchiveError(f"member {member!r}: archive expands past the limit of "
                               f"{self.limits.max_total} bytes")

    def _path(self, parts: tuple[str, ...]) -> str:
        # plain strings: pathlib's parsing was a tenth of an extraction's time
        return "/".join((str(self.root), *parts))

    def make_dirs(self, parts: tuple[str, ...]) -> None:
        for i in range(1, len(parts) + 1):
            key = "/".join(parts[:i])
            if key in self.made:
                continue
            if key not in self.entries:
                self.entries[key] = "dir"
                self.folded[key.casefold()] = key
            os.mkdir(self._path(parts[:i]), 0o755)  # the staging folder was empty
            self.made.add(key)

    def write_file(self, member: str, parts: tuple[str, ...], data: Readable | None,
                   executable: bool, size: int) -> None:
        self.make_dirs(parts[:-1])
        mode = 0o755 if executable else 0o644
        fd = os.open(self._path(parts),
                     os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
        try:
            written = 0
            while data is not None:
                chunk = data.read(min(fsutil.COPY_CHUNK, size - written + 1))
                if not chunk:
                    break
                written += len(chunk)
                if written > size:
                    raise ArchiveError(f"member {member!r}: more data than its declared size")
                fsutil.write_all(fd, chunk)
            if written != size:
                raise ArchiveError(f"member {member!r}: truncated ({written} of {size} bytes)")
            os.fchmod(fd, mode)  # umask must not drop the exec bits
        finally:
            os.close(fd)

    def copy_file(self, member: str, parts: tuple[str, ...], source: str, executable: bool,
                  size: int) -> None:
        """A new file holding what the plain file `source` holds (a reflink or a copy, never
        a hard link: no two releases share a writable inode, H150)."""
        self.make_dirs(parts[:-1])
        mode = 0o755 if executable else 0o644
        src = os.open(source, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            fd = os.open(self._path(parts),
                         os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                         mode)
            try:
                copied = fsutil.clone_or_copy(src, fd, size)
                if copied != size:
                    raise ArchiveError(f"member {member!r}: {copied} bytes where {size} were "
                                       "recorded")
                os.fchmod(fd, mode)
            finally:
                os.close(fd)
        finally:
            os.close(src)

    def hard_link(self, member: str, parts: tuple[str, ...], target: str) -> None:
        try:
            target_parts = member_parts(target)
        except ArchiveError:  # absolute, `..`: nothing earlier in the archive has that name
            target_parts = ()
        key = "/".join(target_parts)
        if not target_parts or self.entries.get(key) != "file" or target_parts == parts:
            raise ArchiveError(f"member {member!r}: hard link to {target!r}, which is not a "
                               "regular file earlier in the archive")
        self.make_dirs(parts[:-1])
        os.link(self._path(target_parts), self._path(parts), follow_symlinks=False)

    def add_link(self, member: str, key: str, target: str) -> None:
        """A symlink, created last; its parent folders are claimed now, so that a later member
        cannot take their names as files (the link's folder is made when it is created)."""
        if not target or "\0" in target or target.startswith("/"):
            raise ArchiveError(f"member {member!r}: symlink to {target!r} is absolute or empty")
        if any(ord(c) < 32 or ord(c) == 127 for c in target):
            raise ArchiveError(f"member {member!r}: symlink target has control characters")
        if "\\" in target:
            raise ArchiveError(f"member {member!r}: symlink target contains a backslash")
        parts = key.split("/")
        for i in range(1, len(parts)):
            parent = "/".join(parts[:i])
            if parent not in self.entries:
                self.entries[parent] = "dir"
                self.folded[parent.casefold()] = parent
        self.links[key] = target

    def create_links(self) -> None:
        """Check every link against the whole tree, then create them."""
        for key, target in self.links.items():
            resolved = posixpath.normpath(posixpath.join(posixpath.dirname(key), target))
            if resolved == "." or resolved == ".." or resolved.startswith("../"):
                raise ArchiveError(f"member {key!r}: symlink to {target!r} leaves the release")
            walked = posixpath.dirname(key).split("/") if posixpath.dirname(key) else []
            for part in target.split("/"):
                if part in ("", "."):
                    continue
                if part == "..":
                    walked.pop()
                    continue
                walked.append(part)
                if "/".join(walked) in self.links:
                    raise ArchiveError(f"member {key!r}: symlink to {target!r} goes through "
                                       "another symlink")
        for key, target in self.links.items():
            parts = tuple(key.split("/"))
            self.make_dirs(parts[:-1])
            os.symlink(target, self._path(parts))


_TAR_MODES: dict[Kind, Literal["r:gz", "r:xz", "r:bz2"]] = {
    "tar.gz": "r:gz", "tar.xz": "r:xz", "tar.bz2": "r:bz2"}


def _require_safe_mode(member: str, mode: int) -> None:
    if mode & (stat.S_ISUID | stat.S_ISGID):
        raise ArchiveError(f"member {member!r}: setuid or setgid bit set")


def _extract_tar(f: BinaryIO, kind: Kind, tree: Tree) -> None:
    source: IO[bytes] = f
    # read in place ("r:", not the stream mode "r|"): member bytes come straight from the
    # decompressor instead of through tarfile's 10 KiB stream buffer, so its errors are ours
    corrupt: tuple[type[Exception], ...] = (tarfile.TarError, EOFError, OSError, zlib.error,
                                            lzma.LZMAError)
    if kind == "tar.zst":
        import zstandard  # loaded by the first tar.zst, not by every daemon

        source = zstandard.ZstdDecompressor().stream_reader(f, read_across_frames=True)
        corrupt += (zstandard.ZstdError,)
    try:
        with tarfile.open(fileobj=source, mode=_TAR_MODES.get(kind, "r:")) as tf:
            for member in tf:
                _extract_tar_member(tf, member, tree)
    except corrupt as e:
        if isinstance(e, OSError) and e.errno is not None:
            raise
        raise ArchiveError(f"corrupt or truncated archive: {e}") from None


def _extract_tar_member(tf: tarfile.TarFile, member: tarfile.TarInfo, tree: Tree) -> None:
    name = member.name
    parts = member_parts(name)
    if not (member.isdir() or member.isreg() or member.issym() or member.islnk()):
        raise ArchiveError(f"member {name!r}: device, fifo or other special file")  # any name
    if not parts:
        if not member.isdir():
            raise ArchiveError(f"member {name!r}: names the release root, which must be a "
                               "folder")
        return
    if member.isdir():
        tree.claim(name, parts, "dir")
        tree.make_dirs(parts)
    elif member.isreg():
        _require_safe_mode(name, member.mode)
        tree.claim(name, parts, "file")
        tree.add_size(name, member.size)
        tree.write_file(name, parts, tf.extractfile(member), bool(member.mode & 0o111),
                        member.size)
    elif member.issym():
        tree.add_link(name, tree.claim(name, parts, "link"), member.linkname)
    else:
        tree.claim(name, parts, "file")
        tree.hard_link(name, parts, member.linkname)


_LOCAL_HEADER = 30  # fixed part of a zip local file header


def _refuse_overlaps(zf: zipfile.ZipFile) -> None:
    """Every entry's local header and data must end before the next entry begins (and the
    last before the central directory): overlapping entries are how a few kilobytes quote
    themselves into gigabytes (Fifield's zip bomb). The local extra field is not counted, so
    this errs towards allowing; the size caps stay behind it."""
    entries = sorted(zf.infolist(), key=lambda i: i.header_offset)
    ends = [e.header_offset for e in entries[1:]] + [zf.start_dir]
    for info, next_start in zip(entries, ends, strict=True):
        end = info.header_offset + _LOCAL_HEADER + len(info.orig_filename.encode("utf-8",
                                                        "surrogateescape")) + info.compress_size
        if end > next_start:
            raise ArchiveError(f"member {info.filename!r}: overlaps the next zip entry "
                               "(an overlapping-entries zip bomb)")


def _extract_zip(f: BinaryIO, tree: Tree) -> None:
    try:
        zf = zipfile.ZipFile(f)
    except (zipfile.BadZipFile, OSError) as e:
        raise ArchiveError(f"corrupt zip archive: {e}") from None
    with zf:
        _refuse_overlaps(zf)
        for info in zf.infolist():
            name = info.filename
            parts = member_parts(name)
            mode = info.external_attr >> 16
            kind = stat.S_IFMT(mode)
            if kind and kind not in (stat.S_IFREG, stat.S_IFDIR):
                raise ArchiveError(f"member {name!r}: zip entry is a link or special file")
            _require_safe_mode(name, mode)
            if not parts:
                if not info.is_dir():
                    raise ArchiveError(f"member {name!r}: names the release root, which must "
                                       "be a folder")
                continue
            if info.is_dir():
                tree.claim(name, parts, "dir")
                tree.make_dirs(parts)
                continue
            tree.claim(name, parts, "file")
            tree.add_size(name, info.file_size)
            try:
                with zf.open(info) as data:
                    tree.write_file(name, parts, data, bool(mode & 0o111), info.file_size)
            except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, ValueError) as e:
                raise ArchiveError(f"member {name!r}: corrupt zip entry: {e}") from None


def extract(f: BinaryIO, kind: Kind, staging: Path, limits: ExtractLimits,
            raw_name: str) -> Path:
    """Extract into `staging/tree` (staging must be empty); returns the release root.

    A single top-level folder is stripped (the root is then that folder), unless it is one of
    LAYOUT_FOLDERS.
    """
    if any(staging.iterdir()):
        raise ArchiveError(f"staging folder {staging} is not empty; refusing to extract into it")
    root = staging / "tree"
    os.mkdir(root, 0o755)
    tree = Tree(root=root, limits=limits)
    if kind == "raw":
        parts = member_parts(raw_name)
        if len(parts) != 1:
            raise ArchiveError(f"executable name {raw_name!r} must be a plain file name")
        size = os.fstat(f.fileno()).st_size
        tree.claim(raw_name, parts, "file")
        tree.add_size(raw_name, size)
        tree.write_file(raw_name, parts, f, True, size)
        return root
    if kind == "zip":
        _extract_zip(f, tree)
    else:
        _extract_tar(f, kind, tree)
        _read_to_end(f)
    tree.create_links()
    release = single_top_folder(root)
    if release != root:
        _links_stay_under(tree, release.name)
    return release


def _read_to_end(f: BinaryIO) -> None:
    """What follows the tar's end (its padding, the compressor's trailer) is read too: an
    archive read as it downloads is verified only when its last byte has passed, and its tree
    must not become a release before that (engine/streaming.py)."""
    while f.read(1 << 20):
        pass


def _links_stay_under(tree: Tree, top: str) -> None:
    """The release is the archive's single top folder: no link may pass above it on its way
    (`top/b/l -> ../../top/t` stays in the archive, but once `top/` is the release, moved
    to `releases/VERSION/`, it would point into `releases/top/`)."""
    for key, target in tree.links.items():
        depth = key.count("/")  # the folders above the link, `top` included
        for part in target.split("/"):
            if part == "..":
                depth -= 1
            elif part not in ("", "."):
                depth += 1
            if depth < 1:
                raise ArchiveError(f"member {key!r}: symlink to {target!r} leaves the release "
                                   f"once its top folder {top!r} is stripped")


# Folders that are part of a release's layout, never a wrapper around it: an archive made with
# `tar -C build -czf tool.tar.gz bin` holds bin/ alone, and bin/ must stay bin/.
LAYOUT_FOLDERS = frozenset({"bin", "sbin", "lib", "lib32", "lib64", "libexec", "share",
                            "include", "etc", "man", "doc", "usr", "opt", "var"})


def single_top_folder(root: Path) -> Path:
    """A single top-level folder that wraps the release (`tool-1.2.0/`) is stripped; one that
    is part of the layout (`bin/`, `lib/`, `share/` ...) is kept."""
    entries = list(root.iterdir())
    if len(entries) == 1 and entries[0].is_dir() and not entries[0].is_symlink() \
            and entries[0].name not in LAYOUT_FOLDERS:
        return entries[0]
    return root


def executables(root: Path) -> Iterator[Path]:
    """The executables a release offers: files in its `bin/`, else top-level executable files."""
    folder = root / "bin" if (root / "bin").is_dir() and not (root / "bin").is_symlink() else root
    for entry in sorted(folder.iterdir()):
        if entry.is_file() and os.access(entry, os.X_OK):
            yield entry
