"""Delta updates: a release built from a kept release and a pack of what changed.

The publisher (`describe`, `make_pack`) names the new release's tree by one digest (`tree`: the
BLAKE3 of its tree record, entries exactly as our extractor makes them from the full artifact)
and, for each older release, writes a pack: one zstd frame holding the new release's changed
files, compressed with the same paths of the older release as its reference (zstd's
patch-from), with the differences between the two trees. The signed manifest lists the
descriptor as an artifact of platform `<platform>.delta`, a platform no daemon installs, so that
a daemon older than deltas skips it; the descriptor carries each pack's size and BLAKE3.
Nothing is used before its digest matched.

The client takes the kept release's recorded tree, applies the pack's differences, and must
find the descriptor's `tree` digest before it downloads the pack (`plan`). It then makes the
tree in a staging folder (`build`): unchanged files hard-linked from the kept release, the
others from the pack; every name and link through the extractor's own checks (`archive.Tree`),
the reference files re-hashed as they are read, decompression stopped at the declared sizes
and a window limit. The result must be that tree exactly (`Layout.stage_with`).
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import IO, Annotated, Literal

import blake3
import msgspec
from msgspec import Meta, Struct

from updaterd import fsutil
from updaterd.errors import ArchiveError, FeedError, UpdaterError
from updaterd.install import shared as shared_paths
from updaterd.trust import archive, feed, signed, treehash

SUFFIX = ".delta"  # the descriptor's platform: `<platform>.delta`
MAX_WINDOW_LOG = 31  # zstd's largest window (2 GiB); the reference and the payload fit in it
MAX_DESCRIPTOR = 64 << 20  # bytes
# What a host holds in memory to build from a pack is about its reference plus its window
# (reference and payload together): at most 2 x 16 MiB here, whatever the release's size
# (H151). A pack that needs more is neither published nor used: the archive is fetched.
MAX_USABLE_WINDOW_LOG = 24
MIN_SAVING = 0.10  # a pack (with its descriptor) must save at least this share of the archive
Hex64 = Annotated[str, Meta(pattern=r"^[0-9a-f]{64}$")]
Name = Annotated[str, Meta(min_length=1, max_length=4096)]
Entry = Annotated[str, Meta(max_length=8192)]


class DeltaError(UpdaterError):
    """A delta cannot be used; the full artifact is fetched instead. `reason`: why, in the
    one word the fallback metric counts (reports.FALLBACK_REASONS)."""

    reason = "mismatch"


class SharedPathRead(DeltaError):
    """The pack needs what the release shipped at a shared path: the host keeps the app's data
    there now."""

    reason = "shared"


class Pack(Struct, forbid_unknown_fields=True, kw_only=True):
    """What turns `base` into the release: the tree's differences and the changed files,
    compressed against the same paths of `base`."""

    base: Annotated[str, Meta(min_length=1, max_length=128)]
    url: Annotated[str, Meta(pattern=feed.SAFE_FILE_NAME.pattern)]
    size: Annotated[int, Meta(ge=0, le=2**40)]
    blake3: Hex64
    changed: dict[Name, Entry]  # entries that are new, or differ from the base's
    removed: list[Name]  # the base's entries that the release does not have
    files: list[tuple[Name, Annotated[int, Meta(ge=0, le=2**50)]]]  # carried, in order: size
    reference: list[tuple[Name, Hex64]]  # base files (path, BLAKE3), concatenated in order
    window_log: Annotated[int, Meta(ge=10, le=MAX_WINDOW_LOG)]


class Descriptor(Struct, forbid_unknown_fields=True, kw_only=True):
    """A release's tree, by digest, and the packs that build it from older releases."""

    schema: Literal[1]
    app: str
    version: str
    platform: str  # with `artifact`: the one full artifact whose extraction this describes
    artifact: Hex64  # its BLAKE3
    tree: Hex64  # BLAKE3 of the release's tree record (`tree_digest`)
    packs: list[Pack] = []

    def pack_from(self, base: str) -> Pack | None:
        return next((p for p in self.packs if p.base == base), None)


def descriptor_platform(platform: str) -> str:
    return f"{platform}{SUFFIX}"


def tree_digest(entries: dict[str, str]) -> str:
    """One digest for a whole tree record: BLAKE3 of its entries as sorted JSON."""
    return blake3.blake3(msgspec.json.encode(dict(sorted(entries.items())))).hexdigest()


def compress(desc: Descriptor) -> bytes:
    """The descriptor as published: compact JSON in one zstd frame."""
    import zstandard

    return zstandard.ZstdCompressor(level=19).compress(msgspec.json.encode(desc))


def _decompress(data: bytes) -> bytes:
    """At most MAX_DESCRIPTOR bytes out, whatever the frame claims."""
    import zstandard

    out = bytearray()
    try:
        with zstandard.ZstdDecompressor(max_window_size=1 << 27).stream_reader(
                io.BytesIO(data), read_across_frames=False) as reader:
            while chunk := reader.read(fsutil.COPY_CHUNK):
                out += chunk
                if len(out) > MAX_DESCRIPTOR:
                    raise DeltaError(f"delta descriptor expands past {MAX_DESCRIPTOR} bytes")
    except zstandard.ZstdError as e:
        raise DeltaError(f"delta descriptor: {e}") from None
    return bytes(out)


def decode(data: bytes, app: str, version: str,
           of: feed.Artifact | None = None) -> Descriptor:
    """The published descriptor of `app` `version` (and of the full artifact `of`, when
    given), decompressed within a cap and strictly decoded (a duplicate key is refused)."""
    raw = _decompress(data)
    try:
        signed.reject_duplicate_keys(raw, "delta descriptor")
        d = msgspec.json.decode(raw, type=Descriptor)
    except (FeedError, msgspec.DecodeError) as e:
        raise DeltaError(f"delta descriptor: {e}") from None
    if (d.app, d.version) != (app, version):
        raise DeltaError(f"delta descriptor is for {d.app} {d.version}, not {app} {version}")
    if of is not None and (d.platform, d.artifact) != (of.platform, of.blake3):
        raise DeltaError(f"delta descriptor describes the {d.platform} artifact {d.artifact}, "
                         f"not the {of.platform} artifact {of.blake3 or of.sha256}")
    return d


def _content(entry: str) -> str | None:
    """The BLAKE3 of a file entry (`f:<mode>:<blake3>`), None for anything else."""
    return entry.split(":", 2)[2] if entry.startswith("f:") else None


# -- the publisher ----------------------------------------------------------------------------

def _read(root: Path, name: str) -> bytes:
    with open(root / name, "rb") as f:
        return f.read()


def describe(root: Path, app: str, version: str,
             of: feed.Artifact) -> tuple[Descriptor, dict[str, str]]:
    """The descriptor of the release extracted at `root` from the artifact `of` (no packs
    yet), and its tree's entries."""
    if of.blake3 is None:
        raise DeltaError(f"{of.url}: a delta names its artifact by BLAKE3, and it has none")
    entries = treehash.scan(root)
    return Descriptor(schema=1, app=app, version=version, platform=of.platform,
                      artifact=of.blake3, tree=tree_digest(entries)), entries


def unusable(pack: Pack, descriptor_size: int, artifact_size: int) -> str:
    """Why a host does not build from `pack` (empty: it may): one that needs more memory than
    MAX_USABLE_WINDOW_LOG allows, or saves less than MIN_SAVING of the archive (H151)."""
    if pack.window_log > MAX_USABLE_WINDOW_LOG:
        return (f"{pack.url} needs a window of 2^{pack.window_log} bytes, more than "
                f"2^{MAX_USABLE_WINDOW_LOG}")
    if descriptor_size + pack.size > (1 - MIN_SAVING) * artifact_size:
        return (f"{pack.url} and its descriptor ({descriptor_size + pack.size} bytes) save "
                f"less than {MIN_SAVING:.0%} of the archive ({artifact_size} bytes)")
    return ""


def _window_log(size: int) -> int:
    return min(MAX_WINDOW_LOG, max(10, size.bit_length()))


def make_pack(new_root: Path, entries: dict[str, str], base_root: Path, base: str,
              url: str, level: int = 19) -> tuple[Pack, bytes] | None:
    """The pack that builds the release at `new_root` from the one at `base_root`; None when
    hosts could not build from it within MAX_USABLE_WINDOW_LOG (known before anything is
    read or compressed)."""
    base_entries = treehash.scan(base_root)
    changed = {n: e for n, e in sorted(entries.items()) if base_entries.get(n) != e}
    removed = sorted(base_entries.keys() - entries.keys())
    files = [n for n, e in changed.items()
             if e.startswith("f:") and _content(base_entries.get(n, "")) != _content(e)]
    # The reference: the same paths in the base, then the base's files that are gone (a file
    # renamed or moved finds its old content there).
    reference = [(n, b3) for n in files if (b3 := _content(base_entries.get(n, ""))) is not None]
    reference += [(n, b3) for n in removed if (b3 := _content(base_entries[n])) is not None]
    sizes = sum(os.lstat(base_root / n).st_size for n, _ in reference) + \
        sum(os.lstat(new_root / n).st_size for n in files)
    if _window_log(sizes) > MAX_USABLE_WINDOW_LOG:
        return None
    ref = b"".join(_read(base_root, n) for n, _ in reference)
    payload = [_read(new_root, n) for n in files]
    window_log = _window_log(len(ref) + sum(map(len, payload)))
    import zstandard  # loaded on first use: an idle daemon does not need it

    params = zstandard.ZstdCompressionParameters.from_level(
        level, window_log=window_log, enable_ldm=True)
    cdict = zstandard.ZstdCompressionDict(ref, dict_type=zstandard.DICT_TYPE_RAWCONTENT)
    data = zstandard.ZstdCompressor(compression_params=params,
                                    dict_data=cdict).compress(b"".join(payload))
    pack = Pack(base=base, url=url, size=len(data), blake3=blake3.blake3(data).hexdigest(),
                changed=changed, removed=removed,
                files=[(n, len(d)) for n, d in zip(files, payload, strict=True)],
                reference=reference, window_log=window_log)
    return pack, data


# -- the client -------------------------------------------------------------------------------

def plan(desc: Descriptor, pack: Pack, base_record: treehash.TreeRecord,
         shared: tuple[str, ...] = ()) -> dict[str, str]:
    """The tree the pack makes from the kept release recorded as `base_record`, known to be
    the descriptor's before anything more is downloaded; DeltaError when it is not. The kept
    release is taken as published (its `shared` paths are links on disk, J179), and the
    pack may read none of them: what is there is the app's data, not the release's."""
    base = treehash.as_published(base_record)
    for name, b3 in pack.reference:
        if shared_paths.under(name, shared):
            raise SharedPathRead(f"the pack reads {name}, which this host keeps in shared/")
        if _content(base.get(name, "")) != b3:
            raise DeltaError(f"{pack.base} as installed does not have {name} as the pack "
                             "expects")
    removed = set(pack.removed)
    entries = {n: e for n, e in base.items() if n not in removed}
    entries.update(pack.changed)
    if tree_digest(entries) != desc.tree:
        raise DeltaError(f"{pack.base} as recorded, with the pack's changes, is not the tree "
                         "the descriptor names")
    carried = {n for n, _ in pack.files}
    if len(carried) != len(pack.files) or not carried <= {
            n for n, e in entries.items() if e.startswith("f:")}:
        raise DeltaError(f"{pack.url} carries a file twice, or one the release does not have")
    return entries


def _reference(base_root: Path, pack: Pack, limit: int) -> bytearray:
    """The base files the pack was made against, each re-hashed as it is read, in one buffer
    (never held twice: it is the largest thing a build keeps in memory)."""
    ref = bytearray()
    for name, b3 in pack.reference:
        start = len(ref)
        with _open_base(base_root, name) as f:
            while chunk := f.read(min(fsutil.COPY_CHUNK, limit - len(ref) + 1)):
                ref += chunk
                if len(ref) > limit:
                    raise DeltaError(f"the reference files of {pack.url} exceed {limit} bytes")
        if blake3.blake3(memoryview(ref)[start:]).hexdigest() != b3:
            raise DeltaError(f"{pack.base}/{name} changed on disk since it was installed")
    return ref


class _Exactly:
    """Reads exactly `size` bytes of the decompressed stream, no more."""

    def __init__(self, stream: IO[bytes], size: int, name: str) -> None:
        self.stream, self.left, self.name = stream, size, name

    def read(self, n: int = -1, /) -> bytes:
        want = self.left if n < 0 else min(n, self.left)
        data = self.stream.read(want) if want else b""
        if want and not data:
            raise DeltaError(f"the pack ends inside {self.name}")
        self.left -= len(data)
        return data


def _drain(source: _Exactly) -> None:
    while source.read(fsutil.COPY_CHUNK):
        pass


def _open_base(base_root: Path, name: str) -> IO[bytes]:
    fd = os.open(base_root.joinpath(*archive.member_parts(name)),
                 os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    return os.fdopen(fd, "rb")


def _in_base(record: treehash.TreeRecord, name: str, entry: str) -> bool:
    """Whether the kept release, as recorded, has this very file (content and mode) under
    plain folders, so that it can be linked into the new release as it is."""
    parts = name.split("/")
    return record.entries.get(name) == entry and all(
        record.entries.get("/".join(parts[:i])) == "d:755" for i in range(1, len(parts)))


def _mode(entry: str) -> str:
    return entry.split(":")[1]


def build(staging: Path, entries: dict[str, str], pack: Pack, pack_file: IO[bytes],
          base_root: Path, base_record: treehash.TreeRecord,
          limits: archive.ExtractLimits) -> Path:
    """Make the tree `entries` (from `plan`) in `staging/tree` from the release at
    `base_root` and the verified `pack_file`; returns the root. The caller compares the
    result with `entries` (the tree record of the staged folder must equal it).

    A file the kept release has as it is (same content and mode, as recorded) is reflinked
    from it where the filesystem can, else copied in the kernel: never hard-linked, since an
    app that rewrites one of its files in place would then rewrite the kept release too, and
    the automatic rollback would land on it (H150). A file that only changed its mode is
    copied through the pack's checks."""
    if any(staging.iterdir()):
        raise ArchiveError(f"staging folder {staging} is not empty; refusing to build in it")
    root = staging / "tree"
    os.mkdir(root, 0o755)
    tree = archive.Tree(root=root, limits=limits)
    claimed: dict[str, tuple[str, ...]] = {}
    for name, entry in sorted(entries.items()):
        parts = archive.member_parts(name)
        kind = {"d": "dir", "f": "file", "l": "link"}.get(entry[:1])
        if kind is None or entry[1:2] != ":":
            raise DeltaError(f"delta: {name!r} is neither a file, a folder nor a link")
        key = tree.claim(name, parts, kind)
        if kind == "dir":
            if entry != "d:755":
                raise DeltaError(f"delta: folder {name!r} has mode {entry[2:]}")
            tree.make_dirs(parts)
        elif kind == "link":
            tree.add_link(name, key, entry[2:])
        else:
            if _mode(entry) not in ("755", "644"):
                raise DeltaError(f"delta: file {name!r} has mode {_mode(entry)}")
            claimed[name] = parts
    import zstandard

    if pack.window_log > MAX_USABLE_WINDOW_LOG:  # `unusable` said so before the download
        raise DeltaError(unusable(pack, 0, 0))
    ref = _reference(base_root, pack, min(limits.max_total, 1 << pack.window_log))
    ddict = zstandard.ZstdCompressionDict(ref, dict_type=zstandard.DICT_TYPE_RAWCONTENT)
    decompressor = zstandard.ZstdDecompressor(dict_data=ddict,
                                              max_window_size=1 << pack.window_log)
    try:
        with decompressor.stream_reader(pack_file, read_across_frames=False) as stream:
            for name, size in pack.files:
                if name not in claimed:  # at a shared path (left out by the caller): the
                    _drain(_Exactly(stream, size, name))  # link takes its place
                    continue
                tree.add_size(name, size)
                tree.write_file(name, claimed[name], _Exactly(stream, size, name),
                                _mode(entries[name]) == "755", size)
            if stream.read(1):
                raise DeltaError(f"{pack.url} holds more than the files it lists")
    except zstandard.ZstdError as e:  # a corrupt frame, or one past the window limit
        raise DeltaError(f"{pack.url}: {e}") from None
    carried = {n for n, _ in pack.files}
    old_root = str(base_root)  # names are checked: plain joins will do
    for name, parts in claimed.items():
        if name in carried:
            continue
        if _in_base(base_record, name, entries[name]):
            size = os.lstat(os.path.join(old_root, name)).st_size
            tree.add_size(name, size)
            tree.copy_file(name, parts, os.path.join(old_root, name),
                           _mode(entries[name]) == "755", size)
            continue
        with _open_base(base_root, name) as f:
            size = os.fstat(f.fileno()).st_size
            tree.add_size(name, size)
            tree.write_file(name, parts, f, _mode(entries[name]) == "755", size)
    tree.create_links()
    return root
