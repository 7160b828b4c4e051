"""Data that can come back (`data_snapshots`): the real daemon keeps a copy of the
app's `shared/` just before each update switches away from a version, bounded by `retain`;
`updaterctl rollback APP --with-data` puts code and data back together, keeping what it
replaces; a recall puts back code only. A kill -9 in the middle of the data swap is finished
by the next start."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from tests.conftest import Daemon, Host, Nginx
from tests.helpers import Feed
from tests.test_shared import APP, ship
from updaterd import failpoints


def runs(host: Host) -> str:
    return (host.prefix / "shared" / "data" / "runs").read_text()


def on_1_1_0(host: Host, nginx: Nginx, feed: Feed, daemon: Daemon, **cfg: object) -> None:
    """1.0.0 ran and wrote its data; 1.1.0 (the bad one) ran and wrote over it."""
    ship(feed, "1.0.0")
    host.follow(nginx, feed, shared=["data", "etc/notes.conf"], health_check=APP,
                data_snapshots=True, **cfg)
    daemon.start()
    daemon.wait_for(lambda: daemon.app()["current"] == "1.0.0", what="1.0.0")
    ship(feed, "1.1.0")
    daemon.ctl("update", "hello", check=True)
    assert runs(host) == "1.0.0\n1.1.0\n"
    (host.prefix / "shared" / "data" / "corrupted-by-1.1.0").write_text("x")


def test_a_snapshot_is_kept_per_version_left_and_bounded_by_retain(
        host: Host, nginx: Nginx, served_feed: Feed, daemon: Daemon) -> None:
    on_1_1_0(host, nginx, served_feed, daemon, retain=1)
    snaps = host.prefix / "snapshots"
    assert sorted(p.name for p in snaps.iterdir()) == ["1.0.0"]
    assert (snaps / "1.0.0" / "data" / "runs").read_text() == "1.0.0\n"
    assert (snaps.stat().st_mode & 0o777, snaps.stat().st_uid) == (0o700, 0)
    kept = json.loads(daemon.ctl("--json", "list-backups", "hello", check=True).stdout)
    sizes = {b["version"]: b["data_snapshot"] for b in kept}
    assert sizes == {"1.0.0": 6 + 17, "1.1.0": None}  # data/runs, etc/notes.conf
    assert "DATA" in daemon.ctl("list-backups", "hello", check=True).stdout
    ship(served_feed, "1.2.0")
    daemon.ctl("update", "hello", check=True)  # retain 1: 1.0.0 goes, and its data with it
    assert sorted(p.name for p in snaps.iterdir()) == ["1.1.0"]
    assert sorted(p.name for p in (host.prefix / "releases").iterdir()) == ["1.1.0", "1.2.0"]


def test_rollback_with_data_puts_code_and_data_back_and_keeps_what_it_replaced(
        host: Host, nginx: Nginx, served_feed: Feed, daemon: Daemon) -> None:
    on_1_1_0(host, nginx, served_feed, daemon)
    os.chown(host.prefix / "shared" / "data" / "runs", 65534, 65534)  # the app's own
    r = daemon.ctl("rollback", "hello", "--with-data", check=True)
    assert "rolled back from 1.1.0 to 1.0.0 with the data 1.0.0 left" in r.stdout
    assert host.current() == "1.0.0"
    assert runs(host) == "1.0.0\n"  # the data as 1.0.0 left it
    assert not (host.prefix / "shared" / "data" / "corrupted-by-1.1.0").exists()
    left = host.prefix / "snapshots" / "1.1.0" / "data"
    assert (left / "corrupted-by-1.1.0").exists()  # what it replaced: kept, to undo the choice
    assert (left / "runs").stat().st_uid == 65534
    assert [p.name for p in host.prefix.iterdir() if p.name.startswith(".shared")] == []
    history = json.loads(daemon.ctl("--json", "history", "hello", check=True).stdout)
    assert history[-1]["action"] == "rolled_back"


def test_after_a_recall_with_data_puts_back_the_data_alone(
        host: Host, nginx: Nginx, served_feed: Feed, daemon: Daemon) -> None:
    """The 3 a.m. order: the recall moved the code back and left the data; then
    `rollback --to 1.0.0 --with-data` on the version it runs puts the data back, restarts
    it, counts no rollback away from 1.0.0 and skips nothing."""
    on_1_1_0(host, nginx, served_feed, daemon)
    daemon.ctl("rollback", "hello", check=True)  # the code goes back (as a recall does)
    st = host.state()
    r = daemon.ctl("rollback", "hello", "--to", "1.0.0", "--with-data", check=True)
    assert r.stdout.strip() == "hello: put back the data 1.0.0 left (what it replaced is kept)"
    assert runs(host) == "1.0.0\n" and host.current() == "1.0.0"
    replaced = host.prefix / "snapshots" / ".replaced-1.0.0" / "data"
    assert (replaced / "corrupted-by-1.1.0").exists()
    after = host.state()
    assert after["rollbacks_from"] == st["rollbacks_from"]
    assert (after["skipped"], after["previous"]) == (st["skipped"], st["previous"])
    assert after["history"][-1]["reason"] == "its data put back by the operator"
    r = daemon.ctl("rollback", "hello", "--to", "1.0.0")
    assert r.returncode != 0 and "already the current version" in r.stderr


def test_a_recall_or_a_plain_rollback_never_touches_data(
        host: Host, nginx: Nginx, served_feed: Feed, daemon: Daemon) -> None:
    on_1_1_0(host, nginx, served_feed, daemon)
    daemon.ctl("rollback", "hello", check=True)
    assert host.current() == "1.0.0"
    assert (host.prefix / "shared" / "data" / "corrupted-by-1.1.0").exists()


def test_with_data_where_no_snapshot_is_kept_is_refused_and_changes_nothing(
        host: Host, nginx: Nginx, served_feed: Feed, daemon: Daemon) -> None:
    ship(served_feed, "1.0.0")
    host.follow(nginx, served_feed, shared=["data"], health_check=APP)  # snapshots off
    daemon.start()
    daemon.wait_for(lambda: daemon.app()["current"] == "1.0.0", what="1.0.0")
    ship(served_feed, "1.1.0")
    daemon.ctl("update", "hello", check=True)
    r = daemon.ctl("rollback", "hello", "--with-data")
    assert r.returncode != 0
    assert "no data snapshot of 1.0.0 is kept (data_snapshots is off in the configuration)" \
        in r.stderr
    assert host.current() == "1.1.0" and runs(host) == "1.0.0\n1.1.0\n"


@pytest.mark.parametrize("point", failpoints.DATA)
def test_a_kill_during_the_data_swap_is_finished_by_the_next_start(
        host: Host, nginx: Nginx, served_feed: Feed, daemon: Daemon, point: str) -> None:
    on_1_1_0(host, nginx, served_feed, daemon)
    daemon.stop()
    killed = Daemon(host, env={"UPDATERD_FAILPOINTS": f"{point}=kill"}).start()
    r = killed.ctl("rollback", "hello", "--with-data")
    assert r.returncode != 0  # the daemon died under it
    assert killed.proc is not None and killed.proc.wait(10) == -9
    killed.logfile.close()
    daemon.start().wait_ready()
    daemon.wait_for(lambda: daemon.app()["phase"] == "idle" and host.state()["pending"] is None,
                    what="the rollback finished")
    assert host.current() == "1.0.0"
    assert runs(host) == "1.0.0\n"  # restored
    assert not (host.prefix / "shared" / "data" / "corrupted-by-1.1.0").exists()
    assert (host.prefix / "snapshots" / "1.1.0" / "data" / "corrupted-by-1.1.0").exists()
    assert [p.name for p in host.prefix.iterdir() if p.name.startswith(".shared")] == []


def test_data_snapshots_needs_shared_paths(host: Host, nginx: Nginx, served_feed: Feed) -> None:
    served_feed.release("1.0.0")
    host.follow(nginx, served_feed, data_snapshots=True)
    from tests.helpers import BIN
    r = subprocess.run([str(BIN / "updaterd"), "--config", str(host.config), "check-config"],
                       capture_output=True, text=True)
    assert r.returncode != 0
    assert "data_snapshots: keeps snapshots of the app's shared paths; set `shared` too" \
        in r.stderr + r.stdout
