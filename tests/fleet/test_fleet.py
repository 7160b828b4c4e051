"""Guarded rollout on a real fleet (docs/rollout.md): 60 real daemons, nginx serving
the feed, Debian's Prometheus scraping every daemon each second, and the real `updaterd rollout`
controller. The scenarios run in order on the same fleet, each with a release of its own:

1. a good release reaches 100% in exactly steps x soak, although the controller is killed
   with SIGKILL in the middle of a step (it picks up from rollout.json);
2. a release whose health check fails on every host reaches at most 3 hosts, and the halt is
   signed within 5 s of Prometheus seeing the first failure;
3. with `on_fail = "recall"`, no host is left on the recalled release within two check
   intervals of the recall;
4. Prometheus stopped mid-rollout: no widening; a forged and an expired rollout.json: ignored
   and logged; nginx's log shows only static GETs.

Run by `make test-fleet` (UPDATERD_TEST_FLEET=1); the timeline goes to UPDATERD_FLEET_TIMELINE
(bench/fleet_plot.py draws it).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.fleet.fleet import (
    CHECK_INTERVAL,
    PROMETHEUS,
    FleetHost,
    Hosts,
    Prometheus,
    Recorder,
    build,
    guarded_feed,
    listen_ports,
)
from tests.helpers import BIN, Feed
from tests.servers.nginx import Nginx, running_nginx
from updaterd import versions
from updaterd.release import controller
from updaterd.trust import feed as feed_format
from updaterd.trust import minisign, rollout
from updaterd.trust.feed import RolloutDoc, RolloutEntry

pytestmark = pytest.mark.skipif(os.environ.get("UPDATERD_TEST_FLEET") != "1",
                                reason="the fleet suite runs with `make test-fleet`")

HOSTS = int(os.environ.get("UPDATERD_FLEET_HOSTS", "60"))
GATES = """
[[gate]]
name = "failed checks"
query = 'sum(updaterd_release_failed_checks_total{app="$app",version="$version"}) or vector(0)'
max = 0
"""


@dataclass
class Fleet(Hosts):
    hosts: list[FleetHost]
    nginx: Nginx
    feed: Feed
    prometheus: Prometheus
    rollout_key: Path
    secret: minisign.SecretKey
    recorder: Recorder
    work: Path

    def publish(self, version: str, mode: str) -> None:
        self.feed.publish(version, [build(self.feed.work, version, mode)],
                          rollout_keys=[self.secret.public.to_base64()])
        self.recorder.mark(f"published {version} ({mode})")

    def entry(self, version: str) -> RolloutEntry | None:
        doc = controller.read(self.feed.folder)
        return doc.releases.get(version) if doc is not None else None

    def plan(self, version: str, steps: str, soak: str, on_fail: str = "halt") -> Path:
        path = self.work / f"plan-{version}.toml"
        path.write_text(f'version = "{version}"\nsteps = {steps}\nsoak = "{soak}"\n'
                        f'min_hosts = 3\ninterval = "1s"\non_fail = "{on_fail}"\n{GATES}')
        return path

    def controller(self, plan: Path) -> subprocess.Popen[str]:
        out = open(self.work / f"{plan.stem}.out", "a")  # noqa: SIM115 - the process keeps it
        return subprocess.Popen([str(BIN / "updaterd"), "rollout", "run", "--feed",
                                 str(self.feed.folder), "--key", str(self.rollout_key),
                                 "--plan", str(plan), "--prometheus", self.prometheus.url],
                                stdout=out, stderr=subprocess.STDOUT, text=True)

    def said(self, plan: Path) -> str:
        return (self.work / f"{plan.stem}.out").read_text()


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    if not PROMETHEUS.exists():
        pytest.fail("Prometheus is not unpacked: run `make test-fleet` (scripts/prometheus.sh)")
    base = tmp_path_factory.mktemp("fleet")
    began = time.time()
    with running_nginx(base / "nginx") as nginx:
        g = guarded_feed(base, nginx)
        feed, secret, rollout_key, url = g.feed, g.secret, g.rollout_key, g.url
        hosts = [FleetHost(base / f"h{i:02d}", f"fleet-host-{i:02d}", port)
                 for i, port in enumerate(listen_ports(HOSTS))]
        for h in hosts:
            h.configure(url, feed.pub)
        prom = Prometheus(base / "prometheus", [h.port for h in hosts])
        recorder = Recorder(hosts, [nginx.pid])
        try:
            prom.start()
            recorder.pids.append(prom.proc.pid)  # type: ignore[union-attr]
            for h in hosts:
                h.start()
            with recorder.running():
                f = Fleet(hosts, nginx, feed, prom, rollout_key, secret, recorder, base)
                took = f.wait(lambda: len(f.on("1.0.0")) == HOSTS, 180, "every host on 1.0.0")
                recorder.mark(f"{HOSTS} hosts on 1.0.0")
                print(f"\nfleet: {HOSTS} daemons up and on 1.0.0 in {time.time() - began:.0f}s "
                      f"(installs {took:.0f}s)")
                yield f
        finally:
            for h in hosts:
                h.stop()
            prom.stop()
            timeline = Path(os.environ.get("UPDATERD_FLEET_TIMELINE", base / "timeline.json"))
            recorder.figures["whole run; peak memory (daemons, Prometheus, nginx)"] = \
                f"{time.time() - began:.0f} s; {recorder.peak_kib / 1024:.0f} MiB"
            recorder.save(timeline)
            print(f"\nfleet: whole run {time.time() - began:.0f}s, peak memory "
                  f"{recorder.peak_kib / 1024:.0f} MiB (daemons, Prometheus, nginx); "
                  f"timeline in {timeline}")


def test_a_good_release_reaches_every_host_in_steps_times_soak_through_a_kill(
        fleet: Fleet) -> None:
    fleet.publish("1.1.0", "good")
    plan = fleet.plan("1.1.0", "[10, 50, 100]", "20s")
    ctl = fleet.controller(plan)
    fleet.wait(lambda: fleet.entry("1.1.0") is not None, 60, "step 1")
    began = fleet.entry("1.1.0").since.timestamp()  # type: ignore[union-attr]
    fleet.wait(lambda: (e := fleet.entry("1.1.0")) is not None and e.share >= 50, 60,
               "step 2")
    time.sleep(5)
    ctl.send_signal(signal.SIGKILL)  # mid-step: nothing but rollout.json survives it
    ctl.wait()
    fleet.recorder.mark("controller killed (SIGKILL)")
    ctl = fleet.controller(plan)
    assert ctl.wait(120) == 0, fleet.said(plan)
    took = time.time() - began
    fleet.recorder.mark("1.1.0 complete")
    said = fleet.said(plan)
    print(f"\nfleet: good release 1.1.0 complete {took:.1f}s after its first share was signed "
          f"(3 steps x 20s soak = 60s)")
    fleet.recorder.figures["good release, 3 steps x 20 s soak, controller killed (SIGKILL) in "
                           "step 2: first share to complete"] = f"{took:.1f} s (60 s planned)"
    assert "picking up at" in said and "halted" not in said, said
    assert 60 <= took <= 62, f"steps x soak is 60s; took {took:.1f}s\n{said}"
    assert len(fleet.on("1.1.0")) == HOSTS, "every host runs it when the last soak ends"


def test_a_release_failing_everywhere_reaches_at_most_3_hosts_and_halts_within_5s(
        fleet: Fleet) -> None:
    fleet.publish("1.2.0", "bad")
    plan = fleet.plan("1.2.0", "[1, 5, 25, 100]", "30s")
    ctl = fleet.controller(plan)
    assert ctl.wait(120) == 1, fleet.said(plan)
    entry = fleet.entry("1.2.0")
    assert entry is not None and entry.state == "halted", fleet.said(plan)
    fleet.recorder.mark("1.2.0 halted", entry.since.timestamp())
    time.sleep(3 * CHECK_INTERVAL)  # nobody takes it after the halt
    reached = [h for h in fleet.hosts if "1.2.0" in h.state().get("rollbacks_from", {})
               or h.current() == "1.2.0"]
    samples = fleet.prometheus.query(
        'updaterd_release_failed_checks_total{app="hello",version="1.2.0"}[10m]')
    first_seen = min(float(v[0]) for s in samples for v in s["values"])
    latency = entry.since.timestamp() - first_seen
    print(f"\nfleet: bad release 1.2.0 reached {len(reached)} of {HOSTS} hosts at share "
          f"{entry.share}%; halt signed {latency:.2f}s after Prometheus first saw a failure")
    fleet.recorder.figures["bad release (health check fails everywhere): hosts reached"] = \
        f"{len(reached)} of {HOSTS} (share {entry.share}%)"
    fleet.recorder.figures["bad release: halt signed after Prometheus first saw a failure"] = \
        f"{latency:.2f} s"
    assert 1 <= len(reached) <= 3, [h.host_id for h in reached]
    assert latency <= 5.0
    assert all(h.current() == "1.1.0" for h in fleet.hosts)


def test_a_recall_leaves_no_host_on_the_release_within_two_check_intervals(
        fleet: Fleet) -> None:
    places = sorted(fleet.hosts, key=lambda h: versions.rollout_bucket(h.host_id, "hello",
                                                                       "1.3.0"))
    (places[0].base / "flaky").touch()  # the first host of the first step fails, slowly
    fleet.publish("1.3.0", "flaky")
    plan = fleet.plan("1.3.0", "[1, 50, 100]", "60s", on_fail="recall")
    ctl = fleet.controller(plan)
    most = 0
    while ctl.poll() is None:
        most = max(most, len(fleet.on("1.3.0")))
        time.sleep(0.1)
    assert ctl.returncode == 1, fleet.said(plan)
    entry = fleet.entry("1.3.0")
    assert entry is not None and entry.state == "recalled"
    fleet.recorder.mark("1.3.0 recalled", entry.since.timestamp())
    signed = entry.since.timestamp() - fleet.recorder.began
    # hosts on it in the last sample before the recall was signed (twice a second)
    still = next((c.get("1.3.0", 0) for t, c in reversed(fleet.recorder.samples)
                  if t < signed), 0)
    gone = fleet.wait(lambda: not fleet.on("1.3.0"), 4 * CHECK_INTERVAL,
                      "every host off 1.3.0")
    after = time.time() - entry.since.timestamp()
    print(f"\nfleet: recall of 1.3.0: {most} hosts ran it, {still} at the recall; none left "
          f"{after:.1f}s after it was signed (two check intervals: {2 * CHECK_INTERVAL:g}s)")
    fleet.recorder.figures["recall: hosts on the release at the recall; none left after"] = \
        f"{still}; {after:.1f} s (two check intervals: {2 * CHECK_INTERVAL:g} s)"
    assert still >= 1, "a host ran the release when it was recalled (else nothing is proved)"
    assert after <= 2 * CHECK_INTERVAL + 1.0, gone  # + the 1s jitter of a check
    back = {h.current() for h in fleet.hosts}
    assert back == {"1.1.0"}, back
    recalled = [h for h in fleet.hosts if "1.3.0" in h.state().get("rollbacks_from", {})
                and "1.3.0" not in h.state().get("failed_checks", {})]  # not the flaky one
    assert recalled and all("1.3.0 is recalled by its rollout: gate 'failed checks'" in h.log()
                            for h in recalled)


def test_prometheus_stopped_forged_or_expired_rollout_json_never_widen(fleet: Fleet) -> None:
    fleet.publish("1.4.0", "good")
    plan = fleet.plan("1.4.0", "[10, 50, 100]", "10s")
    ctl = fleet.controller(plan)
    fleet.wait(lambda: fleet.entry("1.4.0") is not None, 60, "step 1")
    first = fleet.entry("1.4.0")
    assert first is not None
    fleet.wait(lambda: len(fleet.on("1.4.0")) >= 3, 30, "the first step's hosts")
    fleet.prometheus.stop()
    fleet.recorder.mark("Prometheus stopped")
    time.sleep(25)  # two and a half soaks
    held = fleet.entry("1.4.0")
    assert held is not None and held.share == first.share, "widened without Prometheus"
    assert "holding (no widening): Prometheus" in fleet.said(plan)
    ctl.send_signal(signal.SIGTERM)
    ctl.wait(30)
    on_before = {h.host_id for h in fleet.on("1.4.0")}
    # a forged rollout.json (another key) and an expired one (the right key) offering 100%
    forger = minisign.SecretKey.generate()
    for key, expires, text in ((forger, timedelta(hours=1), "not signed by a rollout key"),
                               (fleet.secret, timedelta(seconds=-5), "expired at")):
        doc = controller.read(fleet.feed.folder)
        assert doc is not None
        wide = RolloutDoc(schema=1, app="hello", serial=doc.serial + 1,
                          expires=datetime.now(UTC) + expires,
                          releases={**doc.releases, "1.4.0": RolloutEntry(
                              share=100, state="active", since=datetime.now(UTC))})
        raw = feed_format.encode(wide)
        (fleet.feed.folder / rollout.SIGNATURE).write_text(key.sign(raw, "forged"))
        (fleet.feed.folder / rollout.DOCUMENT).write_bytes(raw)
        fleet.recorder.mark(f"rollout.json {'forged' if key is forger else 'expired'}")
        time.sleep(3 * CHECK_INTERVAL)
        assert {h.host_id for h in fleet.on("1.4.0")} == on_before, "a host moved"
        assert all(text in h.log() for h in fleet.hosts), text
    requests = fleet.nginx.requests()
    methods = {r["method"] for r in requests}
    statuses = {r["status"] for r in requests}
    print(f"\nfleet: nginx served {len(requests)} requests: methods {sorted(methods)}, "
          f"statuses {sorted(statuses)}")
    fleet.recorder.figures["Prometheus stopped for 25 s (2.5 soaks), then a forged and an "
                           "expired rollout.json offering 100%"] = "share held; no host moved"
    fleet.recorder.figures["nginx: requests, methods"] = \
        f"{len(requests)}, {' '.join(sorted(methods))}"
    assert methods == {"GET"}, methods
    assert statuses <= {200, 206, 304, 404}, statuses
    assert all(r["uri"].startswith("/hello/") for r in requests)


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-s"]))
