"""An app's shared paths (`shared = ["data", "etc/app.conf"]`): what it writes at run time lives
in `PREFIX/shared/`, outside every release, and each release gets a link to it in its place
(catalogue row 159; Capistrano's `shared/` and `linked_dirs`).

A path missing from `shared/` is seeded once: from the running release when that holds its
own copy (what the app wrote before the path was shared: copied, so the running app keeps
it until its restart), else from the new release when it ships one (moved), else it starts
as an empty folder. Later releases' own copies are dropped
for the link: what the app wrote wins over what a release ships. Retention and rollbacks
remove or switch release folders only, so `shared/` is never touched by them, and the link
is part of the release's recorded tree, so `updaterd verify` counts nothing written there.

Nothing is written through a link: the app may own what is in `shared/`, so every folder
updaterd creates or moves into is checked to be a real folder first.
"""

from __future__ import annotations

import os
import shutil
import stat
from collections.abc import Callable, Iterable
from pathlib import Path

from updaterd import fsutil
from updaterd.errors import LayoutError

FOLDER = "shared"


def link_into(root: Path, prefix: Path, version: str, paths: Iterable[str],
              entries: dict[str, str], remove_tree: Callable[[Path], None],
              running: Path | None = None) -> None:
    """Replace each shared path of the staged release at `root` (to become
    `prefix/releases/version`) by a relative link to `prefix/shared/PATH`, seeding that from
    the release when it does not exist yet. `entries` (the staged tree's record) follows;
    `remove_tree` removes a folder the release shipped where the link goes; `running` is the
    folder of the release that runs now, if any."""
    shared = prefix / FOLDER
    for path in paths:
        parents = Path(path).parent.parts
        _real_folders(prefix, FOLDER, *parents)
        created = _real_folders(root, *parents)
        target, staged = shared / path, root / path
        before = running / path if running is not None else None
        if not os.path.lexists(target):
            if before is not None and os.path.lexists(before) and not before.is_symlink() \
                    and _real_folders_exist(running, *parents):
                _copy(before, target)  # what the app wrote before the path was shared
            elif os.path.lexists(staged) and not staged.is_symlink():
                os.rename(staged, target)  # the first release that ships it seeds it
            else:
                os.mkdir(target, 0o755)
            fsutil.fsync_dir(target.parent)
        if os.path.lexists(staged):  # the release's own copy: the link takes its place
            if staged.is_dir() and not staged.is_symlink():
                remove_tree(staged)
            else:
                staged.unlink()
        link = os.path.relpath(target, prefix / "releases" / version / Path(path).parent)
        os.symlink(link, staged)
        fsutil.fsync_dir(staged.parent)
        for name in [n for n in entries if n == path or n.startswith(path + "/")]:
            del entries[name]
        for name in created:
            entries[name] = f"d:{stat.S_IMODE(os.lstat(root / name).st_mode):o}"
        entries[path] = f"l:{link}"


def _real_folders_exist(base: Path | None, *parts: str) -> bool:
    """Whether `base/parts...` is a chain of real folders (no link on the way)."""
    here = base
    for part in parts:
        assert here is not None
        here = here / part
        if not here.is_dir() or here.is_symlink():
            return False
    return True


def _copy(src: Path, dest: Path) -> None:
    """Copy the app's own files, links as links, each with its owner (an app that runs as its
    own user keeps writing them); anything else (a FIFO, a socket, a device) is left out,
    never opened."""

    def regular_only(s: str, d: str) -> object:
        if stat.S_ISREG(os.lstat(s).st_mode):
            return shutil.copy2(s, d)
        return d

    if src.is_dir():
        shutil.copytree(src, dest, symlinks=True, copy_function=regular_only)
    elif src.is_file():
        shutil.copy2(src, dest)
    else:
        os.mkdir(dest, 0o755)
    _same_owners(src, dest)
    fsutil.make_durable(dest.parent)  # the copy is on disk before any release links to it


def _same_owners(src: Path, dest: Path) -> None:
    """Give every entry of the copy at `dest` the owner of its original (never through a
    link); what the app removed meanwhile stays root's."""
    names = [""]
    if dest.is_dir() and not dest.is_symlink():
        for folder, dirs, files in os.walk(dest):
            rel = os.path.relpath(folder, dest)
            names += [os.path.normpath(os.path.join(rel, n)) for n in dirs + files]
    for name in names:
        try:
            st = os.lstat(src / name)
        except FileNotFoundError:
            continue
        os.lchown(dest / name, st.st_uid, st.st_gid)


def _real_folders(base: Path, *parts: str) -> list[str]:
    """Make sure `base/parts...` is a chain of real folders (never a link), creating what is
    missing; returns the names (relative to `base`) of the folders created. Raises LayoutError
    at a link or a file."""
    created: list[str] = []
    here = base
    for i, part in enumerate(parts):
        here = here / part
        try:
            st = os.lstat(here)
        except FileNotFoundError:
            os.mkdir(here, 0o755)
            fsutil.fsync_dir(here.parent)
            created.append("/".join(parts[:i + 1]))
            continue
        if not stat.S_ISDIR(st.st_mode):
            raise LayoutError(f"{here} is not a folder (a link or a file); refusing to keep "
                              "shared files through it")
    return created
