"""fdtree, one operation at a time: what each meets (a file, a folder, a link, a FIFO, a missing
name, a tree too deep) and what it does with it. The attacks on it (a folder swapped for a link
at the worst instant) are J168-J170 in tests/security/test_tree_rows.py."""

from __future__ import annotations

import errno
import os
import stat
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from updaterd import fdtree

APP_UID = 65534


def a_tree(root: Path) -> Path:
    """root/{a, sub/{b, deeper/c}, link -> a, pipe}."""
    (root / "sub" / "deeper").mkdir(parents=True)
    (root / "a").write_bytes(b"A" * 3000)
    (root / "sub" / "b").write_bytes(b"B")
    (root / "sub" / "deeper" / "c").write_bytes(b"")
    os.symlink("a", root / "link")
    os.mkfifo(root / "pipe")
    return root


def as_app_user(job: Callable[[], object]) -> int:
    """Run `job` in a child process as the app's user; its exit status (0: it returned)."""
    return as_app_user_said(job)[0]


def as_app_user_said(job: Callable[[], object]) -> tuple[int, str]:
    """`as_app_user`, with what the error said ("" when none)."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        os.close(read)
        code = 1
        try:
            os.setgroups([])
            os.setgid(APP_UID)
            os.setuid(APP_UID)
            job()
            code = 0
        except BaseException as e:  # reported through the exit status and the pipe
            os.write(write, str(e).encode())
            code = 3 if isinstance(e, fdtree.TreeError) else 2
        finally:
            os._exit(code)
    os.close(write)
    said = b""
    while chunk := os.read(read, 4096):
        said += chunk
    os.close(read)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]), said.decode()


def test_open_folder_follows_no_link_on_the_way_and_says_which_part(tmp_path: Path) -> None:
    (tmp_path / "x" / "y").mkdir(parents=True)
    os.symlink(tmp_path / "x", tmp_path / "to-x")
    (tmp_path / "file").write_text("")
    with fdtree.opened(fdtree.open_folder(tmp_path, "x", "y")) as fd:
        assert os.path.samestat(os.fstat(fd), os.stat(tmp_path / "x" / "y"))
    for parts, shown in ((("to-x", "y"), "to-x"), (("file",), "file")):
        with pytest.raises(fdtree.TreeError, match="it is a link or not a folder") as e:
            fdtree.open_folder(tmp_path, *parts)
        assert f"cannot open {tmp_path / shown}:" in str(e.value)
    with pytest.raises(fdtree.TreeError, match=f"cannot open {tmp_path / 'to-x'}"):
        fdtree.open_folder(tmp_path / "to-x")
    with pytest.raises(FileNotFoundError):
        fdtree.open_folder(tmp_path, "x", "missing")
    with pytest.raises(FileNotFoundError):
        fdtree.open_folder(tmp_path / "missing")
    assert len(os.listdir("/proc/self/fd")) < 64  # no descriptor left open on the way


def test_kind_is_the_entrys_own(tmp_path: Path) -> None:
    a_tree(tmp_path)
    with fdtree.opened(fdtree.open_folder(tmp_path)) as fd:
        assert fdtree.kind(fd, "a") == stat.S_IFREG
        assert fdtree.kind(fd, "sub") == stat.S_IFDIR
        assert fdtree.kind(fd, "link") == stat.S_IFLNK
        assert fdtree.kind(fd, "pipe") == stat.S_IFIFO
        assert fdtree.kind(fd, "missing") is None


def test_walk_lists_every_entry_parents_first_and_reads_only_regular_files(
        tmp_path: Path) -> None:
    a_tree(tmp_path / "t")
    seen = {}
    for e in fdtree.walk(tmp_path / "t"):
        seen[e.name] = (stat.S_IFMT(e.st.st_mode), e.link,
                        os.pread(e.fd, 10, 0) if e.fd >= 0 else None)
    assert list(seen) == ["a", "link", "pipe", "sub", "sub/b", "sub/deeper", "sub/deeper/c"]
    assert seen["a"] == (stat.S_IFREG, "", b"A" * 10)
    assert seen["link"] == (stat.S_IFLNK, "a", None)
    assert seen["pipe"] == (stat.S_IFIFO, "", None)  # never opened: no reader would block
    assert seen["sub"] == (stat.S_IFDIR, "", None)
    assert seen["sub/deeper/c"] == (stat.S_IFREG, "", b"")
    sizes = {e.name: e.fd for e in fdtree.walk(tmp_path / "t", contents=False)}
    assert set(sizes.values()) == {-1}  # sizes only: nothing opened
    assert [e.name for e in fdtree.walk(tmp_path / "t")] == list(seen)


def test_walk_refuses_a_root_that_is_a_link_and_a_tree_too_deep(tmp_path: Path) -> None:
    os.symlink("/etc", tmp_path / "etc")
    with pytest.raises(fdtree.TreeError):
        list(fdtree.walk(tmp_path / "etc"))
    deep = tmp_path / "deep"
    (deep / ("d/" * fdtree.MAX_DEPTH)).mkdir(parents=True)
    with pytest.raises(fdtree.TreeError, match="folders deep"):
        list(fdtree.walk(deep))
    just = tmp_path / "just"
    (just / ("d/" * (fdtree.MAX_DEPTH - 1))).mkdir(parents=True)
    assert len(list(fdtree.walk(just))) == fdtree.MAX_DEPTH - 1


def test_walk_skips_an_entry_removed_while_it_is_listed(tmp_path: Path) -> None:
    (tmp_path / "t").mkdir()
    for name in ("a", "b", "c"):
        (tmp_path / "t" / name).write_text(name)
    names = []
    for e in fdtree.walk(tmp_path / "t"):
        names.append(e.name)
        if e.name == "a":
            (tmp_path / "t" / "b").unlink()
    assert names == ["a", "c"]


def test_copy_entry_copies_files_folders_and_links_with_their_owners_and_modes(
        tmp_path: Path) -> None:
    src = a_tree(tmp_path / "src")
    os.chmod(src / "a", 0o4750)
    os.chmod(src / "sub", 0o2750)
    os.lchown(src / "sub" / "b", APP_UID, APP_UID)
    os.lchown(src / "link", APP_UID, 0)
    (tmp_path / "dst").mkdir()
    with fdtree.opened(fdtree.open_folder(tmp_path)) as top, \
            fdtree.opened(fdtree.open_folder(tmp_path / "dst")) as dst:
        assert fdtree.copy_entry(top, "src", dst, "copy", "src")
        assert not fdtree.copy_entry(top, "missing", dst, "missing", "missing")
    copy = tmp_path / "dst" / "copy"
    assert (copy / "a").read_bytes() == b"A" * 3000
    assert stat.S_IMODE((copy / "a").stat().st_mode) == 0o750  # no setuid made by a copy
    assert stat.S_IMODE((copy / "sub").stat().st_mode) == 0o2750  # a folder keeps setgid
    assert (copy / "sub" / "b").stat().st_uid == APP_UID
    assert (os.readlink(copy / "link"), os.lstat(copy / "link").st_uid) == ("a", APP_UID)
    assert not os.path.lexists(copy / "pipe")
    assert (copy / "sub" / "deeper" / "c").read_bytes() == b""
    assert stat.S_IMODE(copy.stat().st_mode) == stat.S_IMODE(src.stat().st_mode)


def test_copy_entry_of_a_fifo_or_a_tree_too_deep(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "pipe")
    deep = tmp_path / "deep"
    (deep / ("d/" * fdtree.MAX_DEPTH)).mkdir(parents=True)
    (tmp_path / "out").mkdir()
    with fdtree.opened(fdtree.open_folder(tmp_path)) as top, \
            fdtree.opened(fdtree.open_folder(tmp_path / "out")) as out:
        assert not fdtree.copy_entry(top, "pipe", out, "pipe", "pipe")
        assert not os.path.lexists(tmp_path / "out" / "pipe")
        with pytest.raises(fdtree.TreeError, match="folders deep"):
            fdtree.copy_entry(top, "deep", out, "deep", "deep")


def test_copy_entry_names_what_it_cannot_read(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "f").write_text("x")
    (tmp_path / "out").mkdir()
    with fdtree.opened(fdtree.open_folder(tmp_path)) as top, \
            fdtree.opened(fdtree.open_folder(tmp_path / "out")) as out:
        (tmp_path / "out" / "taken").write_text("")
        with pytest.raises(FileExistsError):  # never over something already there
            fdtree.copy_entry(top, "src", out, "taken", "src")


def test_remove_entry_removes_each_kind_as_itself(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep").write_text("keep")
    tree = a_tree(tmp_path / "tree")
    os.symlink(outside, tree / "sub" / "to-outside")
    with fdtree.opened(fdtree.open_folder(tmp_path)) as top:
        fdtree.remove_entry(top, "tree", str(tree))
        fdtree.remove_entry(top, "tree", str(tree))  # gone already: nothing to do
    assert not tree.exists() and (outside / "keep").read_text() == "keep"


@pytest.fixture
def reachable() -> Iterator[Path]:
    """A folder the app's user can reach (pytest's own are root's alone)."""
    folder = Path(tempfile.mkdtemp(prefix="fdtree-"))
    os.chmod(folder, 0o755)
    try:
        yield folder
    finally:
        fdtree.remove_tree(folder)


def test_remove_tree_as_the_apps_user_opens_up_its_own_shut_folders_only(
        reachable: Path) -> None:
    """Where updaterd does not run as root, a folder of its own with mode 0000 is opened up
    through its descriptor; another user's is refused by name."""
    mine = reachable / "mine"
    (mine / "shut" / "inner").mkdir(parents=True)
    (mine / "shut" / "inner" / "f").write_text("x")
    for p in (mine, mine / "shut", mine / "shut" / "inner", mine / "shut" / "inner" / "f"):
        os.lchown(p, APP_UID, APP_UID)
    os.chmod(mine / "shut", 0)
    assert as_app_user(lambda: fdtree.remove_tree(mine / "shut")) == 0
    assert not (mine / "shut").exists()
    theirs = mine / "theirs"
    theirs.mkdir()
    (theirs / "f").write_text("root's")
    os.chmod(theirs, 0)
    assert as_app_user(lambda: fdtree.remove_tree(theirs)) == 3
    assert (theirs / "f").read_text() == "root's"


def test_remove_tree_of_a_parent_that_cannot_be_opened_names_it(tmp_path: Path) -> None:
    os.symlink(tmp_path, tmp_path / "up")
    with pytest.raises(fdtree.TreeError, match=f"cannot remove {tmp_path / 'up' / 'x'}"):
        fdtree.remove_tree(tmp_path / "up" / "x")


def chain(root: Path, folders: int) -> Path:
    """`root` holding a chain of `folders` nested folders (root/d/d/...), a file at the end."""
    deepest = root.joinpath(*["d"] * folders)
    deepest.mkdir(parents=True)
    (deepest / "f").write_text("x")
    return root


def test_the_depth_limit_is_256_folders_below_what_is_removed_copied_or_walked(
        tmp_path: Path) -> None:
    """255 nested folders below the entry are removed, copied and walked; 256 are refused
    before anything is done to the deepest."""
    assert fdtree.MAX_DEPTH == 256
    fits, deep = chain(tmp_path / "fits", 255), chain(tmp_path / "deep", 256)
    (tmp_path / "out").mkdir()
    with fdtree.opened(fdtree.open_folder(tmp_path)) as top, \
            fdtree.opened(fdtree.open_folder(tmp_path / "out")) as out:
        assert fdtree.copy_entry(top, "fits", out, "fits", "fits")
        with pytest.raises(fdtree.TreeError, match="more than 256 folders deep"):
            fdtree.copy_entry(top, "deep", out, "deep", "deep")
    assert (tmp_path / "out" / "fits").joinpath(*["d"] * 255, "f").read_text() == "x"
    assert len(list(fdtree.walk(fits))) == 256  # 255 folders and the file
    with pytest.raises(fdtree.TreeError, match="more than 256 folders deep"):
        list(fdtree.walk(chain(tmp_path / "deeper", 257)))
    fdtree.remove_tree(fits)
    assert not fits.exists()
    with pytest.raises(fdtree.TreeError, match="more than 256 folders deep"):
        fdtree.remove_tree(deep)
    assert deep.joinpath(*["d"] * 256, "f").exists()


def test_an_unlink_refused_for_another_reason_than_a_folder_is_named(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "t").mkdir()
    (tmp_path / "t" / "f").write_text("x")
    real = os.unlink

    def unlink(path: str, *, dir_fd: int | None = None) -> None:
        if path == "f":
            raise OSError(errno.EROFS, "Read-only file system", path)
        real(path, dir_fd=dir_fd)

    monkeypatch.setattr(os, "unlink", unlink)
    with pytest.raises(fdtree.TreeError, match=f"cannot remove {tmp_path}/t/f: Read-only file "
                                               "system; refusing"):
        fdtree.remove_tree(tmp_path / "t")


def test_a_folder_swapped_for_a_link_between_its_unlink_and_its_opening_is_refused(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "t").mkdir()
    os.symlink("/etc", tmp_path / "t" / "sub")
    real = os.unlink

    def unlink(path: str, *, dir_fd: int | None = None) -> None:
        if path == "sub":  # it was a folder when unlink(2) looked
            raise IsADirectoryError(errno.EISDIR, "Is a directory", path)
        real(path, dir_fd=dir_fd)

    monkeypatch.setattr(os, "unlink", unlink)
    with pytest.raises(fdtree.TreeError, match=f"cannot remove {tmp_path}/t/sub: it is a link "
                                               "or not a folder"):
        fdtree.remove_tree(tmp_path / "t")
    assert os.path.isdir("/etc/ssl") or os.path.isdir("/etc")


def test_a_shut_folder_of_another_user_is_refused_as_it_was_denied(reachable: Path) -> None:
    """As the app's user: a 0000 folder owned by root, or by a user numbered above it, is
    never opened up (the denial is what is said); its own is opened to 0700 and no wider."""
    mine = reachable / "mine"
    mine.mkdir()
    os.chown(mine, APP_UID, APP_UID)
    for owner in (0, APP_UID + 1000):
        shut = mine / f"shut-{owner}"
        (shut / "x").mkdir(parents=True)
        os.chown(shut, owner, owner)
        os.chmod(shut, 0)
        code, said = as_app_user_said(lambda shut=shut: fdtree.remove_tree(shut))
        assert code == 3 and "Permission denied" in said, (owner, said)
        assert stat.S_IMODE(shut.stat().st_mode) == 0
    own = mine / "own"
    (own / "roots").mkdir(parents=True)
    (own / "roots" / "f").write_text("root's")
    os.chown(own, APP_UID, APP_UID)
    os.chmod(own, 0)
    code, said = as_app_user_said(lambda: fdtree.remove_tree(own))
    assert code == 3 and f"{own}/roots/f" in said, said  # root's folder inside stops it
    assert stat.S_IMODE(own.stat().st_mode) == 0o700


def test_what_cannot_be_opened_or_read_while_copied_is_named(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = a_tree(tmp_path / "src")
    (tmp_path / "out").mkdir()
    real_open, real_reopen = os.open, fdtree._reopen

    def refuse_open(path: str, flags: int, mode: int = 0o777, *,
                    dir_fd: int | None = None) -> int:
        if path == "a":
            raise PermissionError(errno.EACCES, "Permission denied", path)
        return real_open(path, flags, mode, dir_fd=dir_fd)

    def refuse_reopen(handle: int, flags: int) -> int:
        if flags & os.O_DIRECTORY == bool(refuse_folders) * os.O_DIRECTORY:
            raise PermissionError(errno.EACCES, "Permission denied")
        return real_reopen(handle, flags)

    with fdtree.opened(fdtree.open_folder(tmp_path)) as top, \
            fdtree.opened(fdtree.open_folder(tmp_path / "out")) as out:
        with monkeypatch.context() as m:
            m.setattr(os, "open", refuse_open)
            with pytest.raises(fdtree.TreeError, match=f"cannot copy {src.name}/a: Permission"):
                fdtree.copy_entry(top, "src", out, "one", src.name)
        for refuse_folders, what in ((False, "src/a"), (True, "src")):
            with monkeypatch.context() as m:
                m.setattr(fdtree, "_reopen", refuse_reopen)
                with pytest.raises(fdtree.TreeError, match=f"cannot read {what}: Permission"):
                    fdtree.copy_entry(top, "src", out, f"two-{refuse_folders}", "src")


def test_a_copy_is_root_s_and_private_while_it_is_filled(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = a_tree(tmp_path / "src")
    os.chmod(src, 0o755)
    os.chmod(src / "a", 0o644)
    (tmp_path / "out").mkdir()
    seen: list[tuple[str, int]] = []
    real_copy, real_entry = fdtree.fsutil.clone_or_copy, fdtree.copy_entry

    def clone_or_copy(source: int, dest: int, size: int) -> int:
        seen.append(("file", stat.S_IMODE(os.fstat(dest).st_mode)))
        return real_copy(source, dest, size)

    def copy_entry(src_dir: int, name: str, dest_dir: int, *rest: Any) -> bool:
        seen.append(("folder", stat.S_IMODE(os.fstat(dest_dir).st_mode)))
        return real_entry(src_dir, name, dest_dir, *rest)

    monkeypatch.setattr(fdtree.fsutil, "clone_or_copy", clone_or_copy)
    monkeypatch.setattr(fdtree, "copy_entry", copy_entry)
    with fdtree.opened(fdtree.open_folder(tmp_path)) as top, \
            fdtree.opened(fdtree.open_folder(tmp_path / "out")) as out:
        assert real_entry(top, "src", out, "copy", "src")
    assert ("file", 0o600) in seen and ("folder", 0o700) in seen
    assert {mode for kind, mode in seen if kind == "file"} == {0o600}
    assert {mode for kind, mode in seen if kind == "folder" and mode != 0o755} <= {0o700}
    assert stat.S_IMODE((tmp_path / "out" / "copy" / "a").stat().st_mode) == 0o644


def test_a_folder_that_cannot_be_listed_is_named(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "t" / "sub").mkdir(parents=True)
    real = os.listdir
    sub = os.stat(tmp_path / "t" / "sub").st_ino

    def listdir(arg: Any = ".") -> list[str]:
        if isinstance(arg, int) and os.fstat(arg).st_ino == sub:
            raise OSError(errno.EIO, "Input/output error")
        return real(arg)

    monkeypatch.setattr(os, "listdir", listdir)
    with pytest.raises(fdtree.TreeError, match=f"cannot list {tmp_path}/t/sub: Input/output "
                                               "error \\(owned by uid 0\\)"):
        fdtree.remove_tree(tmp_path / "t")
