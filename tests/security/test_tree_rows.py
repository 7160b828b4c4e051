"""Rows 168-170: root never acts by path inside a tree another user can write (the app's old
releases and its `shared/` data). The app's move is made at the worst instant, from inside the
very call it attacks (a listing or an unlink), so that each race is met every run."""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from updaterd import fdtree
from updaterd.install.layout import Layout

APP_UID = 65534  # the app runs as its own user


def victim(tmp_path: Path) -> Path:
    """A root-only folder elsewhere on the host, with a secret and a file named as one the
    app's tree holds."""
    folder = tmp_path / "root-only"
    folder.mkdir(mode=0o700)
    for name in ("secret", "f1"):
        (folder / name).write_bytes(b"root's secret\n")
        os.chmod(folder / name, 0o600)
    os.chmod(folder, 0o700)
    return folder


def untouched(folder: Path) -> bool:
    return stat.S_IMODE(folder.stat().st_mode) == 0o700 and all(
        (folder / n).read_bytes() == b"root's secret\n"
        and stat.S_IMODE((folder / n).stat().st_mode) == 0o600 for n in ("secret", "f1"))


def app_owned(root: Path) -> None:
    for p in [root, *root.rglob("*")]:
        os.lchown(p, APP_UID, APP_UID)


def swap_for_link(folder: Path, to: Path) -> None:
    """The app's move: its folder aside, a link to somewhere else in its place."""
    os.rename(folder, folder.with_name(folder.name + ".real"))
    os.symlink(to, folder)


@contextlib.contextmanager
def after_listing(folder: Path, act: Callable[[], None]) -> Iterator[None]:
    """Run `act` once, right after `folder` is first listed, whichever call lists it (a
    scandir by path, a listdir of a descriptor)."""
    ino = folder.stat().st_ino
    done: list[bool] = []
    real_listdir, real_scandir = os.listdir, os.scandir

    def is_it(arg: Any) -> bool:
        try:
            st = os.fstat(arg) if isinstance(arg, int) else os.stat(arg)
        except (OSError, TypeError):
            return False
        return st.st_ino == ino

    def listdir(arg: Any = ".") -> list[str]:
        out = real_listdir(arg)
        if not done and is_it(arg):
            done.append(True)
            act()
        return out

    def scandir(arg: Any = ".") -> Any:
        entries = list(real_scandir(arg))
        if not done and is_it(arg):
            done.append(True)
            act()
        return _Entries(entries)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(os, "listdir", listdir)
        mp.setattr(os, "scandir", scandir)
        yield
    assert done, f"{folder} was never listed"


class _Entries:
    """What os.scandir returns, already read: an iterator and a context manager."""

    def __init__(self, entries: list[Any]) -> None:
        self.entries = iter(entries)

    def __iter__(self) -> _Entries:
        return self

    def __next__(self) -> Any:
        return next(self.entries)

    def close(self) -> None:
        return None

    def __enter__(self) -> _Entries:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


def a_prefix_running_100(tmp_path: Path) -> tuple[Layout, Path]:
    """A prefix whose running release 1.0.0 holds the app's own `data/` (written before the
    path was shared), with a sub-folder `data/sub`."""
    layout = Layout(tmp_path / "prefix", shared=("data",))
    layout.preflight()
    running = layout.release("1.0.0")
    (running / "data" / "sub").mkdir(parents=True)
    (running / "data" / "runs").write_text("1.0.0\n")
    (running / "data" / "sub" / "secret").write_text("the app's own\n")  # named as root's
    app_owned(running / "data")
    layout.switch("1.0.0", "")
    return layout, running


def stage_110(layout: Layout) -> None:
    def make(staging: Path) -> Path:
        (staging / "app" / "bin").mkdir(parents=True)
        (staging / "app" / "bin" / "app").write_text("1.1.0\n")
        return staging / "app"

    layout.stage_with(make, "1.1.0")


def every_byte_under(root: Path) -> list[bytes]:
    return [p.read_bytes() for p in root.rglob("*") if p.is_file() and not p.is_symlink()]


def test_j168_seeding_a_shared_path_never_follows_a_link_swapped_in_during_the_copy(
        tmp_path: Path) -> None:
    secret = victim(tmp_path)
    layout, running = a_prefix_running_100(tmp_path)
    with after_listing(running / "data", lambda: swap_for_link(running / "data" / "sub",
                                                               secret)):
        stage_110(layout)
    shared = layout.prefix / "shared" / "data"
    assert b"root's secret\n" not in every_byte_under(shared)
    assert (shared / "runs").read_text() == "1.0.0\n"
    assert os.readlink(shared / "sub") == str(secret)  # the link, as a link, never followed
    assert untouched(secret)


def test_j168_a_copy_takes_owner_and_mode_from_what_it_read_and_never_opens_a_fifo(
        tmp_path: Path) -> None:
    layout, running = a_prefix_running_100(tmp_path)
    data = running / "data"
    os.mkfifo(data / "pipe")
    os.chmod(data / "runs", 0o640)
    os.chmod(data / "sub", 0o750)
    (data / "root-made").write_text("root's, readable by root alone\n")
    os.chmod(data / "root-made", 0o600)
    os.symlink("/etc/shadow", data / "shadow")
    os.lchown(data / "shadow", APP_UID, APP_UID)
    stage_110(layout)  # a FIFO opened for reading would block here for ever
    shared = layout.prefix / "shared" / "data"

    def owner_mode(p: Path) -> tuple[int, int, int]:
        st = os.lstat(p)
        return st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)

    assert owner_mode(shared / "runs") == (APP_UID, APP_UID, 0o640)
    assert owner_mode(shared / "sub") == (APP_UID, APP_UID, 0o750)
    assert owner_mode(shared / "root-made") == (0, 0, 0o600)
    assert os.readlink(shared / "shadow") == "/etc/shadow"
    assert os.lstat(shared / "shadow").st_uid == APP_UID
    assert not os.path.lexists(shared / "pipe")
    assert os.readlink(layout.release("1.1.0") / "data") == "../../shared/data"


def an_old_release_the_app_wrote_in(tmp_path: Path) -> tuple[Layout, Path]:
    layout = Layout(tmp_path / "prefix")
    layout.preflight()
    for version in ("1.0.0", "1.1.0", "1.2.0"):
        (layout.release(version) / "bin").mkdir(parents=True)
    old = layout.release("1.0.0") / "x"
    old.mkdir()
    for name in ("f1", "f2"):
        (old / name).write_text("the app's\n")
    app_owned(old)
    layout.switch("1.2.0", "")
    return layout, old


def test_j169_removing_an_old_release_never_acts_through_a_link_swapped_in_when_an_unlink_fails(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The app makes one unlink fail and swaps the folder for a link at that instant: the old
    error handler then chmod-ed and unlinked by name, through the link."""
    secret = victim(tmp_path)
    layout, _ = an_old_release_the_app_wrote_in(tmp_path)
    real_unlink = os.unlink
    fired: list[str] = []

    def unlink(path: Any, *args: Any, dir_fd: int | None = None) -> None:
        if not fired and os.path.basename(path) == "f1":
            fired.append(str(path))
            grave = Path(os.readlink(f"/proc/self/fd/{dir_fd}")) if dir_fd is not None \
                else Path(path).parent
            swap_for_link(grave, secret)
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        real_unlink(path, *args, dir_fd=dir_fd)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(os, "unlink", unlink)
        removed = layout.prune("1.2.0", "1.1.0", retain=1)
    assert fired and untouched(secret)
    assert removed == ["1.0.0"] and not layout.release("1.0.0").exists()
    assert any("cannot remove" in r.getMessage() and "refusing to act on it by name"
               in r.getMessage() and r.levelname == "ERROR" for r in caplog.records)


def test_j169_a_failure_inside_a_tree_stops_with_an_error_naming_the_path_and_its_owner(
        tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    (tree / "deep").mkdir(parents=True)
    (tree / "deep" / "file").write_text("x")
    app_owned(tree)
    real_rmdir = os.rmdir

    def rmdir(path: Any, *, dir_fd: int | None = None) -> None:
        if path == "deep":
            raise OSError(errno.ENOTEMPTY, "Directory not empty", path)
        real_rmdir(path, dir_fd=dir_fd)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(os, "rmdir", rmdir)
        with pytest.raises(fdtree.TreeError) as e:
            fdtree.remove_tree(tree)
    assert f"cannot remove {tree}/deep: Directory not empty (owned by uid {APP_UID})" in \
        str(e.value)


def test_j169_a_tree_deeper_than_the_walk_allows_is_refused_by_name(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    deep = tree
    for _ in range(fdtree.MAX_DEPTH + 2):
        deep = deep / "d"
    deep.mkdir(parents=True)
    with pytest.raises(fdtree.TreeError, match="folders deep"):
        fdtree.remove_tree(tree)
    assert tree.is_dir()  # nothing half-done by another route


def test_j169_a_link_a_file_and_a_folder_without_modes_are_removed_as_themselves(
        tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep").write_text("keep")
    tree = tmp_path / "tree"
    (tree / "shut").mkdir(parents=True)
    (tree / "shut" / "f").write_text("x")
    os.chmod(tree / "shut", 0)
    os.symlink(outside, tree / "link")
    os.symlink(outside / "keep", tmp_path / "a-link")
    fdtree.remove_tree(tree)
    fdtree.remove_tree(tmp_path / "a-link")
    fdtree.remove_tree(tmp_path / "gone-already")
    assert not tree.exists() and (outside / "keep").read_text() == "keep"
    assert not os.path.lexists(tmp_path / "a-link")


# -- J170: one module acts by descriptor, and nothing else acts by path ---------------------

DAEMON = Path(__file__).resolve().parents[2] / "daemon" / "updaterd"
# What `fdtree` offers: the only way daemon code walks, copies or removes inside a tree another
# user can write (an app's releases, its shared/ data).
FDTREE_OPERATIONS = {"open_folder", "opened", "kind", "walk", "copy_entry", "remove_tree",
                     "remove_entry"}
# Changes made by path, each in a place no other user can write, and why it is that.
# A new one fails the test: act through fdtree, or add it here with the reason.
BY_PATH_ALLOWED = {
    ("cli", "_daemonize", ".unlink"): "the pid file, refused when another user owns it (G145)",
    ("fsutil", "fsync_tree", "os.walk"): "a tree updaterd extracted in its private .staging",
    ("fsutil", "probe_writable", "os.unlink"): "the temp file it created there with O_EXCL",
    ("fsutil", "ensure_private_dir", "os.chmod"): "a folder just checked to be root's own",
    ("fsutil", "atomic_write", "os.unlink"): "its own temp file (O_EXCL, O_NOFOLLOW)",
    ("fsutil", "clean_temp_files", ".unlink"): "temp files in updaterd's own folders",
    ("install.inplace", "prune", ".unlink"): "backups: root's folder (H147)",
    ("install.inplace", "restore", ".unlink"): "the target, whose folder no one else writes",
    ("install.inplace", "clean_leftovers", ".unlink"): "temp files beside the target",
    ("install.layout", "place_release", "os.chmod"): "the staged root, in private .staging",
    ("install.layout", "unswitch", ".unlink"): "the `current` link in the prefix (root's)",
    ("install.layout", "refresh_bin_links", ".unlink"): "links in prefix/bin (root's)",
    ("install.selfupdate", "_copy_package", "shutil.copytree"): "updaterd's own package",
    ("install.selfupdate", "_explicit_modes", "os.walk"): "updaterd's own new release",
    ("install.selfupdate", "_explicit_modes", "os.chmod"): "updaterd's own new release",
    ("install.selfupdate", "release_tree", ".chmod"): "updaterd's own new release",
    ("install.selfupdate", "self_install", "shutil.rmtree"): "updaterd's own staged release",
    ("install.selfupdate", "end_trial", ".unlink"): "updaterd's own marker file",
    ("install.selfupdate", "take_failed", ".unlink"): "updaterd's own marker file",
    ("engine.acquire", "discard_download", ".unlink"): "the download cache (root's)",
    ("engine.acquire", "_stage_from_delta", ".unlink"): "the download cache (root's)",
    ("net.cachefile", "fresh_part", ".unlink"): "the download cache (root's)",
    ("net.cachefile", "discard", ".unlink"): "the download cache (root's)",
    ("release.feedtools", "prune", ".unlink"): "the publisher's own feed folder (J171)",
    ("release.publish", "publish", ".unlink"): "the publisher's own feed folder (J171)",
    ("release.publish", "publish", "shutil.copyfile"): "into the publisher's own feed folder",
    ("service.rpc", "set_socket_access", "os.chmod"): "the control socket in /run (root's)",
    ("service.rpc", "set_socket_access", "os.chown"): "the control socket in /run (root's)",
    ("service.rpc", "create_socket", "os.unlink"): "a stale control socket in /run (root's)",
    ("service.service", "run", ".unlink"): "the control socket in /run (root's)",
    ("sources.verified", "keep_copy", ".unlink"): "the kept feed in the state folder (root's)",
    ("trust.treehash", "drop", ".unlink"): "a tree record in the state folder (root's)",
}
_OS = {"chmod", "chown", "lchown", "unlink", "remove", "rmdir", "removedirs", "walk"}
_SHUTIL = {"rmtree", "copytree", "copy", "copy2", "copyfile", "copymode", "copystat", "move",
           "chown"}
_METHODS = {"unlink", "rmdir", "chmod", "lchmod", "walk"}


def by_path_calls() -> dict[tuple[str, str, str], int]:
    """Every call of a walk, copy, removal, chmod or chown by path in daemon code outside
    fdtree: (module, function, operation) -> line. A call given `dir_fd` acts by descriptor."""
    import ast

    found = {}
    for path in sorted(DAEMON.rglob("*.py")):
        module = ".".join(path.relative_to(DAEMON).with_suffix("").parts)
        if module == "fdtree":
            continue
        tree = ast.parse(path.read_text())
        owner: dict[int, str] = {}
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                for inner in ast.walk(node):
                    owner.setdefault(id(inner), node.name)
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
                continue
            if {k.arg for k in node.keywords} & {"dir_fd", "src_dir_fd"}:
                continue
            name, base = node.func.attr, node.func.value
            on = base.id if isinstance(base, ast.Name) else ""
            op = (f"os.{name}" if on == "os" and name in _OS
                  else f"shutil.{name}" if on == "shutil" and name in _SHUTIL
                  else f".{name}" if on not in ("os", "shutil", "fdtree") and name in _METHODS
                  else "")
            if op:
                found[(module, owner.get(id(node), "<module>"), op)] = node.lineno
    return found


def test_j170_root_walks_copies_and_removes_by_path_only_where_no_other_user_writes() -> None:
    calls = by_path_calls()
    new = {k: line for k, line in calls.items() if k not in BY_PATH_ALLOWED}
    assert not new, (
        "by-path filesystem changes outside updaterd.fdtree; inside a tree another user can "
        "write, act through fdtree (by descriptor); else list each here with why no other "
        f"user can write there: {new}")
    gone = BY_PATH_ALLOWED.keys() - calls.keys()
    assert not gone, f"listed as allowed but no longer in the code (remove them): {gone}"


def test_j170_fdtree_offers_the_operations_listed_and_acts_by_descriptor_itself() -> None:
    import ast

    source = (DAEMON / "fdtree.py").read_text()
    public = {n.name for n in ast.parse(source).body
              if isinstance(n, ast.FunctionDef) and not n.name.startswith("_")}
    assert public == FDTREE_OPERATIONS
    for forbidden in ("shutil.", "os.walk(", "os.lchown(", ".rglob("):
        assert forbidden not in source, forbidden
    # its one chmod is of /proc's link to a descriptor's own inode, never of a name
    assert source.count("os.chmod(") == 1 and 'os.chmod(f"/proc/self/fd/{handle}"' in source
