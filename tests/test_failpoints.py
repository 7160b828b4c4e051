"""Crash safety: kill -9 at every failpoint of the update and rollback transactions, then show
that the app was on exactly one complete version at the crash, and that the next run leaves
state and disk in agreement with no leftovers (catalogue C56, C61, C66, C73)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import Daemon, Host, Nginx
from tests.helpers import Feed, run_updaterd
from updaterd import failpoints

UPDATE_POINTS = [fp for fp in failpoints.ALL if not fp.startswith(("rollback.", "inplace."))]
ROLLBACK_POINTS = [fp for fp in failpoints.ALL if fp.startswith("rollback.")]


def release_is_complete(host: Host, version: str) -> bool:
    root = host.prefix / "releases" / version
    if (root / "share" / "VERSION").read_text() != f"{version}\n":
        return False
    out = subprocess.run([str(root / "bin" / "hello")], capture_output=True, text=True)
    return f" {version}" in (out.stdout + out.stderr)


def assert_consistent(host: Host, expected: str) -> None:
    assert host.current() == expected
    assert release_is_complete(host, expected)
    state = host.state()
    assert state["installed"] == expected and state["pending"] is None
    assert os.readlink(host.prefix / "bin" / "hello") == "../current/bin/hello"
    staging = host.prefix / ".staging"
    assert not staging.exists() or not any(staging.iterdir())
    for folder in (host.prefix, host.prefix / "bin", host.prefix / "releases",
                   host.state_dir / "hello", host.base / "cache" / "hello"):
        assert not [p for p in folder.iterdir() if p.name.startswith(".updaterd-tmp")], folder


def crash_at(host: Host, failpoint: str) -> None:
    r = run_updaterd("--config", host.config, "--once",
                     env={"UPDATERD_FAILPOINTS": f"{failpoint}=kill"})
    assert r.returncode == -signal.SIGKILL, f"{failpoint} was not reached: {r.stderr}"


def prepare(host: Host, nginx: Nginx, feed: Feed, healthy: bool) -> None:
    restarts = host.base / "restarts.log"
    host.follow(nginx, feed, restart=["sh", "-c", f'echo "$UPDATERD_VERSION" >> {restarts}'])
    feed.release("1.0.0")
    assert run_updaterd("--config", host.config, "--once").returncode == 0
    feed.release("1.1.0", healthy=healthy)


@pytest.mark.parametrize("failpoint", UPDATE_POINTS)
def test_c56_kill_at_each_update_step_leaves_one_complete_version(
        host: Host, nginx: Nginx, served_feed: Feed, failpoint: str) -> None:
    prepare(host, nginx, served_feed, healthy=True)
    crash_at(host, failpoint)
    at_crash = host.current()
    assert at_crash in ("1.0.0", "1.1.0")
    assert release_is_complete(host, at_crash)
    r = run_updaterd("--config", host.config, "--once")
    assert r.returncode == 0, r.stderr
    assert_consistent(host, "1.1.0")


@pytest.mark.parametrize("failpoint", ROLLBACK_POINTS)
def test_c66_kill_during_rollback_is_finished_from_the_journal(
        host: Host, nginx: Nginx, served_feed: Feed, failpoint: str) -> None:
    prepare(host, nginx, served_feed, healthy=False)
    crash_at(host, failpoint)
    at_crash = host.current()
    assert at_crash in ("1.0.0", "1.1.0")
    run_updaterd("--config", host.config, "--once")
    assert_consistent(host, "1.0.0")
    assert host.state()["blocked"] == ["1.1.0"]
    restarts = (host.base / "restarts.log").read_text().split()
    assert restarts[-1] == "1.0.0", "the old version was restarted after the rollback"


def test_c57_kill_after_an_old_release_left_releases(
        host: Host, nginx: Nginx, served_feed: Feed) -> None:
    """`retain` moves an old release out of `releases/` in one rename before deleting it:
    killed between the two, the release is gone (not half there) and the next run clears the
    leftover in `.staging`."""
    host.follow(nginx, served_feed, retain=0)
    for version in ("1.0.0", "1.1.0"):
        served_feed.release(version)
        assert run_updaterd("--config", host.config, "--once").returncode == 0
    served_feed.release("1.2.0")
    crash_at(host, "prune.after_rename")
    assert sorted(os.listdir(host.prefix / "releases")) == ["1.1.0", "1.2.0"]
    assert any((host.prefix / ".staging").iterdir()), "the retired release waits in .staging"
    r = run_updaterd("--config", host.config, "--once")
    assert r.returncode == 0, r.stderr
    assert "removed leftover" in r.stderr
    assert_consistent(host, "1.2.0")
    r = run_updaterd("--config", host.config, "verify", "hello")
    assert r.returncode == 0 and r.stdout.count(": intact") == 2, r.stdout + r.stderr


def _stopped(pid: int) -> bool:
    """Whether `pid` is stopped (SIGSTOP by its own failpoint)."""
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "T"
    return False


def test_c66_a_stop_as_the_daemon_starts_still_lets_a_recovery_finish(
        host: Host, nginx: Nginx, served_feed: Feed, daemon: Daemon) -> None:
    """A SIGTERM that reaches the daemon while its first step finishes a journaled rollback
    (stopped at its switch, right after the start) is a stop like any other: the rollback
    ends, the daemon exits 0. The signal receiver was opened after the workers started, and a
    SIGTERM before it killed the daemon (seen under load as an exit of -15); three starts,
    since which task runs first after a start is trio's choice."""
    host.follow(nginx, served_feed)
    served_feed.release("1.0.0")
    assert run_updaterd("--config", host.config, "--once").returncode == 0
    for bad in ("1.1.0", "1.2.0", "1.3.0"):
        served_feed.release(bad, healthy=False)
        crash_at(host, "rollback.after_journal")
        assert host.state()["pending"]["kind"] == "rollback"
        daemon.env["UPDATERD_FAILPOINTS"] = "rollback.after_rename=stop"
        daemon.start()
        assert daemon.proc is not None
        deadline = time.monotonic() + 20
        while not _stopped(daemon.proc.pid):
            assert time.monotonic() < deadline and daemon.proc.poll() is None, \
                daemon.log.read_text()
            time.sleep(0.01)
        daemon.proc.send_signal(signal.SIGTERM)
        daemon.proc.send_signal(signal.SIGCONT)
        assert daemon.stop() == 0, daemon.log.read_text()
        state = host.state()
        assert state["pending"] is None and state["installed"] == "1.0.0", state
        assert bad in state["blocked"] and host.current() == "1.0.0"


def test_c66_a_stop_during_the_recovery_of_a_rollback_waits_for_it(
        host: Host, nginx: Nginx, served_feed: Feed, daemon: Daemon) -> None:
    """Finishing a journaled rollback is shielded: SIGTERM while the old version's restart
    runs lets the rollback end (switched, restarted, recorded) before the daemon exits."""
    restarts, slow = host.base / "restarts.log", host.base / "slow"
    host.follow(nginx, served_feed, restart=["sh", "-c", f'[ "$UPDATERD_VERSION" != 1.0.0 ] '
                f'|| [ ! -e {slow} ] || sleep 2; echo "$UPDATERD_VERSION" >> {restarts}'])
    served_feed.release("1.0.0")
    assert run_updaterd("--config", host.config, "--once").returncode == 0
    served_feed.release("1.1.0", healthy=False)
    crash_at(host, "rollback.after_journal")
    assert host.state()["pending"]["kind"] == "rollback"
    slow.touch()
    daemon.start()
    daemon.wait_for(lambda: host.current() == "1.0.0", what="the rollback's switch")
    assert daemon.stop() == 0
    state = host.state()
    assert state["pending"] is None and state["installed"] == "1.0.0", state
    assert state["blocked"] == ["1.1.0"]
    assert restarts.read_text().split()[-1] == "1.0.0"
