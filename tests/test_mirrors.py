"""A feed served by several origins (`mirrors`): the real daemon against real nginx, one origin
down (a closed port), one stale (a mirror restored from an old copy), one good. The host goes
on from the good one, every byte verified, says why it passed the others over, and asks the
failing ones after the good one while they back off."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import Daemon, Host
from tests.helpers import Feed, run_updaterd
from tests.servers.nginx import Nginx, free_port


def once(host: Host) -> subprocess.CompletedProcess[str]:
    return run_updaterd("--config", host.config, "--once")


class Site:
    """This test's folders on the shared nginx: `url("good/x")`, `folder("good")`, and the
    paths asked of them (without this test's prefix)."""

    def __init__(self, nginx: Nginx, tmp_path: Path) -> None:
        self.nginx, self.prefix = nginx, tmp_path.name

    def url(self, rel: str) -> str:
        return self.nginx.url(f"{self.prefix}/{rel}")

    def folder(self, name: str) -> Path:
        return self.nginx.root / self.prefix / name

    def paths(self) -> list[str]:
        lead = f"/{self.prefix}"
        return [q["uri"].removeprefix(lead) for q in self.nginx.requests()
                if q["uri"].startswith(lead + "/")]

    def mirror(self, feed: Feed, name: str) -> None:
        """`name/` becomes a copy of the feed as it is now (an rsync'd mirror)."""
        shutil.rmtree(self.folder(name), ignore_errors=True)
        shutil.copytree(feed.folder, self.folder(name))


def three_origins(host: Host, site: Site, feed: Feed, **app: object) -> tuple[str, str, str]:
    """The host asks a closed port first, then the mirror `stale/`, then `good/` (the feed)."""
    down = f"http://127.0.0.1:{free_port()}/feed/manifest.json"
    stale, good = site.url("stale/manifest.json"), site.url("good/manifest.json")
    host.configure(source="manifest", url=down, mirrors=[stale, good], public_keys=[feed.pub],
                   allow_insecure=True, check_interval="1h", jitter="0s", **app)
    return down, stale, good


def on_1_1_0_with_an_old_copy(nginx: Nginx, tmp_path: Path) -> tuple[Site, Feed, Path]:
    """The feed at 1.1.0 in `good/`, mirrored as it is in `stale/`; a copy of it at 1.0.0
    (serial 1) kept aside, to restore a mirror from."""
    site = Site(nginx, tmp_path)
    feed = Feed(folder=site.folder("good"), work=tmp_path / "work")
    feed.release("1.0.0")
    old = tmp_path / "old-copy"
    shutil.copytree(feed.folder, old)
    feed.release("1.1.0")
    site.mirror(feed, "stale")
    return site, feed, old


def test_one_origin_down_one_stale_one_good_the_host_installs_from_the_good_one(
        host: Host, nginx: Nginx, tmp_path: Path) -> None:
    site, feed, old = on_1_1_0_with_an_old_copy(nginx, tmp_path)
    down, stale, good = three_origins(host, site, feed)

    r = once(host)  # the mirror is current yet: the host takes 1.1.0 from it
    assert r.returncode == 0, r.stderr
    assert host.current() == "1.1.0"
    assert f"origin {down} failed (feed)" in r.stderr
    assert "retrying" not in r.stderr, "the next origin is the retry"
    assert f"the feed is taken from {stale}" in r.stderr
    assert "/stale/hello-1.1.0-linux-x86_64.tar.gz" in site.paths()

    shutil.rmtree(site.folder("stale"))  # the mirror is restored from an old copy ...
    shutil.copytree(old, site.folder("stale"))
    feed.release("1.2.0")  # ... while the feed goes on
    before = len(site.paths())
    r = once(host)
    assert r.returncode == 0, r.stderr
    assert host.current() == "1.2.0"
    assert re.search(rf"origin {re.escape(stale)} answered with a feed this host refuses "
                     r"\(feed\): manifest serial 1 is below 2 .*passed over for the next",
                     r.stderr), r.stderr
    assert f"the feed is taken from {good}" in r.stderr
    assert f"installing 1.2.0 as it downloads from {site.url('good/')}hello-1.2.0" in r.stderr
    asked = site.paths()[before:]
    assert "/good/hello-1.2.0-linux-x86_64.tar.gz" in asked
    assert not [p for p in asked if p.startswith("/stale/") and p.endswith(".tar.gz")]
    assert "/stale/manifest.json.minisig" in asked, "the stale feed was read and refused"


def test_the_good_origin_is_asked_first_while_the_others_back_off(
        host: Host, nginx: Nginx, tmp_path: Path, daemon: Daemon) -> None:
    site, feed, old = on_1_1_0_with_an_old_copy(nginx, tmp_path)
    down, stale, good = three_origins(host, site, feed)
    once(host)  # the host has seen serial 2 (from the mirror, current then) ...
    assert host.current() == "1.1.0"
    shutil.rmtree(site.folder("stale"))  # ... which is then restored from an old copy
    shutil.copytree(old, site.folder("stale"))

    daemon.start()
    assert daemon.ctl("check", "hello").returncode == 0
    first = site.paths()
    assert "/stale/manifest.json" in first
    assert daemon.ctl("check", "hello").returncode == 0
    second = site.paths()[len(first):]
    assert second and all(p.startswith("/good/") for p in second), second
    metrics = daemon.ctl("metrics", check=True).stdout
    for origin, served, failed, refused, in_a_row in ((down, 0, 1, 0, 1),
                                                      (stale, 0, 0, 1, 1),
                                                      (good, 2, 0, 0, 0)):
        where = f'app="hello",origin="{origin}"'
        assert f'updaterd_origin_answers_total{{{where},result="served"}} {served}' in metrics
        assert f'updaterd_origin_answers_total{{{where},result="failed"}} {failed}' in metrics
        assert f'updaterd_origin_answers_total{{{where},result="refused"}} {refused}' \
            in metrics
        assert f"updaterd_origin_failures_in_a_row{{{where}}} {in_a_row}" in metrics


@pytest.mark.parametrize("fmt", ["zip", "tar.gz"])
def test_an_artifact_that_does_not_verify_on_one_origin_comes_from_the_next(
        host: Host, nginx: Nginx, tmp_path: Path, fmt: str) -> None:
    """The manifest is taken from the first origin, whose copy of the artifact is corrupt (the
    same size, one byte changed): refused by its digest, fetched whole from the next (a zip
    through the cache; a tar.gz streams, is refused at its last byte, then goes through the
    cache from the other origin)."""
    site = Site(nginx, tmp_path)
    feed = Feed(folder=site.folder("good"), work=tmp_path / "work")
    art = feed.release("1.0.0", fmt=fmt)
    site.mirror(feed, "bad")
    corrupt = site.folder("bad") / art.name
    data = bytearray(corrupt.read_bytes())
    data[len(data) // 2] ^= 0xFF
    corrupt.write_bytes(bytes(data))
    bad, good = site.url("bad/manifest.json"), site.url("good/manifest.json")
    host.configure(source="manifest", url=bad, mirrors=[good], public_keys=[feed.pub],
                   allow_insecure=True)
    r = once(host)
    assert r.returncode == 0, r.stderr
    assert host.current() == "1.0.0"
    if fmt == "zip":
        assert f"origin {bad} failed ({art.name})" in r.stderr
    else:
        assert f"the bytes of 1.0.0 streamed from {site.url('bad/' + art.name)} did not " \
            "verify" in r.stderr
    asked = site.paths()
    assert f"/bad/{art.name}" in asked and f"/good/{art.name}" in asked
    assert "/good/manifest.json" not in asked, "the feed itself came from the first origin"


def test_every_origin_failing_names_each_and_installs_nothing(
        host: Host, nginx: Nginx, tmp_path: Path) -> None:
    """The origin asked last is asked with the [limits] retries; here it answers (with a feed
    signed by another key), so nothing is retried at all."""
    site = Site(nginx, tmp_path)
    feed = Feed(folder=site.folder("good"), work=tmp_path / "work")
    feed.release("1.0.0")
    other = Feed(folder=site.folder("other"), work=tmp_path / "other-work")
    other.release("1.0.0")
    down = f"http://127.0.0.1:{free_port()}/feed/manifest.json"
    signed_by_another = site.url("other/manifest.json")
    host.configure(source="manifest", url=down, mirrors=[signed_by_another],
                   public_keys=[feed.pub], allow_insecure=True)
    r = once(host)
    assert r.returncode == 1
    assert f"no origin answered: {down}: " in r.stderr
    assert "retrying in" not in r.stderr
    assert f"; {signed_by_another}: manifest signature refused" in r.stderr
    assert host.current() is None


def test_feed_check_reads_each_origin_and_names_the_stale_one(
        nginx: Nginx, tmp_path: Path) -> None:
    site = Site(nginx, tmp_path)
    feed = Feed(folder=site.folder("good"), work=tmp_path / "work")
    feed.release("1.0.0")
    site.mirror(feed, "stale")
    feed.release("1.1.0")
    site.mirror(feed, "copy")
    good, stale, copy = (site.url(f"{n}/manifest.json") for n in ("good", "stale", "copy"))
    r = run_updaterd("feed", "check", good, copy, "--public-key", feed.pub)
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("serial 2, 2 releases") == 2 and r.stdout.endswith("0 problems\n")
    r = run_updaterd("feed", "check", good, stale, copy, "--public-key", feed.pub)
    assert r.returncode == 1
    assert r.stderr == (f"{stale}: stale: serial 1, where {good} has 2; hosts that saw 2 pass "
                        "this origin over\n")
    assert f"{stale}:\nhello: serial 1, 1 releases" in r.stdout
    assert r.stdout.endswith("1 problem\n")


def test_the_origin_asked_last_is_asked_with_the_retries(host: Host, nginx: Nginx,
                                                         tmp_path: Path) -> None:
    site = Site(nginx, tmp_path)
    feed = Feed(folder=site.folder("good"), work=tmp_path / "work")
    feed.release("1.0.0")
    # in the order they sort: the first is no later than the last by any comparison
    down = sorted(f"http://127.0.0.1:{free_port()}/feed/manifest.json" for _ in range(2))
    host.configure(source="manifest", url=down[0], mirrors=[down[1]], public_keys=[feed.pub],
                   allow_insecure=True)
    r = once(host)
    assert r.returncode == 1
    assert re.search(rf"no origin answered: {re.escape(down[0])}: {re.escape(down[0])}: "
                     r"ConnectError: [^;]*\(gave up after 1 attempt\); "
                     rf"{re.escape(down[1])}: {re.escape(down[1])}: ConnectError: [^;]*"
                     r"\(gave up after 4 attempts\)", r.stderr), r.stderr
    assert r.stderr.count("retrying in") == 3


def test_j180_a_yank_reaches_a_host_between_checks_when_its_origin_is_down(
        host: Host, nginx: Nginx, tmp_path: Path, daemon: Daemon) -> None:
    """The look between checks asks the origin the host took its feed from; that origin gone,
    it asks the others (whole, by digest), so one origin down does not keep a yank or a
    recall from a host until its check hours away."""
    site = Site(nginx, tmp_path)
    feed = Feed(folder=site.folder("good"), work=tmp_path / "work")
    feed.release("1.0.0")
    site.mirror(feed, "first")
    first, good = site.url("first/manifest.json"), site.url("good/manifest.json")
    host.configure(source="manifest", url=first, mirrors=[good], public_keys=[feed.pub],
                   allow_insecure=True, check_interval="4h", jitter="1h", watch_interval="1s")
    daemon.start()
    daemon.ctl("update", "hello", check=True)
    assert host.current() == "1.0.0"
    shutil.rmtree(site.folder("first"))  # the origin the host took the feed from: 404 now
    r = run_updaterd("feed", "yank", "--feed", feed.folder, "--key", feed.key, "1.0.0",
                     "--why", "corrupts data")
    assert r.returncode == 0, r.stderr
    daemon.wait_for(lambda: daemon.app()["yanked"] == "corrupts data", timeout=15,
                    what="the yank in status, through the second origin")
    assert "/good/manifest.json" in site.paths()


def test_feed_check_names_a_mirror_whose_rollout_json_is_behind(nginx: Nginx,
                                                                tmp_path: Path) -> None:
    """The 3 a.m. path with mirrors: a recall signed where the feed is published reaches the
    hosts that ask a mirror only once the mirror has it; feed check names a mirror behind."""
    from tests.test_watch_e2e import guarded_1_1_0, recall, rollout_key

    site = Site(nginx, tmp_path)
    feed = Feed(folder=site.folder("good"), work=tmp_path / "work")
    secret, key = rollout_key(feed)
    feed.release("1.0.0")
    feed.release("1.1.0", rollout_keys=[secret.public.to_base64()])
    guarded_1_1_0(feed, secret)
    site.mirror(feed, "mirror")
    good, behind = site.url("good/manifest.json"), site.url("mirror/manifest.json")
    r = run_updaterd("feed", "check", good, behind, "--public-key", feed.pub)
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("rollout.json: serial 1, expires") == 2
    recall(feed, key, "1.1.0", "corrupts data")
    r = run_updaterd("feed", "check", good, behind, "--public-key", feed.pub)
    assert r.returncode == 1
    assert r.stderr == (f"{behind}: rollout.json serial 1, where {good} has 2: a recall, halt "
                        "or share signed since reaches the hosts that ask this origin only "
                        "when it is synced\n")
    (site.folder("good") / "rollout.json.minisig").write_text(
        (site.folder("mirror") / "rollout.json.minisig").read_text())
    r = run_updaterd("feed", "check", good, "--public-key", feed.pub)
    assert r.returncode == 1
    assert r.stderr.startswith(f"{site.url('good/rollout.json')}: rollout.json: not signed "
                               "by a rollout key the manifest names: signature by key ")
    assert r.stderr.endswith("does not verify (hosts move no release by it)\n")
