"""The 3 a.m. path on a real fleet (J177-J180): 60 real daemons at the default
`check_interval` (4h) and `watch_interval` (2m), a third of them `inplace` apps, nginx serving
the feed. A release that passes its health checks but is bad reaches half the fleet through
the hosts' own looks; the on-call recalls it, yanks it and publishes the fix with the
publisher's commands. Measured: the time until no host runs the bad release (goal: 3 minutes
or less) and until every host runs the fix. Before the watch, the recall waited for each
host's next check: up to 4 hours.

Run by `make test-fleet` (UPDATERD_TEST_FLEET=1); no Prometheus here (the recall is by hand).
"""

from __future__ import annotations

import os
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.fleet.fleet import FleetHost, Hosts, Recorder, build, guarded_feed, listen_ports
from tests.helpers import Feed, run_updaterd
from tests.servers.nginx import Nginx, running_nginx
from updaterd import versions
from updaterd.release import controller
from updaterd.trust import minisign

pytestmark = pytest.mark.skipif(os.environ.get("UPDATERD_TEST_FLEET") != "1",
                                reason="the fleet suite runs with `make test-fleet`")

HOSTS = int(os.environ.get("UPDATERD_FLEET_HOSTS", "60"))
JITTER = 20.0  # seconds: short, so that the scenario takes minutes; the default is 10m
WATCH = 120.0  # the default watch_interval
GOAL = 180.0  # seconds from the recall to no host on the bad release


@dataclass
class Night(Hosts):
    hosts: list[FleetHost]
    nginx: Nginx
    feed: Feed
    rollout_key: Path
    secret: minisign.SecretKey
    recorder: Recorder

    def cli(self, *args: str | Path) -> str:
        r = run_updaterd(*args)
        assert r.returncode == 0, r.stderr
        return r.stdout


@pytest.fixture(scope="module")
def night(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Night]:
    base = tmp_path_factory.mktemp("night")
    began = time.time()
    with running_nginx(base / "nginx") as nginx:
        g = guarded_feed(base, nginx)
        feed, secret, rollout_key, url = g.feed, g.secret, g.rollout_key, g.url
        hosts = [FleetHost(base / f"h{i:02d}", f"night-host-{i:02d}", port,
                           install="inplace" if i % 3 == 0 else "releases",
                           schedule={"jitter": f"{JITTER:g}s"})  # interval, watch: defaults
                 for i, port in enumerate(listen_ports(HOSTS))]
        for h in hosts:
            h.configure(url, feed.pub)
        recorder = Recorder(hosts, [nginx.pid])
        try:
            for h in hosts:
                h.start()
            with recorder.running():
                n = Night(hosts, nginx, feed, rollout_key, secret, recorder)
                n.wait(lambda: len(n.on("1.0.0")) == HOSTS, 120, "every host on 1.0.0")
                recorder.mark(f"{HOSTS} hosts on 1.0.0")
                print(f"\nnight: {HOSTS} daemons on 1.0.0 in {time.time() - began:.0f}s")
                yield n
        finally:
            for h in hosts:
                h.stop()
            timeline = os.environ.get("UPDATERD_FLEET_TIMELINE")
            recorder.save(Path(timeline).with_name("three-am-timeline.json") if timeline
                          else base / "timeline.json")


def test_a_bad_release_leaves_every_host_within_3_minutes_at_the_default_intervals(
        night: Night) -> None:
    n = night
    n.feed.publish("1.1.0", [build(n.feed.work, "1.1.0", "good")],
                   rollout_keys=[n.secret.public.to_base64()])
    controller.set_state(n.feed.folder, n.secret, "1.1.0", "active", "", share=50)
    published = time.monotonic()
    n.recorder.mark("published 1.1.0 (passes its checks), rollout at 50%")
    half = [h for h in n.hosts if versions.rollout_bucket(h.host_id, "hello", "1.1.0") < 50]
    took = n.wait(lambda: len(n.on("1.1.0")) == len(half), WATCH + JITTER + 60,
                  "the hosts of the 50% share on 1.1.0")
    modes = Counter(h.install for h in n.on("1.1.0"))
    print(f"\nnight: 1.1.0 reached {len(half)} hosts ({dict(modes)}) {took:.0f}s after it "
          f"was signed, through their looks (watch 2m + jitter {JITTER:g}s)")
    assert modes["inplace"] >= 1 and modes["releases"] >= 1, modes
    assert time.monotonic() - published >= 0  # no host took it before it was published
    seen = len(n.nginx.requests())

    # 3 a.m.: 1.1.0 corrupts data. Recall, yank, publish the fix (docs/bad-release.md)
    n.cli("rollout", "recall", "--feed", n.feed.folder, "--key", n.rollout_key, "1.1.0",
          "--why", "corrupts data on save; 1.1.1 fixes it")
    recalled = time.monotonic()
    n.recorder.mark("1.1.0 recalled")
    n.cli("feed", "yank", "--feed", n.feed.folder, "--key", n.feed.key, "1.1.0", "--why",
          "corrupts data on save; 1.1.1 fixes it")
    n.feed.publish("1.1.1", [build(n.feed.work, "1.1.1", "good")])
    n.recorder.mark("1.1.0 yanked, 1.1.1 published")
    clean = n.wait(lambda: not n.on("1.1.0"), GOAL + 60, "no host on 1.1.0")
    n.recorder.mark("no host on 1.1.0")
    fixed = n.wait(lambda: len(n.on("1.1.1")) == HOSTS, WATCH + JITTER + 60,
                   "every host on 1.1.1") + clean
    n.recorder.mark(f"{HOSTS} hosts on 1.1.1")
    asked = [r for r in n.nginx.requests()[seen:] if r["uri"].startswith("/hello/")]
    small = [r for r in asked if r["uri"].endswith(("/manifest.json", "/rollout.json"))]
    share_304 = sum(r["status"] == 304 for r in small) / max(len(small), 1)
    print(f"night: recall signed -> no host on 1.1.0 in {clean:.0f}s (goal {GOAL:g}s); "
          f"every host on the fix 1.1.1 {fixed:.0f}s after the recall; nginx: "
          f"{len(asked)} requests, {share_304:.0%} of manifest/rollout.json answered 304")
    figures = n.recorder.figures
    figures["3 a.m. (check_interval 4h, watch_interval 2m, jitter 20 s; 1/3 in-place): "
            "bad release reached its 50% share after publish"] = f"{took:.0f} s"
    figures["3 a.m.: recall signed to no host on the bad release"] = \
        f"{clean:.0f} s (goal {GOAL:g} s; before the watch: the next check, up to 4 h)"
    figures["3 a.m.: recall signed to every host on the fix"] = f"{fixed:.0f} s"
    figures["3 a.m.: feed requests meanwhile; manifest/rollout.json answered 304"] = \
        f"{len(asked)}; {share_304:.0%}"
    assert clean <= GOAL
    for h in half:  # both install modes went back by the recall, never by a failed check
        st = h.state()
        assert "1.1.0" in st.get("rollbacks_from", {}), h.host_id
        assert "1.1.0" not in st.get("failed_checks", {}), h.host_id
        assert "1.1.0 is recalled by its rollout" in h.log(), h.host_id
    assert recalled - published > 0


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-s"]))
