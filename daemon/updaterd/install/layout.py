"""The `releases` install layout under a prefix, and every change made to it.

  <prefix>/releases/<version>/   complete, verified, never written after it is switched to
  <prefix>/current -> releases/<version>
  <prefix>/bin/<name> -> ../current/<path>
  <prefix>/.staging/             fresh mkdtemp folders, empty when idle
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol

from updaterd import failpoints, fdtree, fsutil, versions
from updaterd.errors import LayoutError
from updaterd.host.state import Transaction
from updaterd.install.shared import link_into as link_shared
from updaterd.trust import archive, treehash

log = logging.getLogger("updaterd.layout")


@dataclass
class Staged:
    """A version made ready to switch to: a release folder, or a file next to the target."""

    version: str
    path: str
    digest: str = ""  # inplace: BLAKE3 of the new file, to tell after a crash what is in place
    tree: treehash.TreeRecord | None = None  # releases: every file's BLAKE3, for `verify`


@dataclass
class Kept:
    """A version kept on disk that a rollback can return to."""

    version: str
    path: Path
    installed_at: float | None = None


class InstallLayout(Protocol):
    """What the transaction asks of an install mode: `Layout` below (`releases`) and
    `inplace.InplaceLayout` (`inplace`) are the two. Every method that changes what the app
    runs is one rename (or none), so that a crash between two of them leaves a state the
    journal can finish or undo."""

    # True when the disk says which version is installed (`current`); False when only the
    # state knows (one executable carries no version): the engine then trusts the state.
    knows_version: bool
    # True when every version is a folder whose tree is recorded (treehash): it can be
    # re-hashed (`updaterd verify`) and a delta can build from it.
    keeps_trees: bool

    @property
    def space_folder(self) -> Path:
        """Where the new version is written: its free space is checked before a download."""

    def run_dir(self, version: str) -> Path:
        """The working folder of the restart and health-check commands."""

    def preflight(self) -> None:
        """Create what is missing and prove it writable, before anything is downloaded."""

    def installed(self) -> str | None:
        """The version the disk says is current (None when it cannot say)."""

    def stage(self, f: BinaryIO, kind: archive.Kind, limits: archive.ExtractLimits,
              raw_name: str, executable: str | None, version: str) -> Staged:
        """Make `version` ready to switch to, durable, without touching what runs."""

    def backup(self, version: str | None) -> str:
        """Keep what is current so that a rollback can restore it ("" when nothing to do)."""

    def switch_to(self, staged: Staged, failpoint: str) -> None:
        """The switch: one rename."""

    def switched_to(self, tx: Transaction) -> bool:
        """After a crash: did the journaled switch happen?"""

    def undo_interrupted(self, tx: Transaction) -> None:
        """After a crash before the switch finished: put the old version back."""

    def settle(self, version: str | None) -> None:
        """After a crash after the switch: finish what follows it (links)."""

    def restore(self, version: str | None, backup: str, failpoint: str) -> None:
        """A rollback's switch: back to `version` (from `backup` when the mode keeps one)."""

    def discard(self, version: str) -> None:
        """Remove a version that failed its checks (never the current one)."""

    def kept(self) -> list[Kept]:
        """The versions a rollback can return to."""

    def release_folders(self) -> Layout | None:
        """The layout of release folders, through which a release is built from a kept one
        and a delta; None when this mode keeps no folders (an in-place executable)."""

    def find_kept(self, wanted: str) -> Kept | None:
        """One of them, by version (or, inplace, by the path of a backup)."""

    def kept_and_current(self, installed: str | None) -> list[tuple[Kept, bool]]:
        """Each kept version, with whether it is what runs now (may read files: call it in a
        thread)."""

    def prune(self, current: str | None, previous: str | None, retain: int) -> list[str]:
        """Keep `retain` of them; returns what was removed."""

    def clean_leftovers(self) -> list[str]:
        """Remove what a crash left (staging folders, temp files); returns what was removed."""


class Layout:
    """Paths and operations of one app's prefix (the `releases` install mode); an
    InstallLayout, with the release folders, `current` and `bin/` links besides."""

    knows_version = True  # `current` says which version is installed
    keeps_trees = True

    def __init__(self, prefix: Path, shared: tuple[str, ...] = ()) -> None:
        self.prefix = prefix
        self.shared = shared  # paths kept in prefix/shared/, linked into each release
        self.releases = prefix / "releases"
        self.current = prefix / "current"
        self.bin = prefix / "bin"
        self.staging = prefix / ".staging"

    def release(self, version: str) -> Path:
        if not versions.is_safe_name(version):
            raise LayoutError(f"version {version!r} cannot name a release folder")
        return self.releases / version

    def preflight(self) -> None:
        """Create the folders and prove they are writable and on one filesystem."""
        for folder in (self.prefix, self.releases, self.bin):
            if folder.is_symlink():
                raise LayoutError(f"{folder} is a symbolic link; refusing to use it")
            try:
                folder.mkdir(parents=True, exist_ok=True, mode=0o755)
            except OSError as e:
                raise LayoutError(f"cannot create {folder}: "
                                  f"{fsutil.why_not_writable(folder, e)}") from None
        fsutil.ensure_private_dir(self.staging)
        for folder in (self.prefix, self.releases, self.bin, self.staging):
            try:
                fsutil.probe_writable(folder)
            except OSError as e:
                raise LayoutError(f"{folder} is not writable: "
                                  f"{fsutil.why_not_writable(folder, e)}") from None
        if os.stat(self.staging).st_dev != os.stat(self.releases).st_dev:
            raise LayoutError(f"{self.staging} and {self.releases} are on different filesystems")

    def installed(self) -> str | None:
        """The version `current` points at, or None when there is no (valid) link."""
        try:
            target = os.readlink(self.current)
        except (FileNotFoundError, OSError):
            return None
        head, _, name = target.rpartition("/")
        if head != "releases" or not versions.is_safe_name(name):
            return None
        return name if (self.releases / name).is_dir() else None

    def new_staging(self) -> Path:
        """A fresh private folder inside `.staging` (mode 0700)."""
        return Path(tempfile.mkdtemp(prefix="stage-", dir=self.staging))

    def place_release(self, root: Path, version: str) -> Path:
        """Move a staged, fsynced tree to `releases/<version>` with one rename."""
        dest = self.release(version)
        if dest.exists() or dest.is_symlink():
            if self.installed() == version:
                raise LayoutError(f"{version} is the current release; it is never replaced")
            log.info("replacing the earlier, unused copy of %s", dest)
            self.retire(dest)
        os.chmod(root, 0o755)
        os.rename(root, dest)
        fsutil.fsync_dir(self.releases)
        return dest

    def switch(self, version: str, failpoint: str) -> None:
        """Point `current` at `releases/<version>` (one rename), then refresh `bin/` links."""
        if not self.release(version).is_dir():
            raise LayoutError(f"release folder for {version} is missing")
        fsutil.replace_symlink(self.current, f"releases/{version}", failpoint=failpoint)
        self.refresh_bin_links(version)

    def unswitch(self) -> None:
        """Remove `current` (a failed first install has nothing to go back to)."""
        with contextlib.suppress(FileNotFoundError):
            self.current.unlink()
        fsutil.fsync_dir(self.prefix)
        self.refresh_bin_links(None)

    def refresh_bin_links(self, version: str | None) -> None:
        """bin/<name> -> ../current/<path> for every executable of the release; stale ones go."""
        wanted: dict[str, str] = {}
        if version is not None:
            root = self.release(version)
            for exe in archive.executables(root):
                wanted[exe.name] = "../current/" + exe.relative_to(root).as_posix()
        for entry in self.bin.iterdir():
            if entry.is_symlink() and os.readlink(entry).startswith("../current/") \
                    and entry.name not in wanted:
                entry.unlink()
        for name, target in wanted.items():
            link = self.bin / name
            if link.is_symlink() and os.readlink(link) == target:
                continue
            if link.exists() and not link.is_symlink():
                log.warning("%s is not a link made by updaterd; leaving it alone", link)
                continue
            fsutil.replace_symlink(link, target)
        fsutil.fsync_dir(self.bin)

    def versions_on_disk(self) -> list[str]:
        try:
            return versions.ordered(p.name for p in self.releases.iterdir()
                                    if p.is_dir() and not p.is_symlink())
        except FileNotFoundError:
            return []

    def prune(self, current: str | None, previous: str | None, retain: int) -> list[str]:
        """Keep `retain` releases besides the current one; never remove current or previous."""
        protected = {v for v in (current, previous) if v}
        others = [v for v in self.versions_on_disk() if v not in protected]
        try:
            others.sort(key=versions.key, reverse=True)
        except ValueError:
            others.sort(reverse=True)
        spare = max(retain - len(protected - {current}), 0)
        removed = others[spare:]
        for v in removed:
            self.retire(self.releases / v, failpoint="prune.after_rename", finish=False)
        return removed

    def retire(self, path: Path, failpoint: str = "", finish: bool = True) -> None:
        """Take a folder out of `releases/` with one rename into `.staging`, then delete it.

        Deleting in place would let a kill half-way leave a release with files missing that
        `verify`, `list-backups` and a rollback still see; moved first, a kill leaves a
        leftover that the next start removes, and the release is whole or gone. What the app
        made in it is removed by descriptor (J169); when that is refused, the release is
        gone all the same and the rest waits in `.staging`, logged with the reason (`finish`
        False), or the error is raised (`finish` True)."""
        fsutil.ensure_private_dir(self.staging)
        grave = Path(tempfile.mkdtemp(prefix="retired-", dir=self.staging))
        os.rename(path, grave / path.name)
        fsutil.fsync_dir(path.parent)
        if failpoint:
            failpoints.hit(failpoint)
        try:
            fdtree.remove_tree(grave)
        except fdtree.TreeError as e:
            if finish:
                raise
            log.error("%s; %s is no longer kept, what is left of it stays in %s", e,
                      path.name, grave)

    # -- the interface shared with InplaceLayout ---------------------------------------------

    def release_folders(self) -> Layout:
        return self

    @property
    def space_folder(self) -> Path:
        return self.prefix

    def run_dir(self, version: str) -> Path:
        return self.release(version)

    def stage(self, f: BinaryIO, kind: archive.Kind, limits: archive.ExtractLimits,
              raw_name: str, executable: str | None, version: str) -> Staged:
        """Extract into a fresh staging folder, fsync, and move it to releases/<version>."""
        return self.stage_with(lambda staging: archive.extract(f, kind, staging, limits,
                                                               raw_name), version)

    def stage_with(self, make: Callable[[Path], Path], version: str,
                   expected: dict[str, str] | None = None,
                   shipped: dict[str, str] | None = None) -> Staged:
        """Make the release in a fresh staging folder (`make` returns its root), fsync it, and
        move it to releases/<version>; with `expected`, only when its tree is exactly that.
        `shipped`: what the release ships at its shared paths, when `make` left them out (a
        delta's build), for the record."""
        staging = self.new_staging()
        try:
            root = make(staging)
            failpoints.hit("stage.after_extract")
            fsutil.make_durable(root)
            failpoints.hit("stage.after_fsync")
            tree = treehash.record(root, version)
            if expected is not None and tree.entries != expected:
                raise LayoutError(f"{version} as built differs from its description: "
                                  f"{treehash.compare(tree.entries, expected, added=True)[0]}")
            if self.shared:  # after the check: a delta builds the release as published
                removed, tree.linked = link_shared(root, self.prefix, version, self.shared,
                                                   tree.entries, self._running_release())
                tree.shared = removed if shipped is None else shipped
            dest = self.place_release(root, version)
            failpoints.hit("release.after_rename")
            return Staged(version=version, path=str(dest), tree=tree)
        finally:
            fdtree.remove_tree(staging)

    def _running_release(self) -> Path | None:
        """The folder `current` points at, when it is one of the releases."""
        version = self.installed()
        return self.release(version) if version is not None else None

    def backup(self, version: str | None) -> str:
        return ""  # the release folder of the current version is the backup

    def switch_to(self, staged: Staged, failpoint: str) -> None:
        self.switch(staged.version, failpoint)

    def switched_to(self, tx: Transaction) -> bool:
        return self.installed() == tx.to_version

    def undo_interrupted(self, tx: Transaction) -> None:
        """The switch did not happen (or not fully): point `current` back at the old version."""
        on_disk = self.installed()
        if on_disk != tx.from_version:
            self.restore(tx.from_version, "", "")
        else:
            self.settle(on_disk)

    def settle(self, version: str | None) -> None:
        self.refresh_bin_links(version)

    def restore(self, version: str | None, backup: str, failpoint: str) -> None:
        if version is not None:
            self.switch(version, failpoint)
        else:
            self.unswitch()

    def discard(self, version: str) -> None:
        with contextlib.suppress(OSError, LayoutError, fdtree.TreeError):
            self.retire(self.release(version))

    def kept(self) -> list[Kept]:
        return [Kept(version=v, path=self.releases / v) for v in self.versions_on_disk()]

    def find_kept(self, wanted: str) -> Kept | None:
        return next((k for k in self.kept() if k.version == wanted), None)

    def kept_and_current(self, installed: str | None) -> list[tuple[Kept, bool]]:
        return [(k, k.version == installed) for k in self.kept()]

    def clean_leftovers(self) -> list[str]:
        """What a crash leaves: staging folders and temp links. Returns what was removed."""
        removed = []
        if self.staging.is_dir():
            for entry in self.staging.iterdir():
                try:
                    fdtree.remove_tree(entry)
                except fdtree.TreeError as e:
                    log.error("a leftover of a crash stays: %s", e)
                    continue
                removed.append(str(entry))
        for folder in (self.prefix, self.bin, self.releases):
            removed += [str(p) for p in fsutil.clean_temp_files(folder)]
        return removed
