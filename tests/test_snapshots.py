"""install/snapshots.py in this process: what a snapshot holds, where, with which owners and
modes; the restore's swap finished from every point a crash can leave; retention; and root
never reading through a link the app planted in shared/ (the daemon's own use is in
test_data_snapshots.py)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from updaterd.errors import LayoutError
from updaterd.install import snapshots


@pytest.fixture
def prefix(tmp_path: Path) -> Path:
    p = tmp_path / "opt"
    (p / "shared" / "data").mkdir(parents=True)
    (p / "shared" / "data" / "runs").write_text("1.0.0\n")
    (p / "shared" / "conf").write_text("a=1\n")
    os.chown(p / "shared" / "data" / "runs", 65534, 65534)
    (p / "shared" / "data" / "runs").chmod(0o640)
    return p


def tree(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): (p.read_text() if p.is_file() and not p.is_symlink()
                                         else "->" + os.readlink(p) if p.is_symlink() else "/")
            for p in sorted(folder.rglob("*"))}


def test_a_snapshot_is_a_root_only_copy_with_the_apps_owners_and_modes(prefix: Path) -> None:
    (prefix / "snapshots").mkdir(mode=0o755)  # made loose: tightened
    assert snapshots.take(prefix, "1.0.0")
    snap = prefix / "snapshots" / "1.0.0"
    assert tree(snap) == tree(prefix / "shared")
    assert (prefix / "snapshots").stat().st_mode & 0o777 == 0o700
    assert snap.stat().st_mode & 0o777 == (prefix / "shared").stat().st_mode & 0o777
    runs = (snap / "data" / "runs").stat()
    assert (runs.st_uid, runs.st_mode & 0o777) == (65534, 0o640)
    assert snapshots.has(prefix, "1.0.0") and not snapshots.has(prefix, "1.1.0")
    assert snapshots.sizes(prefix) == {"1.0.0": len("1.0.0\n") + len("a=1\n")}
    assert not [p for p in (prefix / "snapshots").iterdir() if p.name.startswith(".")]


def test_a_new_snapshot_of_a_version_replaces_the_old_one(prefix: Path) -> None:
    snapshots.take(prefix, "1.0.0")
    (prefix / "shared" / "conf").write_text("a=2\n")
    snapshots.take(prefix, "1.0.0")
    assert (prefix / "snapshots" / "1.0.0" / "conf").read_text() == "a=2\n"


def test_nothing_to_keep_without_shared(tmp_path: Path) -> None:
    (tmp_path / "opt").mkdir()
    assert not snapshots.take(tmp_path / "opt", "1.0.0")
    assert not (tmp_path / "opt" / "snapshots").exists()


def test_a_link_the_app_put_in_shared_is_copied_as_a_link_never_followed(
        prefix: Path, tmp_path: Path) -> None:
    secret = tmp_path / "root-only"
    secret.write_text("root's")
    secret.chmod(0o600)
    (prefix / "shared" / "data" / "steal").symlink_to(secret)
    snapshots.take(prefix, "1.0.0")
    assert os.readlink(prefix / "snapshots" / "1.0.0" / "data" / "steal") == str(secret)
    snapshots.restore(prefix, "1.0.0", leaving="1.1.0")
    assert os.readlink(prefix / "shared" / "data" / "steal") == str(secret)
    assert secret.read_text() == "root's" and secret.stat().st_mode & 0o777 == 0o600


def test_shared_swapped_for_a_link_is_refused_not_followed(prefix: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    (prefix / "shared").rename(elsewhere)
    (prefix / "shared").symlink_to(elsewhere)
    with pytest.raises(LayoutError, match="not a folder; no data snapshot taken"):
        snapshots.take(prefix, "1.0.0")


def test_restore_keeps_what_it_replaces_as_the_snapshot_of_the_version_left(
        prefix: Path) -> None:
    snapshots.take(prefix, "1.0.0")
    before = tree(prefix / "shared")
    (prefix / "shared" / "data" / "runs").write_text("1.0.0\n1.1.0\n")
    (prefix / "shared" / "bad").write_text("x")
    after_bad = tree(prefix / "shared")
    snapshots.restore(prefix, "1.0.0", leaving="1.1.0")
    assert tree(prefix / "shared") == before
    assert tree(prefix / "snapshots" / "1.1.0") == after_bad
    assert snapshots.tidy(prefix, {"1.0.0", "1.1.0"}) == []
    assert sorted(p.name for p in prefix.iterdir()) == ["shared", "snapshots"]


def test_data_alone_back_under_the_same_version_keeps_its_snapshot(prefix: Path) -> None:
    snapshots.take(prefix, "1.0.0")
    before = tree(prefix / "shared")
    (prefix / "shared" / "bad").write_text("x")
    after_bad = tree(prefix / "shared")
    snapshots.restore(prefix, "1.0.0", leaving="1.0.0")
    assert tree(prefix / "shared") == before == tree(prefix / "snapshots" / "1.0.0")
    assert tree(prefix / "snapshots" / ".replaced-1.0.0") == after_bad
    assert snapshots.tidy(prefix, {"1.0.0"}) == []  # kept with its version
    assert snapshots.tidy(prefix, set()) == ["1.0.0"]  # and goes with it
    assert list((prefix / "snapshots").iterdir()) == []


def test_no_snapshot_no_restore_and_nothing_changes(prefix: Path) -> None:
    before = tree(prefix)
    with pytest.raises(LayoutError, match=r"no data snapshot of 1\.0\.0 is kept"):
        snapshots.restore(prefix, "1.0.0", leaving="1.1.0")
    assert tree(prefix) == before


@pytest.mark.parametrize("cut", ["after_copy", "after_left"])
def test_a_restore_cut_anywhere_is_finished_by_running_it_again(
        prefix: Path, cut: str, monkeypatch: pytest.MonkeyPatch) -> None:
    snapshots.take(prefix, "1.0.0")
    good = tree(prefix / "shared")
    (prefix / "shared" / "bad").write_text("x")
    bad = tree(prefix / "shared")

    class Cut(Exception):
        pass

    def hit(name: str) -> None:
        if name == f"data.{cut}":
            raise Cut

    monkeypatch.setattr(snapshots.failpoints, "hit", hit)
    with pytest.raises(Cut):
        snapshots.restore(prefix, "1.0.0", leaving="1.1.0")
    monkeypatch.undo()
    snapshots.restore(prefix, "1.0.0", leaving="1.1.0")  # recover runs it again
    assert tree(prefix / "shared") == good
    assert tree(prefix / "snapshots" / "1.1.0") == bad  # never overwritten by the second run
    snapshots.tidy(prefix, {"1.0.0", "1.1.0"})
    assert sorted(p.name for p in prefix.iterdir()) == ["shared", "snapshots"]


def test_a_second_run_after_the_swap_changes_nothing(prefix: Path) -> None:
    """A crash after the swap, before the state was saved: the journal runs the restore again;
    it must not take the restored data as the snapshot of the version left."""
    snapshots.take(prefix, "1.0.0")
    (prefix / "shared" / "bad").write_text("x")
    bad = tree(prefix / "shared")
    snapshots.restore(prefix, "1.0.0", leaving="1.1.0")
    snapshots.restore(prefix, "1.0.0", leaving="1.1.0")
    assert tree(prefix / "snapshots" / "1.1.0") == bad


def test_tidy_drops_what_retention_dropped_and_half_made_ones(prefix: Path) -> None:
    for v in ("1.0.0", "1.1.0", "1.2.0"):
        snapshots.take(prefix, v)
    (prefix / "snapshots" / ".new-1.3.0").mkdir()
    assert snapshots.tidy(prefix, {"1.2.0", "1.3.0"}) == ["1.0.0", "1.1.0"]
    assert sorted(p.name for p in (prefix / "snapshots").iterdir()) == ["1.2.0"]


def test_tidy_without_snapshots_is_nothing(tmp_path: Path) -> None:
    (tmp_path / "opt").mkdir()
    assert snapshots.tidy(tmp_path / "opt", set()) == []
    assert list((tmp_path / "opt").iterdir()) == []


def test_a_fifo_in_place_of_shared_is_refused_never_opened(tmp_path: Path) -> None:
    prefix = tmp_path / "opt"
    prefix.mkdir()
    os.mkfifo(prefix / "shared")
    with pytest.raises(LayoutError, match="not a folder; no data snapshot taken"):
        snapshots.take(prefix, "1.0.0")


def test_forward_with_data_keeps_the_data_left_as_the_older_versions(prefix: Path) -> None:
    """rollback --to a newer kept version --with-data: what shared/ held is the snapshot of
    the version left, whichever way the two versions compare."""
    snapshots.take(prefix, "1.1.0")
    (prefix / "shared" / "conf").write_text("a=old\n")
    left = tree(prefix / "shared")
    snapshots.restore(prefix, "1.1.0", leaving="1.0.0")
    assert tree(prefix / "snapshots" / "1.0.0") == left
    assert not (prefix / "snapshots" / ".replaced-1.1.0").exists()


def test_tidy_removes_a_restore_left_over_only_beside_the_data(prefix: Path) -> None:
    (prefix / ".shared-restoring").mkdir()
    (prefix / ".shared-left").mkdir()
    snapshots.tidy(prefix, set())
    assert sorted(p.name for p in prefix.iterdir()) == ["shared"]
    # without shared/, those may be the only copy of the data: left for the journal
    (prefix / "shared").rename(prefix / ".shared-restoring")
    (prefix / ".shared-left").mkdir()
    snapshots.tidy(prefix, set())
    assert sorted(p.name for p in prefix.iterdir()) == [".shared-left", ".shared-restoring"]


@pytest.mark.parametrize("install,shared,prefix,kept", [
    ("releases", ["data"], "/opt/a", True),
    ("releases", [], "/opt/a", False),  # no data of its own
    ("inplace", ["data"], None, False),  # an executable: never a folder of data
    ("inplace", ["data"], "/opt/a", False),
    ("releases", ["data"], None, False),
])
def test_only_a_release_folder_app_with_shared_paths_keeps_snapshots(
        install: str, shared: list[str], prefix: str | None, kept: bool) -> None:
    """`home` on the configuration as built (the file's own rules refuse some of these
    together; the function does not lean on them)."""
    from updaterd.host.config import AppConfig

    cfg = AppConfig(source="directory", path="/srv/feed", install=install,  # type: ignore[arg-type]
                    prefix=prefix, target="/usr/local/bin/a", shared=shared)
    assert snapshots.home(cfg) == (Path(prefix) if kept and prefix else None)


def test_sizes_count_kept_snapshots_only(tmp_path: Path) -> None:
    """A snapshot being made (`.new-V`) or a stray file in the folder is no kept snapshot."""
    folder = tmp_path / snapshots.FOLDER
    (folder / "1.0.0").mkdir(parents=True)
    (folder / "1.0.0" / "db").write_bytes(b"x" * 10)
    (folder / f"{snapshots.TEMP}2.0.0").mkdir()
    (folder / f"{snapshots.TEMP}2.0.0" / "db").write_bytes(b"x" * 20)
    (folder / "stray").write_bytes(b"x" * 30)
    assert snapshots.sizes(tmp_path) == {"1.0.0": 10}
