"""Row 180 on the real daemon, nginx serving the feed and the publisher's own commands: with
`check_interval` at its default (4h), a recall moves a host back (both install modes) and a yank
shows in `status` within seconds of being signed, because the host looks at its feed every
`watch_interval` with conditional requests; a new release found that way waits for a check
drawn within `jitter`. Each test has its control: the same host with the look off stays."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.conftest import Daemon, Host, Nginx
from tests.helpers import Feed, app_script, run_updaterd
from tests.test_inplace import Tool
from updaterd.release import controller
from updaterd.trust import minisign

LOOK = "1s"  # the tests' watch_interval; the default is 2m (docs/bad-release.md)


def rollout_key(feed: Feed) -> tuple[minisign.SecretKey, Path]:
    secret = minisign.SecretKey.generate()
    path = feed.work / "rollout.key"
    path.write_text(secret.to_file())
    return secret, path


def recall(feed: Feed, key: Path, version: str, why: str) -> float:
    """`updaterd rollout recall`, as the on-call runs it; returns when it was signed."""
    r = run_updaterd("rollout", "recall", "--feed", feed.folder, "--key", key, version,
                     "--why", why)
    assert r.returncode == 0, r.stderr
    return time.monotonic()


def guarded_1_1_0(feed: Feed, secret: minisign.SecretKey) -> None:
    """1.1.0 names the rollout key and its rollout is at 100%."""
    controller.set_state(feed.folder, secret, "1.1.0", "active", "", share=100)


def on_1_1_0(host: Host, nginx: Nginx, feed: Feed, daemon: Daemon,
             watch: str) -> tuple[minisign.SecretKey, Path]:
    """A releases-mode host at the default check interval that ran 1.0.0, then 1.1.0."""
    secret, key = rollout_key(feed)
    feed.release("1.0.0")
    host.follow(nginx, feed, check_interval="4h", jitter="1h", watch_interval=watch)
    daemon.start()
    daemon.ctl("update", "hello", check=True)
    feed.release("1.1.0", rollout_keys=[secret.public.to_base64()])
    guarded_1_1_0(feed, secret)
    daemon.ctl("update", "hello", check=True)
    assert host.current() == "1.1.0"
    return secret, key


def test_j180_a_recall_reaches_a_host_in_seconds_whatever_its_check_interval(
        host: Host, nginx: Nginx, served_feed: Feed, daemon: Daemon) -> None:
    _, key = on_1_1_0(host, nginx, served_feed, daemon, LOOK)
    signed = recall(served_feed, key, "1.1.0", "corrupts data")
    daemon.wait_for(lambda: host.current() == "1.0.0", timeout=15, what="the recall")
    took = time.monotonic() - signed
    assert took < 10, took
    text = daemon.log.read_text()
    assert "rollout.json changed since the last check; checking now" in text
    assert "1.1.0 is recalled by its rollout: corrupts data; going back to 1.0.0" in text
    assert host.state()["blocked"] == ["1.1.0"]
    print(f"recall signed -> host on 1.0.0: {took:.2f} s (watch_interval {LOOK})")


def test_j180_back_from_a_recall_a_host_takes_the_fix_within_its_jitter(
        host: Host, nginx: Nginx, served_feed: Feed, daemon: Daemon) -> None:
    """The on-call recalls 1.1.0 and publishes 1.1.1 at once; one look finds both. The host
    goes back first (a recall never waits), then takes the fix at a check drawn within jitter;
    it used to wait for the next check, hours away."""
    _, key = on_1_1_0(host, nginx, served_feed, daemon, "3s")
    host.follow(nginx, served_feed, check_interval="4h", jitter="2s", watch_interval="3s")
    daemon.ctl("reload", check=True)
    recall(served_feed, key, "1.1.0", "corrupts data")
    served_feed.release("1.1.1")
    daemon.wait_for(lambda: "installed 1.1.1 (was 1.0.0)" in daemon.log.read_text(),
                    timeout=20, what="the fix")  # the line comes after the switch: wait for it
    text = daemon.log.read_text()
    assert text.index("going back to 1.0.0") < text.index("installed 1.1.1 (was 1.0.0)")


def test_j180_without_the_look_the_same_host_waits_for_its_check(
        host: Host, nginx: Nginx, served_feed: Feed, daemon: Daemon) -> None:
    """The control: `watch_interval = "0"`, and the recall waits for the check, hours away."""
    _, key = on_1_1_0(host, nginx, served_feed, daemon, "0")
    recall(served_feed, key, "1.1.0", "corrupts data")
    time.sleep(4)
    assert host.current() == "1.1.0"


def test_j180_looks_cost_conditional_requests_answered_304(
        host: Host, nginx: Nginx, served_feed: Feed, daemon: Daemon) -> None:
    on_1_1_0(host, nginx, served_feed, daemon, LOOK)
    mine = f"/{served_feed.folder.name}/"
    seen = len(nginx.requests())
    time.sleep(5)
    asked = [r for r in nginx.requests()[seen:] if r["uri"].startswith(mine)]
    names = {r["uri"].rsplit("/", 1)[-1] for r in asked}
    assert names <= {"manifest.json", "rollout.json"}, names  # no signature, no artifact
    statuses = [r["status"] for r in asked]
    manifest = [r for r in asked if r["uri"].endswith("/manifest.json")]
    assert len(manifest) >= 3 and all(r["inm"] for r in manifest)  # conditional, each one
    # every answer but the first rollout.json after the start (read whole, once) is a 304
    assert statuses.count(304) >= len(statuses) - 1, statuses
    assert sum(r["sent"] for r in asked) / len(asked) < 400  # bytes a look costs, headers in


def test_j180_a_yank_shows_at_once_and_a_new_release_waits_for_its_jitter(
        host: Host, nginx: Nginx, served_feed: Feed, daemon: Daemon) -> None:
    on_1_1_0(host, nginx, served_feed, daemon, LOOK)
    r = run_updaterd("feed", "yank", "--feed", served_feed.folder, "--key", served_feed.key,
                     "1.1.0", "--why", "corrupts data")
    assert r.returncode == 0, r.stderr
    daemon.wait_for(lambda: daemon.app()["yanked"] == "corrupts data", timeout=10,
                    what="the yank in status")
    assert host.current() == "1.1.0"  # a yank withdraws; it moves no host (a recall does)
    served_feed.release("1.2.0")
    daemon.wait_for(lambda: daemon.app()["available"] == "1.2.0", timeout=10,
                    what="1.2.0 found by a look")
    assert "1.2.0 waits for a check in" in daemon.log.read_text()
    time.sleep(3)
    assert host.current() == "1.1.0"  # within jitter (1h here), not at once: no herd


def test_j180_a_halt_takes_a_release_off_a_host_that_had_not_installed_it_yet(
        host: Host, nginx: Nginx, served_feed: Feed, daemon: Daemon) -> None:
    """auto_update off: 1.1.0 was found and waits for `updaterctl update`; the halt is seen
    within seconds, and `update` then installs nothing."""
    secret, key = rollout_key(served_feed)
    served_feed.release("1.0.0")
    host.follow(nginx, served_feed, check_interval="4h", jitter="1h", watch_interval=LOOK,
                auto_update=False)
    daemon.start()
    daemon.ctl("update", "hello", check=True)
    served_feed.release("1.1.0", rollout_keys=[secret.public.to_base64()])
    guarded_1_1_0(served_feed, secret)
    daemon.ctl("check", "hello", check=True)
    assert daemon.app()["available"] == "1.1.0"
    r = run_updaterd("rollout", "halt", "--feed", served_feed.folder, "--key", key, "1.1.0",
                     "--why", "error rate")
    assert r.returncode == 0, r.stderr
    daemon.wait_for(lambda: daemon.app()["available"] is None, timeout=10, what="the halt")
    assert any("rollout halted at 100%: error rate" in n for n in daemon.app()["notes"])
    daemon.ctl("update", "hello", check=True)
    assert host.current() == "1.0.0"


@pytest.fixture
def tool(host: Host, nginx: Nginx, served_feed: Feed) -> Tool:
    return Tool(host, nginx, served_feed)


def test_j180_a_recall_reaches_an_inplace_app_in_seconds(tool: Tool, daemon: Daemon) -> None:
    secret, key = rollout_key(tool.feed)
    tool.publish("1.0.0")
    tool.configure(check_interval="4h", jitter="1h", watch_interval=LOOK)
    daemon.start()
    daemon.ctl("update", "hello", check=True)
    art = tool.feed.work / "tool-1.1.0-linux-x86_64"
    art.write_bytes(app_script("1.1.0"))
    tool.feed.publish("1.1.0", [art], rollout_keys=[secret.public.to_base64()])
    guarded_1_1_0(tool.feed, secret)
    daemon.ctl("update", "hello", check=True)
    assert tool.says() == "hello 1.1.0"
    signed = recall(tool.feed, key, "1.1.0", "corrupts data")
    daemon.wait_for(lambda: tool.says() == "hello 1.0.0", timeout=15, what="the recall")
    assert time.monotonic() - signed < 10
    assert tool.host.state()["blocked"] == ["1.1.0"] and not tool.leftovers()
