"""Data that can come back (`data_snapshots = true`): a copy of the app's `shared/` taken just
before each update switches away from a version, kept as `PREFIX/snapshots/VERSION/` for as
long as that release is kept, and put back by `updaterctl rollback APP --with-data`.

A recall or a rollback never touches data by itself: code goes back, and only the operator
decides that the data goes back too (what the app wrote since is then kept as the snapshot of
the version left, so the choice can be undone). The copy is a reflink where the file system
has them (btrfs, XFS: near free), else a full copy: the cost is `shared/`'s size in time and
disk at every update.

`shared/` is the app's to write, so it is read and removed only by descriptor (`fdtree`);
`snapshots/` is root's, mode 0700, so the app cannot reach into a snapshot to change it (each
snapshot keeps the owners and modes of `shared/` itself, so that a restore gives them back).
A snapshot is made under a temporary name and renamed into place; the restore builds the
new `shared/` beside the old one and swaps them with two renames in the prefix, so a crash
leaves either the old data or the restored data, and running it again finishes it.
"""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path

from updaterd import failpoints, fdtree
from updaterd.errors import LayoutError
from updaterd.host.config import AppConfig
from updaterd.install.shared import FOLDER as SHARED

FOLDER = "snapshots"
TEMP = ".new-"  # a snapshot being made: `snapshots/.new-VERSION`
REPLACED = ".replaced-"  # the data a restore of the running version's own snapshot replaced
RESTORING = ".shared-restoring"  # the restored data, before the swap (in the prefix)
LEFT = ".shared-left"  # the data the swap took out, removed after it


def home(cfg: AppConfig) -> Path | None:
    """Where an app's snapshots live (its prefix): a `releases` app with shared paths; None
    for any other, which has no data of its own to keep."""
    if cfg.install != "releases" or not cfg.shared or cfg.prefix is None:
        return None
    return Path(cfg.prefix)


def _snapshots(prefix: Path) -> int:
    """The root-only folder of snapshots, made when missing."""
    folder = prefix / FOLDER
    with contextlib.suppress(FileExistsError):
        os.mkdir(folder, 0o700)
    fd = fdtree.open_folder(folder)
    os.fchmod(fd, 0o700)
    return fd


def has(prefix: Path, version: str) -> bool:
    return os.path.isdir(prefix / FOLDER / version) and \
        not os.path.islink(prefix / FOLDER / version)


def take(prefix: Path, version: str) -> bool:
    """Copy `shared/` as the data `version` leaves behind; False when there is no `shared/`
    yet (nothing to keep)."""
    with fdtree.opened(fdtree.open_folder(prefix)) as top:
        kind = fdtree.kind(top, SHARED)
        if kind is None:
            return False
        if kind != stat.S_IFDIR:  # a link in its place: never followed, never kept
            raise LayoutError(f"{prefix / SHARED} is not a folder; no data snapshot taken")
        with fdtree.opened(_snapshots(prefix)) as snaps:
            temp = TEMP + version
            fdtree.remove_entry(snaps, temp, str(prefix / FOLDER / temp))
            fdtree.copy_entry(top, SHARED, snaps, temp, str(prefix / SHARED))
            os.fsync(snaps)
            fdtree.remove_entry(snaps, version, str(prefix / FOLDER / version))
            os.rename(temp, version, src_dir_fd=snaps, dst_dir_fd=snaps)
            os.fsync(snaps)
    return True


def restore(prefix: Path, version: str, leaving: str | None) -> None:
    """Put the snapshot of `version` back as `shared/`; what `shared/` holds now is kept as
    the snapshot of `leaving` first. The data taken out stays as `.shared-left` until `tidy`
    (after the transaction is recorded): while it is there the swap is done or half done, and
    running this again after a crash finishes it instead of starting over."""
    with fdtree.opened(fdtree.open_folder(prefix)) as top:
        if fdtree.kind(top, LEFT) is not None:  # swapped (or half): finish, change nothing
            if fdtree.kind(top, SHARED) is None:
                os.rename(RESTORING, SHARED, src_dir_fd=top, dst_dir_fd=top)
                os.fsync(top)
            return
        if not has(prefix, version):
            raise LayoutError(f"no data snapshot of {version} is kept in {prefix / FOLDER}")
        if leaving is not None:  # data back under the same code: its snapshot stays as it is
            take(prefix, leaving if leaving != version else REPLACED + version)
        fdtree.remove_entry(top, RESTORING, str(prefix / RESTORING))
        with fdtree.opened(_snapshots(prefix)) as snaps:
            fdtree.copy_entry(snaps, version, top, RESTORING, str(prefix / FOLDER / version))
        os.fsync(top)
        failpoints.hit("data.after_copy")
        if fdtree.kind(top, SHARED) is not None:
            os.rename(SHARED, LEFT, src_dir_fd=top, dst_dir_fd=top)
        else:
            os.mkdir(LEFT, 0o700, dir_fd=top)
        os.fsync(top)
        failpoints.hit("data.after_left")
        os.rename(RESTORING, SHARED, src_dir_fd=top, dst_dir_fd=top)
        os.fsync(top)


def tidy(prefix: Path, kept: set[str]) -> list[str]:
    """After a transaction: remove the data a restore took out, the snapshots of versions no
    longer kept (retention bounds them as it bounds releases) and any half-made one; returns
    the versions whose snapshots were removed."""
    with fdtree.opened(fdtree.open_folder(prefix)) as top:
        if fdtree.kind(top, SHARED) is not None:  # else those may be the only copy of the data
            fdtree.remove_entry(top, LEFT, str(prefix / LEFT))
            fdtree.remove_entry(top, RESTORING, str(prefix / RESTORING))
    if not os.path.isdir(prefix / FOLDER):
        return []
    removed = []
    with fdtree.opened(_snapshots(prefix)) as snaps:
        for name in sorted(os.listdir(snaps)):
            if name.startswith(TEMP) or name.removeprefix(REPLACED) not in kept:
                fdtree.remove_entry(snaps, name, str(prefix / FOLDER / name))
                if not name.startswith((TEMP, REPLACED)):
                    removed.append(name)
    return removed


def sizes(prefix: Path) -> dict[str, int]:
    """Bytes each kept snapshot holds, by version (what `list-backups` shows)."""
    folder = prefix / FOLDER
    names = sorted(os.listdir(folder)) if folder.is_dir() else []
    return {v: sum(e.st.st_size for e in fdtree.walk(folder / v) if stat.S_ISREG(e.st.st_mode))
            for v in names if not v.startswith(".") and has(prefix, v)}
