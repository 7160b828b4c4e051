"""fdtree, one operation at a time: what each meets (a file, a folder, a link, a FIFO, a missing
name, a tree too deep) and what it does with it. The attacks on it (a folder swapped for a link
at the worst instant) are rows 168-170 in tests/security/test_tree_rows.py."""

from __future__ import annotations

import os
import stat
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

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


def as_app_user(job: Callable[[], None]) -> int:
    """Run `job` in a child process as the app's user; its exit status (0: it returned)."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 1
        try:
            os.setgroups([])
            os.setgid(APP_UID)
            os.setuid(APP_UID)
            job()
            code = 0
        except BaseException as e:  # reported through the exit status
            os.write(2, f"{type(e).__name__}: {e}\n".encode())
            code = 3 if isinstance(e, fdtree.TreeError) else 2
        finally:
            os._exit(code)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


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
    for name in ("a", "b"):
        (tmp_path / "t" / name).write_text(name)
    names = []
    for e in fdtree.walk(tmp_path / "t"):
        names.append(e.name)
        if e.name == "a":
            (tmp_path / "t" / "b").unlink()
    assert names == ["a"]


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
