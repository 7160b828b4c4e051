"""A feed behind caches that misbehave as real ones did (Varnish, Squid, a CDN purged one file at
a time): the real updaterd against the fault server (tests/servers/faults.py), which plays the
cache. What breaks must be named for what it is, and a cache that only pairs files of
different publishes must not stop a single host."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from tests.conftest import Daemon, FaultServer, Host
from tests.helpers import Feed, run_updaterd


def once(host: Host) -> subprocess.CompletedProcess[str]:
    return run_updaterd("--config", host.config, "--once")


def behind(host: Host, fault_server: FaultServer, feed: Feed, mode: str, **app: object) -> None:
    """The host follows the feed the fault server serves, misbehaving as `mode`."""
    host.configure(source="manifest", url=fault_server.url(mode, "manifest.json"),
                   public_keys=[feed.pub], allow_insecure=True, **app)


def test_a_cache_pairing_a_new_manifest_with_an_old_signature_is_asked_again_past_it(
        host: Host, fault_server: FaultServer, tmp_path: Path) -> None:
    """A cache purged manifest.json alone: every host, new ones too, failed with 'signature by
    key ... does not verify' for as long as the cache kept the old signature."""
    feed = Feed(folder=fault_server.root, work=tmp_path / "work")
    feed.release("1.0.0")
    shutil.copy(feed.folder / "manifest.json.minisig", feed.folder / "manifest.json.minisig.stale")
    feed.release("1.1.0")
    behind(host, fault_server, feed, "stalesig")
    r = once(host)
    assert r.returncode == 0, r.stderr
    assert host.current() == "1.1.0"
    assert "as a cache in front of the feed served them; asked again past it" in r.stderr
    assert "purge manifest.json and its .minisig together" in r.stderr
    asked = [(q["path"].rsplit("/", 1)[-1], q["cache_control"])
             for q in fault_server.requests() if "manifest" in q["path"]]
    assert asked == [("manifest.json", None), ("manifest.json.minisig", None),
                     ("manifest.json", "no-cache"), ("manifest.json.minisig", "no-cache")]


def test_a_signature_refused_past_every_cache_too_says_so(
        host: Host, fault_server: FaultServer, tmp_path: Path) -> None:
    feed = Feed(folder=fault_server.root, work=tmp_path / "work")
    feed.release("1.0.0")
    other = Feed(folder=tmp_path / "other", work=tmp_path / "other-work")
    behind(host, fault_server, other, "stalesig")
    r = once(host)
    assert r.returncode == 1
    assert "manifest signature refused" in r.stderr
    assert "asked again past any cache with Cache-Control: no-cache: the same answer, so the " \
        "feed itself is signed so" in r.stderr
    assert host.current() is None


def test_a_good_feed_is_asked_once_whatever_the_cache(host: Host, fault_server: FaultServer,
                                                      tmp_path: Path) -> None:
    feed = Feed(folder=fault_server.root, work=tmp_path / "work")
    feed.release("1.0.0")
    behind(host, fault_server, feed, "stalesig")
    r = once(host)
    assert r.returncode == 0, r.stderr
    assert not [q for q in fault_server.requests() if q["cache_control"]]
    assert "asked again" not in r.stderr


def test_check_fresh_asks_every_cache_to_revalidate_with_the_origin(
        host: Host, fault_server: FaultServer, tmp_path: Path, daemon: Daemon) -> None:
    """A stale cache reads as "nothing new" for as long as it likes (Squid: hours);
    `updaterctl check --fresh` asks for a revalidated answer, every document of the check."""
    feed = Feed(folder=fault_server.root, work=tmp_path / "work")
    feed.release("1.0.0")
    behind(host, fault_server, feed, "plain", auto_update=False)
    daemon.start()
    assert daemon.ctl("check", "hello").returncode == 0
    assert not [q for q in fault_server.requests() if q["cache_control"]]
    r = daemon.ctl("check", "hello", "--fresh")
    assert r.returncode == 0, r.stderr
    fresh = [q["path"].rsplit("/", 1)[-1] for q in fault_server.requests()
             if q["cache_control"] == "no-cache"]
    assert "manifest.json" in fresh
    plain = daemon.ctl("check", "hello")
    assert plain.returncode == 0
    assert [q["path"].rsplit("/", 1)[-1] for q in fault_server.requests()
            if q["cache_control"] == "no-cache"] == fresh, "only the check that asked"


def test_a_feed_moved_for_good_is_asked_at_its_new_address_and_said_once(
        host: Host, fault_server: FaultServer, tmp_path: Path, daemon: Daemon) -> None:
    """A 301 was followed on every request, never remembered or reported."""
    feed = Feed(folder=fault_server.root, work=tmp_path / "work")
    feed.release("1.0.0")
    behind(host, fault_server, feed, "moved", auto_update=False)
    daemon.start()
    for _ in range(3):
        assert daemon.ctl("check", "hello").returncode == 0
    moved = [q for q in fault_server.requests() if q["mode"] == "moved"]
    assert [q["path"] for q in moved] == ["/moved/manifest.json"], "asked there once"
    log = daemon.log.read_text()
    assert log.count("moved for good (HTTP 301) to") == 1
    assert f"{fault_server.url('moved', 'manifest.json')} moved for good (HTTP 301) to " \
        f"{fault_server.url('plain', 'manifest.json')}" in log
