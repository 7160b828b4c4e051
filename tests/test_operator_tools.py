"""`updaterctl reset-failed` and `updaterctl prune` through the real daemon (issue 30): an
operator clears a failure they have seen, and drops kept releases by hand."""

from __future__ import annotations

import json

from tests.conftest import Daemon, Host, Nginx
from tests.helpers import Feed


def test_reset_failed_clears_the_failure_its_count_and_backoff(
        running: Daemon, served_feed: Feed, host: Host) -> None:
    art = served_feed.release("1.1.0")
    (served_feed.folder / art.name).unlink()  # the update fails at its download
    assert running.ctl("update", "hello").returncode == 1
    app = running.app()
    assert app["phase"] == "failed" and app["last_error"]
    assert host.state()["consecutive_failures"] == 1
    r = running.ctl("reset-failed", "hello", check=True)
    assert "hello: failure record cleared" in r.stdout
    app = running.app()
    assert (app["phase"], app.get("last_error")) == ("idle", None)
    st = host.state()
    assert (st["consecutive_failures"], st["last_error"]) == (0, None)
    assert host.current() == "1.0.0" and st["history"], "nothing else changed"
    everyone = json.loads(running.ctl("--json", "reset-failed", check=True).stdout)
    assert everyone == ["hello"]
    r = running.ctl("reset-failed", "nosuch")
    assert r.returncode == 1 and "unknown app: nosuch" in r.stderr


def test_prune_keeps_the_current_release_and_the_rollback_target_unless_forced(
        host: Host, nginx: Nginx, served_feed: Feed, daemon: Daemon) -> None:
    served_feed.release("1.0.0")
    host.follow(nginx, served_feed, retain=5)
    daemon.start()
    daemon.wait_for(lambda: daemon.app()["current"] == "1.0.0", what="1.0.0")
    for version in ("1.1.0", "1.2.0", "1.3.0"):
        served_feed.release(version)
        daemon.ctl("update", "hello", check=True)
    r = daemon.ctl("prune", "hello", "--keep", "0", check=True)
    assert r.stdout.strip() == "hello: removed 1.0.0, 1.1.0; kept 1.2.0, 1.3.0"
    r = json.loads(daemon.ctl("--json", "prune", "hello", "--keep", "0", check=True).stdout)
    assert r == {"removed": [], "kept": ["1.2.0", "1.3.0"]}
    r = daemon.ctl("prune", "hello", "--keep", "0", "--force", check=True)
    assert r.stdout.strip() == "hello: removed 1.2.0; kept 1.3.0"
    assert sorted(p.name for p in (host.prefix / "releases").iterdir()) == ["1.3.0"]
    assert host.current() == "1.3.0"
    assert not (host.state_dir / "hello" / "trees" / "1.0.0.json").exists()
    assert daemon.ctl("prune", "hello", "--keep", "-1").returncode == 2
    assert daemon.ctl("rollback", "hello").returncode == 1  # nothing left to go back to
