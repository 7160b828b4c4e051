"""The recorded BLAKE3 tree of each installed release, and checking a release against it.

Recorded while the release is staged (before it is switched to) in
`<state_dir>/<app>/trees/<version>.json`; `updaterd verify` re-hashes every kept release
against it, as `ostree fsck` does, to prove that no crash or stray write left a release torn.
"""

from __future__ import annotations

import contextlib
import stat
from pathlib import Path
from typing import Literal

import msgspec
from msgspec import Struct

from updaterd import fdtree, fsutil, versions
from updaterd.trust import digests


class TreeRecord(Struct, kw_only=True):
    """Every entry of a release: `f:<mode>:<blake3>`, `l:<target>` or `d:<mode>`.

    With `shared` paths, what linking them changed: `shared` holds the entries the release
    shipped there (gone from the disk), `linked` the names linking added (the links, and
    folders made for them), so that the release as published can be told (`as_published`:
    what a delta is made against)."""

    schema: Literal[1] = 1
    version: str
    entries: dict[str, str]
    shared: dict[str, str] = {}
    linked: list[str] = []


def as_published(rec: TreeRecord) -> dict[str, str]:
    """The release's tree as its artifact holds it, before its shared paths were linked."""
    added = set(rec.linked)
    return {**{n: e for n, e in rec.entries.items() if n not in added}, **rec.shared}


def _describe(entry: fdtree.Entry) -> str:
    st = entry.st
    mode = f"{stat.S_IMODE(st.st_mode):o}"
    if stat.S_ISLNK(st.st_mode):
        return f"l:{entry.link}"
    if stat.S_ISDIR(st.st_mode):
        return f"d:{mode}"
    if stat.S_ISREG(st.st_mode):
        return f"f:{mode}:{digests.blake3_of_fd(entry.fd)}"
    return f"?:{stat.S_IFMT(st.st_mode):o}"


def scan(root: Path) -> dict[str, str]:
    """Describe every entry under `root`, by descriptor (the app may write in a kept release:
    a link or a FIFO swapped in is described, never followed or opened)."""
    return {entry.name: _describe(entry) for entry in fdtree.walk(root)}


def record(root: Path, version: str) -> TreeRecord:
    return TreeRecord(version=version, entries=scan(root))


def differences(root: Path, rec: TreeRecord, added: bool = True) -> list[str]:
    """What differs between the release at `root` and its record (empty: it is intact).

    `added=False` leaves out entries that were not in the release as installed: what a program
    writes next to itself (Python's `__pycache__`) changes none of what was installed."""
    if not root.is_dir():
        return [f"{root} is missing"]
    return compare(scan(root), rec.entries, added)


def compare(found: dict[str, str], expected: dict[str, str], added: bool) -> list[str]:
    """What differs between two trees' entries, `found` against `expected` (empty: none)."""
    problems = [f"{name}: missing" for name in sorted(expected.keys() - found.keys())]
    if added:
        problems += [f"{name}: not in the release as installed"
                     for name in sorted(found.keys() - expected.keys())]
    problems += [f"{name}: changed ({found[name].split(':')[0]})"
                 for name in sorted(expected.keys() & found.keys())
                 if found[name] != expected[name]]
    return problems


def _path(state_folder: Path, version: str) -> Path:
    if not versions.is_safe_name(version):
        raise ValueError(f"version {version!r} cannot name a file")
    return state_folder / "trees" / f"{version}.json"


def save(state_folder: Path, rec: TreeRecord) -> None:
    path = _path(state_folder, rec.version)
    fsutil.ensure_private_dir(path.parent, 0o755)
    fsutil.atomic_write(path, msgspec.json.encode(rec))


def load(state_folder: Path, version: str) -> TreeRecord | None:
    try:
        return msgspec.json.decode(_path(state_folder, version).read_bytes(), type=TreeRecord)
    except (FileNotFoundError, ValueError, msgspec.DecodeError):
        return None


def drop(state_folder: Path, version: str) -> None:
    with contextlib.suppress(ValueError):
        _path(state_folder, version).unlink(missing_ok=True)
