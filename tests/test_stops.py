"""Stops and starts of the real daemon: a stop during a health check never fails a
good release (catalogue H157), and an operation a stop, a crash or a power cut left in
progress goes on at the next start instead of at the next scheduled check, hours away."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

from tests.conftest import Daemon, Host, Nginx
from tests.helpers import BIN, Feed, make_tar, release_files


def _slow_check(marks: Path) -> list[str]:
    """A health check that leaves its pid in `marks` and passes after 4 s."""
    return ["sh", "-c", f'echo $$ > "{marks}/check.$UPDATERD_VERSION.$$"; exec sleep 4']


def _checks_of(marks: Path, version: str) -> list[int]:
    return sorted(int(p.read_text()) for p in marks.glob(f"check.{version}.*"))


def _update_in_background(daemon: Daemon) -> subprocess.Popen[bytes]:
    return subprocess.Popen([str(BIN / "updaterctl"), "--socket", str(daemon.socket), "update",
                             "hello"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _installed_with_a_check_running(host: Host, nginx: Nginx, feed: Feed, daemon: Daemon,
                                    marks: Path) -> subprocess.Popen[bytes]:
    feed.release("1.0.0")
    host.follow(nginx, feed, health_check=_slow_check(marks), health_timeout="30s")
    daemon.start()
    daemon.wait_for(lambda: daemon.app()["current"] == "1.0.0", timeout=30, what="1.0.0")
    feed.release("1.1.0")
    client = _update_in_background(daemon)
    daemon.wait_for(lambda: _checks_of(marks, "1.1.0") != [], timeout=30,
                    what="the health check of 1.1.0")
    return client


def test_h157_a_check_killed_with_the_daemon_is_no_failure_and_runs_again_at_the_start(
        host: Host, nginx: Nginx, served_feed: Feed, daemon: Daemon, tmp_path: Path) -> None:
    marks = tmp_path / "marks"
    marks.mkdir()
    client = _installed_with_a_check_running(host, nginx, served_feed, daemon, marks)
    # what a stop does under systemd's default KillMode: SIGTERM to the daemon and to the check,
    # in any order (here the check's death comes first, as it may)
    os.kill(_checks_of(marks, "1.1.0")[0], signal.SIGTERM)
    time.sleep(0.3)
    daemon.signal(signal.SIGTERM)
    assert daemon.proc is not None and daemon.proc.wait(30) == 0
    client.wait(10)
    st = host.state()
    assert st["blocked"] == [] and st["pending"] is not None, st
    assert not [h for h in st["history"] if h["action"] == "rolled_back"], st["history"]
    assert host.current() == "1.1.0"  # still switched: the release was never judged
    log = daemon.log.read_text()
    assert "as updaterd stopped: not a failure" in log, log
    again = Daemon(host)
    try:
        again.start()
        again.wait_for(lambda: host.state()["pending"] is None, timeout=30,
                       what="the check run again")
        assert again.app()["current"] == "1.1.0" and again.app()["blocked"] == []
        assert len(_checks_of(marks, "1.1.0")) == 2
        assert host.state()["history"][-1]["action"] == "installed"
    finally:
        again.stop()


def test_h157_a_stop_of_the_daemon_alone_waits_for_the_check_and_keeps_the_release(
        host: Host, nginx: Nginx, served_feed: Feed, daemon: Daemon, tmp_path: Path) -> None:
    """KillMode=mixed: only the daemon is told to stop; it lets the check end first."""
    marks = tmp_path / "marks"
    marks.mkdir()
    client = _installed_with_a_check_running(host, nginx, served_feed, daemon, marks)
    daemon.signal(signal.SIGTERM)
    assert daemon.proc is not None and daemon.proc.wait(30) == 0
    client.wait(10)
    st = host.state()
    assert st["pending"] is None and st["installed"] == "1.1.0" and st["blocked"] == [], st


def test_an_update_cut_by_a_stop_goes_on_at_the_next_start(
        host: Host, nginx: Nginx, served_feed: Feed, daemon: Daemon, tmp_path: Path) -> None:
    feed = served_feed
    files = {**release_files("1.0.0"), "share/blob": (os.urandom(1 << 20), 0o644)}
    feed.publish("1.0.0", [make_tar(tmp_path / "hello-1.0.0.tar.gz", files,
                                    top="hello-1.0.0")])
    host.follow(nginx, feed, max_rate="64KiB/s")  # 16 s of download
    daemon.start()
    daemon.wait_for(lambda: daemon.app()["phase"] == "downloading", timeout=30,
                    what="the download")
    daemon.signal(signal.SIGTERM)
    assert daemon.proc is not None and daemon.proc.wait(30) == 0
    assert host.current() is None and host.state()["in_progress"] == "update"
    host.follow(nginx, feed)  # full speed now; the next scheduled check is an hour away
    again = Daemon(host)
    try:
        started = time.monotonic()
        again.start()
        again.wait_for(lambda: again.app()["current"] == "1.0.0", timeout=30,
                       what="the cut update, resumed at the start")
        assert time.monotonic() - started < 30
        assert "the last update was cut (a stop, a crash or a power cut); checking now" in \
            again.log.read_text()
        st = host.state()
        assert st["in_progress"] is None and st["cuts"] == 0, st
    finally:
        again.stop()


def test_an_operation_cut_at_every_start_waits_for_its_schedule(
        host: Host, nginx: Nginx, served_feed: Feed, tmp_path: Path) -> None:
    """Cut three starts in a row (it may be what brings the daemon down): not a fourth time."""
    served_feed.release("1.0.0")
    host.follow(nginx, served_feed)
    folder = host.state_dir / "hello"
    folder.mkdir(parents=True)
    now = time.time()
    (folder / "state.json").write_text(json.dumps({"schema": 1, "last_check": now,
                                                   "in_progress": "update", "cuts": 3}))
    d = Daemon(host)
    try:
        d.start()
        d.wait_for(lambda: "cut at 4 starts in a row" in d.log.read_text(), timeout=20,
                   what="the warning")
        assert d.app()["next_check"] > now + 1800 and d.app()["current"] is None
    finally:
        d.stop()
