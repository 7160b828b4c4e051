"""Rows of RELIABILITY.md group A that need the real updaterd and a served feed."""

from __future__ import annotations

import subprocess

from tests.conftest import Daemon, Host, Nginx
from tests.helpers import Feed, make_tar, release_files, run_updaterd


def hello(host: Host) -> str:
    return subprocess.run([str(host.prefix / "bin" / "hello")], capture_output=True,
                          text=True).stdout.strip()


def test_a17_cached_artifact_from_an_older_serial_is_not_trusted(
        host: Host, nginx: Nginx, served_feed: Feed) -> None:
    """An artifact downloaded under serial 1 is re-verified against serial 2's digests."""
    art = served_feed.release("1.0.0")
    host.follow(nginx, served_feed)
    r = run_updaterd("--config", host.config, "--once",
                     env={"UPDATERD_FAILPOINTS": "stage.after_extract=exit"})
    assert r.returncode == 99
    cached = host.base / "cache" / "hello" / art.name
    assert cached.exists(), "the verified download stays in the cache"
    # serial 2 publishes other bytes under the same name and version
    files = release_files("1.0.0")
    files["share/VERSION"] = (b"1.0.0 rebuilt\n", 0o644)
    make_tar(art, files, top="hello-1.0.0")
    served_feed.publish("1.0.0", [art])
    r = run_updaterd("--config", host.config, "--once", "-v")
    assert r.returncode == 0, r.stderr
    assert "cached copy does not verify" in r.stderr
    assert (host.prefix / "current" / "share" / "VERSION").read_text() == "1.0.0 rebuilt\n"
    assert host.state()["serial"] == 2


def test_a08_older_version_only_through_the_explicit_path(host: Host, nginx: Nginx,
                                                         served_feed: Feed) -> None:
    served_feed.release("1.0.0")
    served_feed.release("1.1.0")
    host.follow(nginx, served_feed)
    assert run_updaterd("--config", host.config, "--once").returncode == 0
    assert hello(host) == "hello 1.1.0"
    # the feed now offers only the older version: an automatic run never goes back
    manifest = served_feed.manifest()
    assert [r["version"] for r in manifest["releases"]] == ["1.0.0", "1.1.0"]
    r = run_updaterd("--config", host.config, "--once")
    assert r.returncode == 0 and hello(host) == "hello 1.1.0"
    r = run_updaterd("--config", host.config, "update", "hello", "--version", "1.0.0")
    assert r.returncode == 0, r.stderr
    assert hello(host) == "hello 1.0.0"
    r = run_updaterd("--config", host.config, "--once")
    assert hello(host) == "hello 1.1.0", "a downgrade on purpose is not pinned: newer returns"


def test_a27_corrupt_state_refuses_updates_until_resumed(host: Host, nginx: Nginx,
                                                        served_feed: Feed,
                                                        daemon: Daemon) -> None:
    served_feed.release("1.0.0")
    host.follow(nginx, served_feed)
    assert run_updaterd("--config", host.config, "--once").returncode == 0
    serial = host.state()["serial"]
    path = host.state_dir / "hello" / "state.json"
    text = path.read_text()
    path.write_text(text[:text.index('"pending"')])  # torn after the serial
    served_feed.release("1.1.0")
    r = run_updaterd("--config", host.config, "--once")
    assert r.returncode == 0 and "paused" in r.stderr
    assert host.current() == "1.0.0", "no automatic update on a state that lost its memory"
    state = host.state()
    assert state["paused"] and state["serial"] >= serial
    daemon.start()
    app = daemon.app()
    assert app["paused"] and "corrupt" in app["last_error"] and app["current"] == "1.0.0"
    daemon.ctl("resume", "hello", check=True)  # the operator looked: updates go on
    daemon.wait_for(lambda: daemon.app()["current"] == "1.1.0", what="the update after resume")
