"""An app's shared paths (`shared = ["data", "etc/app.conf"]`): what it writes at run time lives
in `PREFIX/shared/`, outside every release, and each release gets a link to it in its place
(catalogue H159; Capistrano's `shared/` and `linked_dirs`).

A path missing from `shared/` is seeded once: from the running release when that holds its
own copy (what the app wrote before the path was shared: copied, so the running app keeps
it until its restart), else from the new release when it ships one (moved), else it starts
as an empty folder. Later releases' own copies are dropped
for the link: what the app wrote wins over what a release ships. Retention and rollbacks
remove or switch release folders only, so `shared/` is never touched by them, and the link
is part of the release's recorded tree, so `updaterd verify` counts nothing written there.

Nothing is read or written through a link: the app may own what is in `shared/` and in the
running release, and may swap a folder for a link at any instant, so every folder is opened by
descriptor and never through a link, and the seed is copied by `fdtree` (J168-J170).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable
from pathlib import Path

from updaterd import fdtree, fsutil
from updaterd.errors import LayoutError

FOLDER = "shared"


def link_into(root: Path, prefix: Path, version: str, paths: Iterable[str],
              entries: dict[str, str],
              running: Path | None = None) -> tuple[dict[str, str], list[str]]:
    """Replace each shared path of the staged release at `root` (to become
    `prefix/releases/version`) by a relative link to `prefix/shared/PATH`, seeding that from
    the release when it does not exist yet. `entries` (the staged tree's record) follows;
    `running` is the folder of the release that runs now, if any. Returns what changed in
    `entries`: those removed (the release's own, as staged) and the names added."""
    removed: dict[str, str] = {}
    added: list[str] = []
    for path in paths:
        parents, name = Path(path).parent.parts, Path(path).name
        created: list[str] = []
        with fdtree.opened(_real_folders(prefix, [], FOLDER, *parents)) as shared, \
                fdtree.opened(_real_folders(root, created, *parents)) as staged:
            if fdtree.kind(shared, name) is None:
                _seed(shared, staged, name, path, running)
            if fdtree.kind(staged, name) is not None:  # the release's own copy: the link
                fdtree.remove_entry(staged, name, str(root / path))  # takes its place
            link = os.path.relpath(prefix / FOLDER / path,
                                   prefix / "releases" / version / Path(path).parent)
            os.symlink(link, name, dir_fd=staged)
            os.fsync(staged)
        for entry in [n for n in entries if under(n, (path,))]:
            removed[entry] = entries.pop(entry)
        for folder in created:
            entries[folder] = f"d:{stat.S_IMODE(os.lstat(root / folder).st_mode):o}"
        entries[path] = f"l:{link}"
        added += [*created, path]
    return removed, added


def under(name: str, paths: Iterable[str]) -> bool:
    """Whether the entry `name` is a shared path or inside one."""
    return any(name == p or name.startswith(p + "/") for p in paths)


def _seed(shared: int, staged: int, name: str, path: str, running: Path | None) -> None:
    """The first content of `shared/PATH`: the running release's copy (what the app wrote
    before the path was shared: copied, so the running app keeps it until its restart), else
    the new release's (moved), else an empty folder."""
    if running is not None and _copy_from_running(shared, name, path, running):
        return
    if fdtree.kind(staged, name) not in (None, stat.S_IFLNK):
        os.rename(name, name, src_dir_fd=staged, dst_dir_fd=shared)  # the first release
    else:                                                            # that ships it seeds it
        os.mkdir(name, 0o755, dir_fd=shared)
    os.fsync(shared)


def _copy_from_running(shared: int, name: str, path: str, running: Path) -> bool:
    """Copy the running release's own `path` into `shared/` (under a private name, then one
    rename), when it has one under a chain of real folders and it is no link; whether it
    did."""
    try:
        before = fdtree.open_folder(running, *Path(path).parent.parts)
    except (FileNotFoundError, fdtree.TreeError):
        return False
    temp = fsutil.temp_name(Path(name)).name
    with fdtree.opened(before):
        if fdtree.kind(before, name) in (None, stat.S_IFLNK) or \
                not fdtree.copy_entry(before, name, shared, temp, str(running / path)):
            return False
    fsutil.sync_filesystem(shared, path)  # on disk before any release links it
    os.rename(temp, name, src_dir_fd=shared, dst_dir_fd=shared)
    os.fsync(shared)
    return True


def _real_folders(base: Path, created: list[str], *parts: str) -> int:
    """A descriptor of `base/parts...`, a chain of real folders (never a link) made where
    missing (mode 0755); the names (relative to `base`) of the folders made are added to
    `created`. Raises LayoutError at a link or a file."""
    fd = fdtree.open_folder(base)
    for i, part in enumerate(parts):
        if fdtree.kind(fd, part) is None:
            os.mkdir(part, 0o755, dir_fd=fd)
            os.fsync(fd)
            created.append("/".join(parts[:i + 1]))
        try:
            child = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
                            dir_fd=fd)
        except OSError:
            os.close(fd)
            raise LayoutError(f"{base.joinpath(*parts[:i + 1])} is not a folder (a link or a "
                              "file); refusing to keep shared files through it") from None
        os.close(fd)
        fd = child
    return fd
