"""Rows C59, C62, C63 and C65 of the catalogue: what the releases layout promises to readers,
to leftovers, to a staging folder on another filesystem, and to a health check that hangs."""

from __future__ import annotations

import os
import subprocess
import threading
import time
from pathlib import Path

from tests.conftest import Host, Nginx
from tests.faults.test_disk_full import small_fs
from tests.helpers import Feed, run_updaterd
from tests.test_failpoints import assert_consistent
from updaterd.install.layout import Layout


def test_c59_reader_polling_current_never_sees_enoent(tmp_path: Path) -> None:
    """Switch back and forth 300 times while a thread opens current/bin/app in a loop."""
    layout = Layout(tmp_path / "opt")
    layout.preflight()
    for v in ("1.0.0", "2.0.0"):
        (layout.releases / v / "bin").mkdir(parents=True)
        (layout.releases / v / "bin" / "app").write_text(v)
    layout.switch("1.0.0", failpoint="")
    stop = threading.Event()
    reads: list[str] = []
    misses: list[str] = []

    def reader() -> None:
        path = str(layout.current / "bin" / "app")
        while not stop.is_set():
            try:
                with open(path) as f:
                    reads.append(f.read())
            except OSError as e:
                misses.append(f"{e.errno}")

    t = threading.Thread(target=reader)
    t.start()
    try:
        for i in range(300):
            layout.switch("2.0.0" if i % 2 == 0 else "1.0.0", failpoint="")
    finally:
        stop.set()
        t.join()
    assert misses == [], f"{len(misses)} failed opens during the switches"
    assert set(reads) == {"1.0.0", "2.0.0"} and len(reads) > 300


def test_c62_existing_release_folder_is_rebuilt_not_extracted_over(
        host: Host, nginx: Nginx, served_feed: Feed) -> None:
    """A leftover releases/1.1.0 (a crash of an older updaterd, or planted) is replaced whole."""
    served_feed.release("1.0.0")
    host.follow(nginx, served_feed)
    assert run_updaterd("--config", host.config, "--once").returncode == 0
    stale = host.prefix / "releases" / "1.1.0"
    (stale / "bin").mkdir(parents=True)
    (stale / "bin" / "hello").write_text("#!/bin/sh\necho planted\n")
    (stale / "bin" / "hello").chmod(0o755)
    (stale / "extra").write_text("left over")
    served_feed.release("1.1.0")
    r = run_updaterd("--config", host.config, "--once", "-v")
    assert r.returncode == 0, r.stderr
    assert "replacing the earlier, unused copy" in r.stderr
    assert_consistent(host, "1.1.0")
    assert not (stale / "extra").exists()
    out = subprocess.run([str(host.prefix / "bin" / "hello")], capture_output=True, text=True)
    assert out.stdout.strip() == "hello 1.1.0"
    assert run_updaterd("--config", host.config, "verify", "hello").returncode == 0


def test_c63_staging_on_another_filesystem_is_refused_at_preflight(
        host: Host, nginx: Nginx, served_feed: Feed) -> None:
    served_feed.release("1.0.0")
    host.follow(nginx, served_feed)
    staging = host.prefix / ".staging"
    with small_fs(staging, "4m"):
        staging.chmod(0o700)
        r = run_updaterd("--config", host.config, "--once")
        assert r.returncode == 1
        assert "are on different filesystems" in r.stderr
        assert host.current() is None
        mine = f"/{served_feed.folder.name}/"
        assert not [r for r in nginx.requests()
                    if r["uri"].startswith(mine) and r["uri"].endswith(".tar.gz")], \
            "refused before downloading anything"


def test_c65_hanging_health_check_is_killed_with_its_group_then_rolled_back(
        host: Host, nginx: Nginx, served_feed: Feed) -> None:
    served_feed.release("1.0.0")
    host.follow(nginx, served_feed)
    assert run_updaterd("--config", host.config, "--once").returncode == 0
    served_feed.release("1.1.0")
    marker = f"updaterd-c65-{os.getpid()}"
    # the check forks a grandchild that would outlive a kill of the shell alone
    host.follow(nginx, served_feed, health_timeout="2s",
                health_check=["sh", "-c", f'test "$UPDATERD_VERSION" = 1.0.0 || '
                                          f'{{ sh -c "sleep 600; : {marker}" & wait; }}'])
    started = time.monotonic()
    r = run_updaterd("--config", host.config, "--once")
    took = time.monotonic() - started
    assert r.returncode == 1
    assert "no answer within 2s; process group killed" in r.stderr
    assert took < 15
    assert_consistent(host, "1.0.0")
    assert host.state()["blocked"] == ["1.1.0"]
    time.sleep(0.2)
    left = subprocess.run(["pgrep", "-f", marker], capture_output=True, text=True)
    assert left.stdout.strip() == "", "the grandchild died with its group"
