"""Seeding an app's shared paths at its edges (install/shared.py), in this process through the
real Layout: links and FIFOs in the running release or the new one are never followed or opened,
a path first shipped later is seeded from the release that ships it, the folders made on the
way are recorded. The real daemon's side is tests/test_shared.py."""

from __future__ import annotations

import os
from pathlib import Path

from updaterd.install.layout import Layout


def a_prefix(tmp_path: Path, shared: tuple[str, ...], running: dict[str, str | None]) -> Layout:
    """A prefix running 1.0.0 whose release holds `running` (path -> text, or None for a
    folder); a value starting with '->' is a link to the rest."""
    layout = Layout(tmp_path / "prefix", shared=shared)
    layout.preflight()
    root = layout.release("1.0.0")
    root.mkdir()
    for path, text in running.items():
        p = root / path
        p.parent.mkdir(parents=True, exist_ok=True)
        if text is None:
            p.mkdir()
        elif text.startswith("->"):
            p.symlink_to(text[2:])
        else:
            p.write_text(text)
    layout.switch("1.0.0", "")
    return layout


def stage(layout: Layout, version: str, files: dict[str, str]) -> dict[str, str]:
    """Stage `version` shipping `files` (a value starting with '->' is a link); returns the
    recorded tree's entries."""

    def make(staging: Path) -> Path:
        root = staging / "app"
        root.mkdir()
        for path, text in files.items():
            p = root / path
            p.parent.mkdir(parents=True, exist_ok=True)
            if text.startswith("->"):
                p.symlink_to(text[2:])
            else:
                p.write_text(text)
        return root

    staged = layout.stage_with(make, version)
    assert staged.tree is not None
    return staged.tree.entries


def test_a_link_in_a_parent_folder_of_the_running_release_is_never_followed(
        tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "notes.conf").write_text("not the app's\n")
    layout = a_prefix(tmp_path, ("etc/notes.conf",), {"etc": f"->{elsewhere}"})
    stage(layout, "1.1.0", {"etc/notes.conf": "shipped by 1.1.0\n"})
    assert (layout.prefix / "shared" / "etc" / "notes.conf").read_text() == "shipped by 1.1.0\n"


def test_a_link_at_the_path_in_the_running_release_or_the_new_one_seeds_nothing(
        tmp_path: Path) -> None:
    layout = a_prefix(tmp_path, ("data",), {"data": "->/etc"})
    stage(layout, "1.1.0", {"data/x": "shipped\n"})  # the new release's own folder seeds it
    assert (layout.prefix / "shared" / "data" / "x").read_text() == "shipped\n"
    other = a_prefix(tmp_path / "b", ("cache",), {})
    stage(other, "1.1.0", {"cache": "->/etc", "bin/app": "x"})  # a link is never a seed
    seeded = other.prefix / "shared" / "cache"
    assert seeded.is_dir() and not seeded.is_symlink() and not any(seeded.iterdir())


def test_a_path_first_shipped_by_the_new_release_is_seeded_from_it_and_parents_recorded(
        tmp_path: Path) -> None:
    layout = a_prefix(tmp_path, ("etc/app/notes.conf",), {"bin/app": "1.0.0"})
    entries = stage(layout, "1.1.0", {"bin/app": "1.1.0"})
    assert entries["etc"] == "d:755" and entries["etc/app"] == "d:755"
    assert entries["etc/app/notes.conf"] == "l:../../../../shared/etc/app/notes.conf"
    assert (layout.prefix / "shared" / "etc" / "app" / "notes.conf").is_dir()
    entries = stage(layout, "1.2.0", {"etc/app/notes.conf": "shipped by 1.2.0\n"})
    assert "etc" not in entries or entries["etc"].startswith("d:")  # the release's own folder
    assert os.readlink(layout.release("1.2.0") / "etc" / "app" / "notes.conf") == \
        "../../../../shared/etc/app/notes.conf"
    assert (layout.prefix / "shared" / "etc" / "app" / "notes.conf").is_dir()  # kept


def test_a_fifo_at_the_path_in_the_running_release_is_never_opened(tmp_path: Path) -> None:
    layout = a_prefix(tmp_path, ("run",), {})
    os.mkfifo(layout.release("1.0.0") / "run")
    stage(layout, "1.1.0", {"bin/app": "x"})  # opening the FIFO would block here
    assert (layout.prefix / "shared" / "run").is_dir()


def test_under_is_a_shared_path_or_inside_one_and_nothing_else() -> None:
    from updaterd.install.shared import under

    paths = ("data", "etc/notes.conf")
    inside = ["data", "data/x", "data/x/y", "etc/notes.conf", "etc/notes.conf/z"]
    outside = ["dat", "database", "data.old", "a", "z", "etc", "etc/notes", "etc/notes.confx",
               "bin/data", ""]
    assert [n for n in inside if under(n, paths)] == inside
    assert [n for n in outside if under(n, paths)] == []
    assert not under("data", ())


def test_the_record_holds_the_link_and_keeps_what_the_release_shipped_there(
        tmp_path: Path) -> None:
    layout = a_prefix(tmp_path, ("data",), {})
    entries = stage(layout, "1.1.0", {"data/x": "shipped\n", "data/sub/y": "y\n",
                                      "bin/app": "x"})
    assert entries["data"] == "l:../../shared/data"
    assert not [n for n in entries if n.startswith("data/")]
    from updaterd.trust import treehash

    rec = treehash.record(layout.release("1.1.0"), "1.1.0")
    assert rec.entries == entries


def test_a_folder_made_for_a_path_nothing_ships_is_0755_whatever_the_umask(
        tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        layout = a_prefix(tmp_path, ("cache",), {})
        stage(layout, "1.1.0", {"bin/app": "x"})
    finally:
        os.umask(old)
    made = layout.prefix / "shared" / "cache"
    assert made.is_dir() and (made.stat().st_mode & 0o777) == 0o755


def test_a_link_on_the_way_into_shared_is_named_exactly(tmp_path: Path) -> None:
    from updaterd.errors import LayoutError

    layout = a_prefix(tmp_path, ("etc/app/notes.conf",), {})
    (layout.prefix / "shared").mkdir()
    (layout.prefix / "shared" / "etc").symlink_to(tmp_path)
    try:
        stage(layout, "1.1.0", {"bin/app": "x"})
        raise AssertionError("staged through a link")
    except LayoutError as e:
        assert str(e).startswith(f"{layout.prefix / 'shared' / 'etc'} is not a folder (a link "
                                 "or a file)"), e
