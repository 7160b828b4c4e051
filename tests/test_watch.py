"""The look between checks (`watch_interval`, updaterd.toml(5), J180), in this process on a
FeedSimulator: what it asks of the feed (conditional requests, rollout.json only where one was
accepted), which changes it reports, and that a change already examined is not reported at
every look. The daemon acting on a look (a recall at once, a new release within jitter) is
tested on the real daemon in test_watch_e2e.py."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.simulator import FeedSimulator, SimHost
from tests.test_rollout import Guarded, run
from updaterd.engine.engine import Engine
from updaterd.errors import ConfigError
from updaterd.host.config import AppConfig, watch_seconds
from updaterd.sources import watch
from updaterd.trust import minisign, rollout
from updaterd.trust.feed import SIGNATURE


@pytest.fixture
def host(tmp_path: Path, sim: FeedSimulator) -> SimHost:
    return SimHost(tmp_path, sim)


def on_1_0_0(host: SimHost, sim: FeedSimulator) -> Engine:
    sim.release("1.0.0")
    engine = host.engine()
    assert run(lambda: engine.update("hello")).to_version == "1.0.0"
    return engine


def look(engine: Engine, seen: watch.Seen) -> str | None:
    return run(lambda: engine.look("hello", seen))


def asked(sim: FeedSimulator) -> tuple[int, int, int, int]:
    """(manifest requests, of them 304, rollout.json requests, of them 304)."""
    return (sim.requests["manifest"], sim.not_modified, sim.documents_asked[rollout.DOCUMENT],
            sim.documents_not_modified[rollout.DOCUMENT])


def test_an_unchanged_feed_costs_one_conditional_request_and_nothing_else(
        host: SimHost, sim: FeedSimulator) -> None:
    engine = on_1_0_0(host, sim)
    before, seen = asked(sim), watch.Seen()
    signatures = sim.documents_asked[SIGNATURE]
    state_file = host.base / "state" / "hello" / "state.json"
    written = state_file.stat().st_mtime_ns
    for _ in range(3):
        assert look(engine, seen) is None
    m, m304, r, _ = asked(sim)
    assert (m - before[0], m304 - before[1], r - before[2]) == (3, 3, 0)  # no rollout.json:
    assert sim.documents_asked[SIGNATURE] == signatures  # none was ever accepted, and no
    assert state_file.stat().st_mtime_ns == written  # signature; a look records nothing


def test_a_new_manifest_is_reported_once_and_not_after_the_check_that_took_it(
        host: SimHost, sim: FeedSimulator) -> None:
    engine, seen = on_1_0_0(host, sim), watch.Seen()
    sim.release("1.1.0")
    assert look(engine, seen) == "the manifest changed"
    run(lambda: engine.check("hello"))
    assert look(engine, seen) is None


def test_a_changed_manifest_whose_check_failed_is_not_reported_at_every_look(
        host: SimHost, sim: FeedSimulator) -> None:
    engine, seen = on_1_0_0(host, sim), watch.Seen()
    sim.release("1.1.0")
    sim.sign(key=minisign.SecretKey.generate())  # signed by a key the host does not trust
    assert look(engine, seen) == "the manifest changed"
    with pytest.raises(Exception, match="signature"):
        run(lambda: engine.check("hello"))
    assert look(engine, seen) is None  # the scheduled check and its back-off retry it
    sim.sign()  # the publisher mends it: other bytes, a change again
    assert look(engine, seen) == "the manifest changed"


def guarded_on_1_0_0(host: SimHost, sim: FeedSimulator) -> tuple[Guarded, Engine]:
    guarded = Guarded(sim)
    guarded.release("1.0.0")
    guarded.steer({"1.0.0": (100, "active")})
    engine = host.engine()
    assert run(lambda: engine.update("hello")).to_version == "1.0.0"
    return guarded, engine


def test_with_a_rollout_json_accepted_it_is_asked_conditionally_too(
        host: SimHost, sim: FeedSimulator) -> None:
    _, engine = guarded_on_1_0_0(host, sim)
    seen = watch.Seen()
    m0, m304_0, r0, r304_0 = asked(sim)
    for _ in range(3):
        assert look(engine, seen) is None
    m, m304, r, r304 = asked(sim)
    # the validators are the state's, from the check: every look is answered 304, the
    # first after a start too (they were in memory, and the first look read it whole)
    assert (m - m0, m304 - m304_0, r - r0, r304 - r304_0) == (3, 3, 3, 3)
    assert sim.documents_asked[rollout.SIGNATURE] == 1  # only the check that accepted it


def test_a_recall_halt_or_any_new_rollout_json_is_reported(
        host: SimHost, sim: FeedSimulator) -> None:
    guarded, engine = guarded_on_1_0_0(host, sim)
    seen = watch.Seen()
    assert look(engine, seen) is None
    guarded.steer({"1.0.0": (100, "recalled")}, why="corrupts data")
    assert look(engine, seen) == "rollout.json changed"
    assert look(engine, seen) is None  # handed to a check once
    run(lambda: engine.check("hello"))
    assert host_state(host)["recalled"] == {"1.0.0": "corrupts data"}
    assert look(engine, seen) is None


def test_a_refused_rollout_json_is_reported_once(host: SimHost, sim: FeedSimulator) -> None:
    guarded, engine = guarded_on_1_0_0(host, sim)
    seen = watch.Seen()
    guarded.steer({"1.0.0": (100, "recalled")}, key=minisign.SecretKey.generate())
    assert look(engine, seen) == "rollout.json changed"
    run(lambda: engine.check("hello"))  # logged, never raised: no host moves
    assert host_state(host)["recalled"] == {}
    assert look(engine, seen) is None


def test_a_rollout_json_that_went_missing_moves_nothing_and_is_no_change(
        host: SimHost, sim: FeedSimulator) -> None:
    _, engine = guarded_on_1_0_0(host, sim)
    del sim.documents[rollout.DOCUMENT]
    assert look(engine, watch.Seen()) is None


def test_a_host_that_never_checked_does_not_look(host: SimHost, sim: FeedSimulator) -> None:
    sim.release("1.0.0")
    engine = host.engine()
    assert look(engine, watch.Seen()) is None
    assert sim.requests["manifest"] == 0


def host_state(host: SimHost) -> Any:
    import json
    return json.loads((host.base / "state" / "hello" / "state.json").read_text())


@pytest.mark.parametrize(("value", "seconds"), [("2m", 120.0), ("0", None), (" 0 ", None),
                                                 ("1s", 1.0), ("1h30m", 5400.0)])
def test_watch_interval_values(host: SimHost, value: str, seconds: float | None) -> None:
    cfg = host.configure(watch_interval=value).apps["hello"]
    assert watch_seconds(cfg) == seconds


@pytest.mark.parametrize(("value", "why"), [
    ("500ms", "'500ms' is under 1s; each look is a request from every host"),
    ("soon", "watch_interval"), ("-1m", "watch_interval"), ("0m0", "watch_interval")])
def test_a_bad_watch_interval_is_refused_by_name(host: SimHost, value: str, why: str) -> None:
    with pytest.raises(ConfigError, match=why):
        host.configure(watch_interval=value)


def test_github_releases_are_never_looked_at() -> None:
    cfg = AppConfig(source="github", repo="o/r", watch_interval="1m")
    assert watch_seconds(cfg) is None


def changed_now(sim: FeedSimulator, st: Any, seen: watch.Seen) -> str | None:
    from updaterd.host.config import Limits

    return run(lambda: watch.changed(sim.transport("hello", None), st,  # type: ignore[arg-type]
                                     Limits(), seen))


@pytest.mark.parametrize("stored", ["0" * 64, "f" * 64])
def test_any_other_digest_is_a_change_whichever_way_it_compares(
        sim: FeedSimulator, stored: str) -> None:
    from updaterd.host.state import AppState

    sim.release("1.0.0")
    st = AppState(serial=1, manifest_digest=stored)
    assert changed_now(sim, st, watch.Seen()) == "the manifest changed"


def test_without_an_accepted_serial_the_validators_are_not_sent(sim: FeedSimulator) -> None:
    """Validators stand for a manifest the host accepted; with none (no serial), the look
    reads the manifest whole."""
    from updaterd.host.state import AppState

    sim.release("1.0.0")
    st = AppState(serial=None, etag=sim.etag())
    assert changed_now(sim, st, watch.Seen()) == "the manifest changed"
    assert sim.not_modified == 0


def test_the_last_two_changes_examined_are_remembered_and_no_more(sim: FeedSimulator) -> None:
    from updaterd.host.state import AppState

    seen = watch.Seen()
    st = AppState(serial=1, manifest_digest="0" * 64)
    served = []
    for version in ("1.0.0", "1.1.0", "1.2.0"):
        sim.release(version)
        served.append(sim.raw)
        assert changed_now(sim, st, seen) == "the manifest changed"
    assert len(seen.examined) == 2
    sim.raw = served[1]  # examined, and among the last two: no news
    assert changed_now(sim, st, seen) is None
    sim.raw = served[0]  # examined before those two: forgotten, so a change again
    assert changed_now(sim, st, seen) == "the manifest changed"
    assert changed_now(sim, st, seen) is None  # ... examined once


class _Daemon:
    """Just enough of the daemon for one worker in this process."""

    def __init__(self, engine: Engine) -> None:
        self.engine, self.config = engine, engine.config
        self.workers: dict[str, Any] = {}

    def on_event(self, event: Any) -> None:
        worker = self.workers.get(event.app)
        if worker is not None:
            worker.observe(event)


def test_a_look_whose_check_is_cancelled_ends_quietly(host: SimHost, sim: FeedSimulator) -> None:
    """`updaterctl cancel` during the check a look started: the look ends, nothing is left
    half done, and the worker goes on (it raised on an unset result and took the daemon's
    nursery down with it)."""
    import random

    import trio

    from updaterd.service.worker import AppWorker

    engine = on_1_0_0(host, sim)
    sim.release("1.1.0")
    daemon = _Daemon(engine)
    worker = AppWorker("hello", daemon, random.Random(1))  # type: ignore[arg-type]
    daemon.workers["hello"] = worker
    real = sim.transport("hello", None)  # type: ignore[arg-type]

    class Slow:
        remote = True

        async def document(self, name: str, cap: int, **kw: Any) -> Any:
            if name.endswith(".minisig"):  # only the check asks for the signature
                await trio.sleep(30)
            return await real.document(name, cap, **kw)

        def __getattr__(self, name: str) -> Any:
            return getattr(real, name)

    engine.transports = lambda app, cfg: Slow()  # type: ignore[assignment,return-value]

    async def main() -> None:
        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(worker.look)
                while not worker.looking:
                    await trio.sleep(0.01)
                await trio.sleep(0.05)
                assert worker.cancel().cancelled
        assert not worker.lock.locked() and not worker.looking

    trio.run(main)
    assert host.current() == "1.0.0"


def test_a_look_at_another_origin_sends_no_validators(host: SimHost,
                                                      sim: FeedSimulator) -> None:
    """A feed with mirrors: the validators kept are one origin's; a look that asks another
    (the first one down) reads both documents whole and compares them by digest."""
    from updaterd.host.config import Limits

    _, engine = guarded_on_1_0_0(host, sim)
    st = engine.load_state("hello")
    assert st.etag and st.rollout_etag and st.rollout_mark is not None
    before = asked(sim)
    assert run(lambda: watch.changed(sim.transport("hello", None), st,  # type: ignore[arg-type]
                                     Limits(), watch.Seen(), conditional=False)) is None
    m, m304, r, r304 = (a - b for a, b in zip(asked(sim), before, strict=True))
    assert (m, m304, r, r304) == (1, 0, 1, 0), "both asked whole: nothing new by digest"
