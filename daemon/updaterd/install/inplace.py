"""The `inplace` install mode: one executable (`target`) replaced with one rename(2).

The new file is staged next to the target (a temp name updaterd recognises after a crash), given
the target's mode and group but updaterd's own owner (never another user's, who could rewrite it
before root's health check runs it: H147), and fsynced. Before the swap the current file is
copied to `<state_dir>/<app>/backups/<app>-<version>-<UTC time>`; a rollback copies a backup next
to the target and renames it over. Nothing else in the target's folder is touched.
"""

from __future__ import annotations

import contextlib
import os
import re
import stat
import tempfile
from pathlib import Path
from typing import BinaryIO

import blake3

from updaterd import failpoints, fdtree, fsutil
from updaterd.errors import ArchiveError, LayoutError
from updaterd.host.state import Transaction
from updaterd.install.layout import Kept, Staged
from updaterd.trust import archive, digests

_STAMP = re.compile(r"-(\d{8}T\d{6}Z)(?:\.\d+)?$")


def file_digest(path: Path) -> str | None:
    """BLAKE3 of a file, or None when it does not exist."""
    try:
        return digests.blake3_of_file(path)
    except OSError:
        return None


class InplaceLayout:
    """Paths and operations of one `inplace` app."""

    knows_version = False  # the file does not say which version it is; the state does
    keeps_trees = False  # a backup is one file

    def release_folders(self) -> None:
        return None  # deltas build release folders; an in-place executable is fetched whole

    def __init__(self, app: str, target: Path, backups: Path) -> None:
        self.app = app
        self.target = target
        self.folder = target.parent
        self.backups = backups
        self.scratch = backups.parent  # private staging for archives lives in the state folder

    @property
    def space_folder(self) -> Path:
        return self.folder

    def run_dir(self, version: str) -> Path:
        return self.folder

    def _temp_prefix(self) -> str:
        return f"{fsutil.TMP_MARK}{self.target.name}."

    def preflight(self) -> None:
        if not self.folder.is_dir():
            raise LayoutError(f"{self.folder} (the folder of target) does not exist")
        if self.target.is_symlink():
            raise LayoutError(f"{self.target} is a symbolic link; refusing to replace it")
        if self.target.exists() and not self.target.is_file():
            raise LayoutError(f"{self.target} is not a regular file")
        try:
            fsutil.probe_writable(self.folder, near=self.target)
        except OSError as e:
            raise LayoutError(f"{self.folder} is not writable: "
                              f"{fsutil.why_not_writable(self.folder, e)}") from None
        fsutil.ensure_private_dir(self.backups)

    def installed(self) -> str | None:
        return None

    # -- staging ----------------------------------------------------------------------------

    def stage(self, f: BinaryIO, kind: archive.Kind, limits: archive.ExtractLimits,
              raw_name: str, executable: str | None, version: str) -> Staged:
        """The new executable, copied next to the target with its mode and group, fsynced.

        Its owner is updaterd's user and nobody else may write it, whatever the old file was."""
        fsutil.ensure_private_dir(self.scratch, 0o755)
        scratch = Path(tempfile.mkdtemp(prefix=".staging-", dir=self.scratch))
        try:
            root = archive.extract(f, kind, scratch, limits, raw_name)
            failpoints.hit("stage.after_extract")
            chosen = self._choose(root, executable, kind)
            mode, gid = 0o755, -1
            with contextlib.suppress(FileNotFoundError):
                st = os.stat(self.target)
                mode, gid = st.st_mode & 0o7777 & ~0o6022, st.st_gid
            staged = fsutil.temp_name(self.target)
            h = blake3.blake3()
            out = os.open(staged, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            try:
                with open(chosen, "rb") as src:
                    while chunk := src.read(fsutil.COPY_CHUNK):
                        h.update(chunk)
                        fsutil.write_all(out, chunk)
                if gid not in (-1, os.getgid()):
                    os.fchown(out, -1, gid)
                os.fchmod(out, mode | 0o100)  # executable by its owner at least
                os.fsync(out)
            finally:
                os.close(out)
            failpoints.hit("stage.after_fsync")
            return Staged(version=version, path=str(staged), digest=h.hexdigest())
        finally:
            fdtree.remove_tree(scratch)

    @staticmethod
    def _choose(root: Path, executable: str | None, kind: archive.Kind) -> Path:
        if executable is not None:
            found = [p for p in root.rglob(executable) if p.is_file() and not p.is_symlink()]
            if len(found) != 1:
                raise ArchiveError(f"the archive holds {len(found)} files named {executable!r}; "
                                   "expected exactly one")
            return found[0]
        found = [p for p in root.rglob("*") if p.is_file() and not p.is_symlink()
                 and os.access(p, os.X_OK)]
        if len(found) != 1:
            raise ArchiveError(f"the archive holds {len(found)} executables; set `executable` "
                               "to the one to install")
        return found[0]

    # -- switching --------------------------------------------------------------------------

    def backup(self, version: str | None) -> str:
        """Copy the current target to the backups folder; "" when there is no target yet."""
        if not self.target.exists():
            return ""
        same = next((k for k in self.kept() if k.version == (version or "unknown")), None)
        if same is not None and file_digest(same.path) == file_digest(self.target):
            return str(same.path)  # already kept, byte for byte: no second copy in `retain`
        stamp = fsutil.utc_stamp()
        dest = self.backups / f"{self.app}-{version or 'unknown'}-{stamp}"
        n = 0
        while dest.exists():
            n += 1
            dest = self.backups / f"{self.app}-{version or 'unknown'}-{stamp}.{n}"
        tmp = fsutil.temp_name(dest)
        _copy_file(self.target, tmp)
        os.replace(tmp, dest)
        fsutil.fsync_dir(self.backups)
        failpoints.hit("inplace.after_backup")
        return str(dest)

    def switch_to(self, staged: Staged, failpoint: str) -> None:
        if failpoint:  # the staged file is this mode's temp link: ready, not yet in place
            failpoints.hit(failpoint + ".after_temp_link")
        os.replace(staged.path, self.target)
        if failpoint:
            failpoints.hit(failpoint + ".after_rename")
        fsutil.fsync_dir(self.folder)

    def switched_to(self, tx: Transaction) -> bool:
        return bool(tx.to_digest) and file_digest(self.target) == tx.to_digest

    def undo_interrupted(self, tx: Transaction) -> None:
        """The swap did not happen: the target is as it was; the staged file is a leftover."""

    def settle(self, version: str | None) -> None:
        """Nothing to refresh: the target is the whole install."""

    def restore(self, version: str | None, backup: str, failpoint: str) -> None:
        """Put a backup back by copy-then-rename, or remove the target when there was none."""
        if not backup:
            with contextlib.suppress(FileNotFoundError):
                self.target.unlink()
            fsutil.fsync_dir(self.folder)
            return
        source = self._own_backup(backup)
        group = None
        with contextlib.suppress(FileNotFoundError):
            group = os.stat(self.target).st_gid
        tmp = fsutil.temp_name(self.target)
        _copy_file(source, tmp, group)
        if failpoint:
            failpoints.hit(failpoint + ".after_temp_link")
        os.replace(tmp, self.target)
        if failpoint:
            failpoints.hit(failpoint + ".after_rename")
        fsutil.fsync_dir(self.folder)

    def _own_backup(self, backup: str) -> Path:
        """The journal names the backup to restore; it is data, not authority (G130): only
        a plain file directly in this app's backups folder is accepted."""
        path = Path(backup)
        if path.parent != self.backups or not path.name.startswith(f"{self.app}-") or \
                not path.is_file() or path.is_symlink():
            raise LayoutError(f"{backup} is not one of {self.app}'s backups in {self.backups}; "
                              "refusing to restore it")
        return path

    def discard(self, version: str) -> None:
        """Nothing to remove: a failed version left no folder behind."""

    # -- what is kept -----------------------------------------------------------------------

    def kept(self) -> list[Kept]:
        """Backups, newest first."""
        out = []
        prefix = f"{self.app}-"
        with contextlib.suppress(FileNotFoundError):
            for p in self.backups.iterdir():
                m = _STAMP.search(p.name)
                if not (p.is_file() and p.name.startswith(prefix) and m):
                    continue
                version = p.name[len(prefix):m.start()]
                out.append(Kept(version=version, path=p, installed_at=p.stat().st_mtime))
        out.sort(key=lambda k: (k.installed_at or 0, k.path.name), reverse=True)
        return out

    def kept_and_current(self, installed: str | None) -> list[tuple[Kept, bool]]:
        """The backup that is, byte for byte, what the target holds, is the current one."""
        now = file_digest(self.target)
        return [(k, now is not None and file_digest(k.path) == now) for k in self.kept()]

    def find_kept(self, wanted: str) -> Kept | None:
        """The newest backup of a version, or a backup named by its path (inside backups/)."""
        if "/" in wanted:
            path = Path(wanted)
            try:
                resolved = path.resolve(strict=True)
            except OSError:
                return None
            if resolved.parent != self.backups.resolve():
                raise LayoutError(f"{wanted} is not one of {self.app}'s backups in "
                                  f"{self.backups}; refusing to install it")
            return next((k for k in self.kept() if k.path.resolve() == resolved), None)
        return next((k for k in self.kept() if k.version == wanted), None)

    def prune(self, current: str | None, previous: str | None, retain: int) -> list[str]:
        """Keep the newest `retain` backups (at least one), oldest removed first."""
        removed = []
        for k in self.kept()[max(retain, 1):]:
            k.path.unlink()
            removed.append(k.path.name)
        return removed

    def clean_leftovers(self) -> list[str]:
        removed = []
        with contextlib.suppress(FileNotFoundError):
            for p in self.folder.iterdir():
                if p.name.startswith(self._temp_prefix()) and not p.is_dir():
                    p.unlink()
                    removed.append(str(p))
            for p in self.scratch.iterdir():
                if p.name.startswith(".staging-") and p.is_dir():
                    fdtree.remove_tree(p)
                    removed.append(str(p))
        removed += [str(p) for p in fsutil.clean_temp_files(self.backups)]
        return removed


def _copy_file(src: Path, dest: Path, group: int | None = None) -> None:
    """Copy a plain file (never through a link) to a new `dest`, fsynced, with its mode less
    the setuid and setgid bits (G130) and any write bit for others than its owner, which is
    updaterd's user (H147), and `group` when given."""
    fd_in = os.open(src, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        st = os.fstat(fd_in)
        if not stat.S_ISREG(st.st_mode):
            raise LayoutError(f"{src} is not a regular file")
        out = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                      0o600)
        try:
            while chunk := os.read(fd_in, fsutil.COPY_CHUNK):
                fsutil.write_all(out, chunk)
            if group is not None and group != os.getegid():
                os.fchown(out, -1, group)
            os.fchmod(out, stat.S_IMODE(st.st_mode) & ~0o6022)
            os.fsync(out)
        finally:
            os.close(out)
    finally:
        os.close(fd_in)
