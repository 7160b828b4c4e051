"""Guarded rollout, the host's side (docs/rollout.md), in this process on a FeedSimulator: a
release that names a rollout key reaches a host only as a signed `rollout.json` allows; a halt
keeps new hosts off it, a recall takes hosts back. The refusals (forged, expired, replayed,
missing: never widened, never moved) are catalogue rows I160-I165 (tests/security)."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import pytest
import trio

from tests.simulator import FeedSimulator, SimHost
from updaterd import versions
from updaterd.trust import feed, minisign, rollout
from updaterd.trust.feed import RolloutDoc, RolloutEntry

T = TypeVar("T")


def run(call: Callable[[], Awaitable[T]]) -> T:
    return trio.run(call)


class Guarded:
    """A simulated feed whose releases a rollout key steers, and its rollout.json."""

    def __init__(self, sim: FeedSimulator) -> None:
        self.sim = sim
        self.key = minisign.SecretKey.generate()
        self.serial = 0

    def release(self, version: str, *, healthy: bool = True, rollout_share: int = 100,
                key: minisign.SecretKey | None = None) -> None:
        """Publish `version` naming the rollout key (`publish --rollout-key`)."""
        self.sim.release(version, healthy=healthy, rollout=rollout_share)
        self.sim.releases[-1].artifacts.append(rollout.marker((key or self.key).public))
        self.sim.sign()

    def steer(self, entries: dict[str, tuple[int, str]], *, key: minisign.SecretKey | None
              = None, serial: int | None = None, expires: timedelta = timedelta(hours=1),
              app: str | None = None, why: str = "") -> bytes:
        """Sign and serve rollout.json: version -> (share, state)."""
        self.serial = self.serial + 1 if serial is None else serial
        doc = RolloutDoc(schema=1, app=app or self.sim.app, serial=self.serial,
                         expires=datetime.now(UTC) + expires,
                         releases={v: RolloutEntry(share=share, state=state,  # type: ignore
                                                   since=datetime.now(UTC), why=why)
                                   for v, (share, state) in entries.items()})
        raw = feed.encode(doc)
        self.sim.documents[rollout.DOCUMENT] = raw
        self.sim.documents[rollout.SIGNATURE] = (key or self.key).sign(raw, "t").encode()
        return raw


@pytest.fixture
def host(tmp_path: Path, sim: FeedSimulator) -> SimHost:
    return SimHost(tmp_path, sim)


@pytest.fixture
def guarded(sim: FeedSimulator) -> Guarded:
    return Guarded(sim)


def on_1_0_0(host: SimHost, guarded: Guarded) -> Any:
    guarded.sim.release("1.0.0")
    engine = host.engine()
    assert run(lambda: engine.update("hello")).to_version == "1.0.0"
    return engine


def test_a_guarded_release_waits_for_its_rollout_to_start(host: SimHost,
                                                          guarded: Guarded) -> None:
    engine = on_1_0_0(host, guarded)
    guarded.release("1.1.0")
    result = run(lambda: engine.check("hello"))
    assert result.available is None
    assert "rollout.json is missing; no new host takes it" in result.passed_over["1.1.0"]
    guarded.steer({"1.1.0": (100, "active")})
    assert run(lambda: engine.update("hello")).to_version == "1.1.0"
    assert host.current() == "1.1.0"


def test_the_host_takes_the_smaller_share_and_shows_its_place(host: SimHost,
                                                              guarded: Guarded) -> None:
    engine = on_1_0_0(host, guarded)
    place = versions.rollout_bucket("test-host", "hello", "1.1.0")
    guarded.release("1.1.0", rollout_share=place)  # the manifest's share leaves this host out
    guarded.steer({"1.1.0": (100, "active")})
    result = run(lambda: engine.check("hello"))
    assert result.available is None, "rollout.json can never raise a share above the manifest's"
    assert engine.load_state("hello").rollout_buckets == {"1.1.0": place}
    guarded.sim.releases[-1].rollout = 100
    guarded.sim.sign()
    guarded.steer({"1.1.0": (place, "active")})  # now rollout.json leaves it out
    assert run(lambda: engine.check("hello")).available is None
    guarded.steer({"1.1.0": (place + 1, "active")})
    assert run(lambda: engine.check("hello")).available == "1.1.0"


def test_a_halt_keeps_new_hosts_off_and_hosts_on_it_stay(host: SimHost,
                                                          guarded: Guarded) -> None:
    engine = on_1_0_0(host, guarded)
    guarded.release("1.1.0")
    guarded.steer({"1.1.0": (100, "halted")}, why="gate 'failed checks': 2 > 0")
    result = run(lambda: engine.update("hello"))
    assert result.result == "up_to_date" and host.current() == "1.0.0"
    assert "rollout halted at 100%: gate 'failed checks': 2 > 0" in \
        engine.load_state("hello").passed_over["1.1.0"]
    guarded.steer({"1.1.0": (100, "active")})
    assert run(lambda: engine.update("hello")).to_version == "1.1.0"
    guarded.steer({"1.1.0": (100, "halted")})
    assert run(lambda: engine.update("hello")).result == "up_to_date"
    assert host.current() == "1.1.0", "a halt never moves a host that runs the release"


def test_a_recall_takes_the_host_back_to_its_newest_kept_release_not_recalled(
        host: SimHost, guarded: Guarded) -> None:
    engine = on_1_0_0(host, guarded)
    guarded.release("1.1.0")
    guarded.steer({"1.1.0": (100, "active")})
    assert run(lambda: engine.update("hello")).to_version == "1.1.0"
    guarded.release("1.2.0")
    guarded.steer({"1.1.0": (100, "active"), "1.2.0": (100, "active")})
    assert run(lambda: engine.update("hello")).to_version == "1.2.0"
    guarded.steer({"1.1.0": (100, "recalled"), "1.2.0": (100, "recalled")},
                  why="gate 'failed checks': 3 > 0")
    result = run(lambda: engine.update("hello"))
    assert (result.result, result.from_version, result.to_version) == \
        ("rolled_back", "1.0.0", "1.2.0"), result
    assert result.describe("hello") == "hello: 1.2.0 was rolled back to 1.0.0: recalled by " \
                                       "its rollout: gate 'failed checks': 3 > 0"
    assert host.current() == "1.0.0"
    st = engine.load_state("hello")
    assert "1.2.0" in st.blocked
    assert st.last_error == "left 1.2.0: recalled by its rollout: gate 'failed checks': 3 > 0"
    assert st.history[-2].action == "rolled_back" and \
        "recalled by its rollout: gate 'failed checks': 3 > 0" in st.history[-2].reason
    assert st.failed_checks == {}, "a recall is not a failed check: gates would feed on it"
    assert st.rollbacks_from == {"1.2.0": 1}
    assert run(lambda: engine.update("hello")).result == "up_to_date"
    assert host.current() == "1.0.0"


def test_a_recalled_release_with_nothing_else_kept_stays(host: SimHost,
                                                         guarded: Guarded,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    guarded.release("1.0.0")
    guarded.steer({"1.0.0": (100, "active")})
    engine = host.engine()
    assert run(lambda: engine.update("hello")).to_version == "1.0.0"
    guarded.steer({"1.0.0": (100, "recalled")})
    assert run(lambda: engine.update("hello")).result == "up_to_date"
    assert host.current() == "1.0.0"
    assert "no other release is kept to go back to, so it stays" in caplog.text


def test_a_rollout_key_steers_only_the_releases_that_name_it(host: SimHost,
                                                             guarded: Guarded) -> None:
    engine = on_1_0_0(host, guarded)
    other = minisign.SecretKey.generate()
    guarded.release("1.1.0")  # names guarded.key
    guarded.release("1.2.0", key=other)  # names the other key only
    guarded.steer({"1.1.0": (100, "active"), "1.2.0": (100, "active")}, key=other)
    result = run(lambda: engine.check("hello"))
    assert result.available == "1.2.0"
    assert "has not started" in result.passed_over.get("1.1.0", "has not started")
    guarded.steer({"1.1.0": (100, "active"), "1.2.0": (100, "active")})
    result = run(lambda: engine.check("hello"))
    assert result.available == "1.1.0", result
    assert "has not started" in result.passed_over["1.2.0"]


def test_an_unguarded_release_ignores_rollout_json(host: SimHost, guarded: Guarded) -> None:
    engine = on_1_0_0(host, guarded)
    guarded.sim.release("1.1.0")
    guarded.steer({"1.1.0": (0, "recalled")})
    assert run(lambda: engine.update("hello")).to_version == "1.1.0"
    assert guarded.sim.documents_asked[rollout.DOCUMENT] == 0, \
        "a feed with no guarded release is not asked for rollout.json"


BEFORE_ROLLOUT = "3bcc962"  # the last commit whose daemon knows nothing of rollout keys


def test_a_daemon_from_before_guarded_rollout_accepts_a_guarded_feed(
        tmp_path: Path) -> None:
    """docs/rollout.md: the manifest's schema is strict, so the rollout key travels where an
    older daemon looks away. It accepts the feed and follows the manifest's own share (the
    publisher holds those back with --rollout); today's daemon waits for rollout.json."""
    import subprocess
    import sys

    from tests.conftest import Host
    from tests.helpers import Feed, code_of_commit, run_updaterd
    from tests.servers.nginx import running_nginx

    env = code_of_commit(BEFORE_ROLLOUT, tmp_path / "old")
    rollout_pub = tmp_path / "rollout"
    assert run_updaterd("keygen", "--out", rollout_pub).returncode == 0
    with running_nginx(tmp_path / "nginx") as nginx:
        feed = Feed(folder=nginx.root / "hello", work=tmp_path / "work")
        feed.release("1.0.0")
        old_host, new_host = Host(tmp_path / "old-host"), Host(tmp_path / "new-host")
        for h in (old_host, new_host):
            h.base.mkdir()
            h.follow(nginx, feed, watch_interval=None)  # a key the old daemon does not know
        feed.release("1.1.0", rollout_keys=[str(rollout_pub) + ".pub"])
        assert "rollout-key" in json.dumps(feed.manifest())
        r = subprocess.run([sys.executable, "-m", "updaterd", "--config", str(old_host.config),
                            "--once"], env=env, capture_output=True, text=True, timeout=120)
        assert r.returncode == 0 and old_host.current() == "1.1.0", r.stderr
        r = run_updaterd("--config", new_host.config, "--once")
        assert r.returncode == 0 and new_host.current() == "1.0.0", r.stderr
        assert "rollout.json is missing; guarded releases reach no new host" in r.stderr
        r = run_updaterd("rollout", "resume", "1.1.0", "--share", "100", "--feed",
                         feed.folder, "--key", str(rollout_pub) + ".key")
        assert r.returncode == 0, r.stderr
        r = run_updaterd("--config", new_host.config, "--once")
        assert r.returncode == 0 and new_host.current() == "1.1.0", r.stderr


def test_with_auto_update_off_a_recall_is_said_and_update_acts_on_it(
        host: SimHost, guarded: Guarded, caplog: pytest.LogCaptureFixture) -> None:
    engine = on_1_0_0(host, guarded)
    guarded.release("1.1.0")
    guarded.steer({"1.1.0": (100, "active")})
    assert run(lambda: engine.update("hello")).to_version == "1.1.0"
    guarded.steer({"1.1.0": (100, "recalled")}, why="gate 'failed checks': 1 > 0")
    engine = host.engine(auto_update=False)
    run(lambda: engine.prefetch("hello"))  # what the daemon does with auto_update off
    assert host.current() == "1.1.0"
    assert "1.1.0, which runs here, is recalled by its rollout: gate 'failed checks': 1 > 0 " \
           "(an automatic update goes back; with auto_update off, `updaterctl update hello` " \
           "does)" in caplog.text
    assert run(lambda: engine.update("hello")).from_version == "1.0.0"
    assert host.current() == "1.0.0"


def test_a_host_that_would_not_take_a_release_reports_no_place_in_its_rollout(
        host: SimHost, guarded: Guarded) -> None:
    """The controller counts hosts by their places: a pinned, skipping or other-channel host
    must not stand in for one that will run the release."""
    guarded.sim.release("1.0.0")
    guarded.release("1.1.0")
    guarded.release("2.0.0")
    engine = host.engine(pin="<2")
    run(lambda: engine.update("hello"))
    assert engine.load_state("hello").rollout_buckets == {
        "1.1.0": versions.rollout_bucket("test-host", "hello", "1.1.0")}
