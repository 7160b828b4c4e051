"""A feed through a real Squid (Debian's 5.7) that keeps what it is given for an hour: a new
release reads as "nothing new" until it revalidates, and a manifest refreshed alone is paired
with the old signature. `updaterctl check --fresh` and the host's own second request (both
with Cache-Control: no-cache, which Squid honours) get past it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.conftest import Daemon, Host
from tests.helpers import Feed, run_updaterd
from tests.servers.nginx import Nginx, running_nginx
from tests.servers.squid import Squid, running_squid


@dataclass
class Cached:
    origin: Nginx
    cache: Squid
    feed: Feed


@pytest.fixture
def cached(tmp_path: Path) -> Iterator[Cached]:
    with running_nginx(tmp_path / "origin") as origin, running_squid(origin.port) as cache:
        feed = Feed(folder=origin.root / "feed", work=tmp_path / "work")
        yield Cached(origin, cache, feed)


def test_a_stale_cache_hides_a_release_until_check_fresh(cached: Cached, host: Host,
                                                         daemon: Daemon) -> None:
    cached.feed.release("1.0.0")
    host.configure(source="manifest", url=cached.cache.url("feed/manifest.json"),
                   public_keys=[cached.feed.pub], allow_insecure=True, auto_update=False)
    daemon.start()
    assert json.loads(daemon.ctl("--json", "check", "hello").stdout)["hello"]["available"] \
        == "1.0.0"
    cached.feed.release("1.1.0")
    stale = json.loads(daemon.ctl("--json", "check", "hello").stdout)["hello"]
    assert stale["available"] == "1.0.0", "Squid answers from its copy: nothing new"
    fresh = json.loads(daemon.ctl("--json", "check", "hello", "--fresh").stdout)["hello"]
    assert fresh["available"] == "1.1.0"


def test_a_manifest_refreshed_alone_is_asked_again_with_its_signature_past_squid(
        cached: Cached, host: Host) -> None:
    cached.feed.release("1.0.0")
    host.configure(source="manifest", url=cached.cache.url("feed/manifest.json"),
                   public_keys=[cached.feed.pub], allow_insecure=True)
    first = run_updaterd("--config", host.config, "--once")
    assert first.returncode == 0 and host.current() == "1.0.0", first.stderr
    cached.feed.release("1.1.0")
    # someone (a browser, a purge of one file) refreshes the manifest alone in the cache
    refreshed = httpx.get(cached.cache.url("feed/manifest.json"),
                          headers={"Cache-Control": "no-cache"})
    assert b'"1.1.0"' in refreshed.content
    r = run_updaterd("--config", host.config, "--once")
    assert r.returncode == 0, r.stderr
    assert host.current() == "1.1.0"
    assert "as a cache in front of the feed served them; asked again past it" in r.stderr
