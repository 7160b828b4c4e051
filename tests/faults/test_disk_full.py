"""Disk full (catalogue rows B55, C71, D97, D98) on small tmpfs mounts the tests make
(they run as root here and in CI). Each case: a clear error, no traceback, nothing torn, the
installed version untouched."""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Host, Nginx
from tests.helpers import Feed, app_script, make_tar, make_zip, run_updaterd


@contextlib.contextmanager
def small_fs(path: Path, size: str) -> Iterator[Path]:
    path.mkdir(parents=True, exist_ok=True)
    # mode=0755: a tmpfs root is 1777 by default, a shared folder updaterd refuses (G128)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs",
                        str(path)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {r.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def fill(folder: Path) -> Path:
    """Use up the free space of `folder`'s filesystem."""
    filler = folder / "filler"
    with open(filler, "wb", buffering=0) as f, contextlib.suppress(OSError):
        while True:
            f.write(b"\0" * 65536)
            f.flush()
    return filler


def big_release(feed: Feed, version: str, size: int, zeros: bool = False,
                fmt: str = "tar.gz") -> Path:
    """A tar.gz streams into its staging folder; a zip goes through the download cache."""
    art = feed.work / f"hello-{version}-linux-x86_64.{fmt}"
    blob = bytes(size) if zeros else os.urandom(size)
    files = {"bin/hello": (app_script(version), 0o755), "share/blob": (blob, 0o644)}
    if fmt == "zip":
        make_zip(art, files, top=f"hello-{version}")
    else:
        make_tar(art, files, top=f"hello-{version}")
    feed.publish(version, [art])
    return art


def no_traceback(r: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in r.stderr, r.stderr


@pytest.mark.parametrize("small,fmt", [("cache", "zip"), ("opt", "tar.gz")],
                         ids=["the cache, for an artifact that goes through it",
                              "the install folder, for one that streams"])
def test_d98_too_little_space_is_refused_before_downloading(
        host: Host, nginx: Nginx, served_feed: Feed, small: str, fmt: str) -> None:
    with small_fs(host.base / small, "1m"):
        art = big_release(served_feed, "1.0.0", 3 << 20, fmt=fmt)
        host.follow(nginx, served_feed)
        r = run_updaterd("--config", host.config, "--once")
        assert r.returncode == 1 and re.search(
            r"has 1\.0 MiB free; \d+\.\d MiB are needed \(1,048,576 and [\d,]+ bytes\)", r.stderr)
        no_traceback(r)
        uri = f"/{served_feed.folder.name}/{art.name}"
        assert not [q for q in nginx.requests() if q["uri"] == uri]
        assert host.current() is None


def test_d97_disk_full_mid_download_is_a_clean_error(host: Host, nginx: Nginx,
                                                     served_feed: Feed) -> None:
    with small_fs(host.base / "cache", "6m") as cache:
        big_release(served_feed, "1.0.0", 4 << 20, fmt="zip")  # through the cache
        host.follow(nginx, served_feed, max_rate="1MiB/s")  # slow enough to fill the disk
        proc = subprocess.Popen([str(Path(os.sys.executable).parent / "updaterd"),  # type: ignore[attr-defined]
                                 "--config", str(host.config), "--once"],
                                stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 10
        while not list((cache / "hello").glob("*.part")) if (cache / "hello").exists() else True:
            assert time.monotonic() < deadline, "the download never started"
            time.sleep(0.05)
        filler = fill(cache)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 1 and "No space left on device while downloading" in err
        assert "Traceback" not in err
        assert not list((cache / "hello").glob("*.part*")), "the partial is removed"
        filler.unlink()
        state = host.state()
        assert state["installed"] is None and state["pending"] is None
        r = run_updaterd("--config", host.config, "--once")
        assert r.returncode == 0, r.stderr  # no crash loop: the next run succeeds
        assert host.current() == "1.0.0"


def test_b55_disk_full_during_extraction_leaves_current_untouched(
        host: Host, nginx: Nginx, served_feed: Feed) -> None:
    with small_fs(host.base / "opt", "4m"):
        served_feed.release("1.0.0")
        host.follow(nginx, served_feed)
        assert run_updaterd("--config", host.config, "--once").returncode == 0
        big_release(served_feed, "1.1.0", 16 << 20, zeros=True)  # tiny download, big extract
        r = run_updaterd("--config", host.config, "--once")
        assert r.returncode == 1 and "No space left on device while staging 1.1.0" in r.stderr
        no_traceback(r)
        assert host.current() == "1.0.0"
        assert not any((host.prefix / ".staging").iterdir())
        assert sorted(p.name for p in (host.prefix / "releases").iterdir()) == ["1.0.0"]
        assert host.state()["pending"] is None


def test_c71_disk_full_while_writing_state_keeps_the_old_state(
        host: Host, nginx: Nginx, served_feed: Feed) -> None:
    with small_fs(host.state_dir, "512k") as state_dir:
        served_feed.release("1.0.0")
        host.follow(nginx, served_feed)
        assert run_updaterd("--config", host.config, "--once").returncode == 0
        before = (state_dir / "hello" / "state.json").read_text()
        served_feed.release("1.1.0")
        filler = fill(state_dir)
        r = run_updaterd("--config", host.config, "--once")
        assert r.returncode == 1 and "cannot write state" in r.stderr
        no_traceback(r)
        assert (state_dir / "hello" / "state.json").read_text() == before
        assert json.loads(before)["installed"] == host.current() == "1.0.0"
        assert not [p for p in (state_dir / "hello").iterdir()
                    if p.name.startswith(".updaterd-tmp")]
        filler.unlink()
        assert run_updaterd("--config", host.config, "--once").returncode == 0
        assert host.current() == "1.1.0"



def test_c72_read_only_releases_fail_at_preflight_before_any_download(
        host: Host, nginx: Nginx, served_feed: Feed) -> None:
    served_feed.release("1.0.0")
    host.follow(nginx, served_feed)
    assert run_updaterd("--config", host.config, "--once").returncode == 0
    art = served_feed.release("1.1.0")
    releases = host.prefix / "releases"
    with small_fs(host.base / "ro", "1m") as ro:
        subprocess.run(["mount", "--bind", str(releases), str(ro)], check=True)
        subprocess.run(["mount", "-o", "remount,bind,ro", str(ro)], check=True)
        subprocess.run(["mount", "--bind", str(ro), str(releases)], check=True)
        try:
            r = run_updaterd("--config", host.config, "--once")
        finally:
            subprocess.run(["umount", "-l", str(releases)], check=False)
            subprocess.run(["umount", "-l", str(ro)], check=False)
    assert r.returncode == 1 and f"{releases} is not writable: Read-only file system" in r.stderr
    no_traceback(r)
    uri = f"/{served_feed.folder.name}/{art.name}"
    assert not [q for q in nginx.requests() if q["uri"] == uri], "refused before downloading"
    assert host.current() == "1.0.0"


def test_a_full_install_disk_drops_the_oldest_kept_release_before_refusing(
        host: Host, nginx: Nginx, served_feed: Feed) -> None:
    """Issue 30: retention drops the oldest kept release (never the current one or the
    rollback target) when the install folder's disk cannot hold the next release, instead of
    refusing the update while old releases fill the disk."""
    with small_fs(host.prefix, "9m"):
        host.follow(nginx, served_feed, retain=5)
        for version in ("1.0.0", "1.1.0", "1.2.0"):
            big_release(served_feed, version, 2 << 20)
            r = run_updaterd("--config", host.config, "--once")
            assert r.returncode == 0, r.stderr
        assert sorted(p.name for p in (host.prefix / "releases").iterdir()) == \
            ["1.0.0", "1.1.0", "1.2.0"]
        big_release(served_feed, "1.3.0", 3 << 20)
        r = run_updaterd("--config", host.config, "--once")
        assert r.returncode == 0, r.stderr
        no_traceback(r)
        assert "removed the oldest kept release 1.0.0" in r.stderr
        assert host.current() == "1.3.0"
        kept = sorted(p.name for p in (host.prefix / "releases").iterdir())
        assert "1.2.0" in kept and "1.0.0" not in kept, kept  # the rollback target stays
        assert "1.0.0" not in host.state()["release_digests"]
