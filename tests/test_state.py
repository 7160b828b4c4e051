"""State: atomic writes in the order fsync(file) -> rename -> fsync(folder); corrupt files
moved aside without losing the serial high-water mark."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from updaterd import fsutil
from updaterd.errors import StateError
from updaterd.host import state


def test_c60_write_order_is_fsync_rename_fsync_dir(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        kind = "dir" if os.path.isdir(f"/proc/self/fd/{fd}") else "file"
        calls.append(f"fsync-{kind}")
        real_fsync(fd)

    def replace(a: object, b: object) -> None:
        calls.append("rename")
        real_replace(a, b)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    state.save(tmp_path, "demo", state.AppState(installed="1.0.0"))
    assert calls == ["fsync-file", "rename", "fsync-dir"]


def test_c60_a_release_is_synced_before_its_rename(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """The release folder: every byte below it on disk (one syncfs of its file system), then
    the rename into releases/, then the fsync of releases/."""
    import io
    import tarfile

    from updaterd.install.layout import Layout
    from updaterd.trust import archive
    calls: list[str] = []
    real_syncfs, real_rename, real_fsync_dir = fsutil._libc_syncfs(), os.rename, fsutil.fsync_dir
    assert real_syncfs is not None, "glibc has syncfs(2)"

    def syncfs(fd: int) -> int:
        calls.append("syncfs")
        return real_syncfs(fd)

    def rename(a: object, b: object) -> None:
        calls.append("rename")
        real_rename(a, b)  # type: ignore[arg-type]

    def fsync_dir(path: Path) -> None:
        calls.append(f"fsync-dir {path.name}")
        real_fsync_dir(path)

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        info = tarfile.TarInfo("app-1.0/bin/app")
        info.size, info.mode = 3, 0o755
        tf.addfile(info, io.BytesIO(b"hi\n"))
    layout = Layout(tmp_path / "opt" / "app")
    layout.preflight()
    monkeypatch.setattr(fsutil, "_libc_syncfs", lambda: syncfs)
    monkeypatch.setattr(os, "rename", rename)
    monkeypatch.setattr(fsutil, "fsync_dir", fsync_dir)
    buf.seek(0)
    limits = archive.ExtractLimits(max_members=10, max_total=1 << 20, max_file=1 << 20)
    layout.stage(buf, "tar", limits, "app", None, "1.0")  # type: ignore[arg-type]
    assert calls == ["syncfs", "rename", "fsync-dir releases"]


def test_round_trip(tmp_path: Path) -> None:
    s = state.AppState(installed="1.0.0", serial=7, blocked=["1.1.0"])
    state.save(tmp_path, "demo", s)
    assert state.load(tmp_path, "demo") == s


def test_a27_corrupt_state_moved_aside_serial_kept(tmp_path: Path,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    folder = tmp_path / "demo"
    folder.mkdir()
    (folder / "state.json").write_text('{"schema": 1, "serial": 41, "installed": ')
    s = state.load(tmp_path, "demo")
    assert s.serial == 41, "the serial high-water mark is never reset to 0"
    assert "corrupt" in (s.last_error or "")
    assert s.paused, "automatic updates are refused until an operator resumes them"
    names = sorted(p.name for p in folder.iterdir())
    assert names[0] == "state.json" and names[1].startswith("state.json.corrupt-")
    assert len(names) == 2
    assert state.load(tmp_path, "demo").paused, "the pause is stored, not only returned"
    assert "corrupt" in caplog.text


def test_c61_crash_after_temp_write_leaves_old_state(tmp_path: Path) -> None:
    state.save(tmp_path, "demo", state.AppState(installed="1.0.0"))
    tmp = fsutil.temp_name(tmp_path / "demo" / "state.json")
    tmp.write_text('{"schema": 1, "installed": "2.0.0"}')  # what a crash before rename leaves
    assert state.load(tmp_path, "demo").installed == "1.0.0"
    assert fsutil.clean_temp_files(tmp_path / "demo") == [tmp]


def test_c70_state_file_symlink_refused(tmp_path: Path) -> None:
    folder = tmp_path / "demo"
    folder.mkdir()
    (tmp_path / "elsewhere.json").write_text("{}")
    (folder / "state.json").symlink_to(tmp_path / "elsewhere.json")
    with pytest.raises(StateError):
        state.load(tmp_path, "demo")
