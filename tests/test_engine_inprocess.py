"""The engine and the transaction in this process, fed by a FeedSimulator: one behaviour per test,
in milliseconds. The same behaviours are proved end to end (the real daemon, nginx, kill -9) in
test_update_e2e.py, test_failpoints.py and the security rows; these pin down the engine's own
decisions and count what it asks of its source."""

from __future__ import annotations

import json
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
import trio

from tests.simulator import FeedSimulator, SimHost
from updaterd import failpoints
from updaterd.errors import DigestMismatch, FeedError, NoSuchVersion
from updaterd.trust import minisign
from updaterd.trust.feed import Release

T = TypeVar("T")


def run(call: Callable[[], Awaitable[T]]) -> T:
    return trio.run(call)


@pytest.fixture
def host(tmp_path: Path, sim: FeedSimulator) -> SimHost:
    return SimHost(tmp_path, sim)


def state_of(engine: Any) -> Any:
    return engine.load_state("hello")


def test_check_reads_the_feed_once_and_fetches_no_artifact(host: SimHost,
                                                            sim: FeedSimulator) -> None:
    sim.release("1.0.0")
    engine = host.engine()
    result = run(lambda: engine.check("hello"))
    assert (result.current, result.available) == (None, "1.0.0")
    assert sim.requests == {"manifest": 1}
    assert host.releases() == [] and host.current() is None


def test_update_installs_switches_records_and_cleans(host: SimHost, sim: FeedSimulator) -> None:
    art = sim.release("1.0.0")
    engine = host.engine()
    result = run(lambda: engine.update("hello"))
    assert (result.from_version, result.to_version, result.result) == (None, "1.0.0", "installed")
    assert host.current() == "1.0.0" and host.releases() == ["1.0.0"]
    st = state_of(engine)
    assert st.installed == "1.0.0" and st.pending is None and st.serial == 1
    assert (host.base / "state" / "hello" / "trees" / "1.0.0.json").is_file()
    assert sim.requests == {"manifest": 1, art.url: 1}
    assert host.leftovers() == []
    assert not (host.base / "cache" / "hello" / art.url).exists()  # the artifact is dropped


def test_nothing_new_is_up_to_date_and_fetches_no_artifact(host: SimHost,
                                                          sim: FeedSimulator) -> None:
    art = sim.release("1.0.0")
    engine = host.engine()
    run(lambda: engine.update("hello"))
    result = run(lambda: engine.update("hello"))
    assert result.result == "up_to_date"
    assert sim.requests == {"manifest": 2, art.url: 1}


def test_retain_keeps_that_many_besides_the_current_and_prunes_the_rest(
        host: SimHost, sim: FeedSimulator) -> None:
    engine = host.engine(retain=1)
    for version in ("1.0.0", "1.1.0", "1.2.0", "1.3.0"):
        sim.release(version)
        run(lambda: engine.update("hello"))
    assert host.current() == "1.3.0"
    assert host.releases() == ["1.2.0", "1.3.0"]
    assert not (host.base / "state" / "hello" / "trees" / "1.0.0.json").exists()
    assert state_of(engine).previous == "1.2.0"


def test_a_failed_health_check_rolls_back_and_blocks_the_version(host: SimHost,
                                                                  sim: FeedSimulator) -> None:
    sim.release("1.0.0")
    engine = host.engine()
    run(lambda: engine.update("hello"))
    sim.release("1.1.0", healthy=False)
    result = run(lambda: engine.update("hello"))
    assert (result.result, result.to_version) == ("rolled_back", "1.1.0")
    assert host.current() == "1.0.0" and host.releases() == ["1.0.0"]
    st = state_of(engine)
    assert st.blocked == ["1.1.0"] and st.installed == "1.0.0" and st.pending is None
    assert "rolled_back" in [h.action for h in st.history]
    check = run(lambda: engine.check("hello"))
    assert check.available is None  # blocked: not offered again


def test_an_artifact_that_does_not_match_its_digest_changes_nothing(
        host: SimHost, sim: FeedSimulator) -> None:
    sim.release("1.0.0")
    engine = host.engine()
    run(lambda: engine.update("hello"))
    art = sim.release("1.1.0")
    good = sim.blobs[art.url]
    sim.blobs[art.url] = good[:-1] + bytes([good[-1] ^ 1])  # same size, one bit off
    with pytest.raises(DigestMismatch, match="mismatch"):
        run(lambda: engine.update("hello"))
    assert host.current() == "1.0.0" and host.releases() == ["1.0.0"]
    assert host.leftovers() == []
    st = state_of(engine)
    assert st.installed == "1.0.0" and st.pending is None
    assert st.last_error is not None and "1.1.0" in st.last_error


def test_a_replayed_older_feed_is_refused_and_the_serial_stays(host: SimHost,
                                                              sim: FeedSimulator) -> None:
    sim.release("1.0.0")
    old_raw, old_sig = sim.raw, sim.signature
    sim.release("1.1.0")
    engine = host.engine()
    run(lambda: engine.check("hello"))
    sim.raw, sim.signature = old_raw, old_sig
    with pytest.raises(FeedError, match="serial"):
        run(lambda: engine.check("hello"))
    assert state_of(engine).serial == 2


def test_a_feed_signed_by_another_key_is_refused(host: SimHost, sim: FeedSimulator) -> None:
    sim.release("1.0.0")
    sim.sign(key=minisign.SecretKey.generate())
    engine = host.engine()
    with pytest.raises(FeedError):
        run(lambda: engine.update("hello"))
    # asked once more past any cache (a cache may pair a manifest with an old signature),
    # and nothing else: no artifact
    assert sim.requests == {"manifest": 2}
    assert host.releases() == [] and state_of(engine).serial is None


def test_a_pin_holds_the_version_below_it(host: SimHost, sim: FeedSimulator) -> None:
    for version in ("1.0.0", "1.1.0", "2.0.0"):
        sim.release(version)
    engine = host.engine(pin="<2")
    result = run(lambda: engine.update("hello"))
    assert result.to_version == "1.1.0" and host.current() == "1.1.0"


def test_a_rollout_of_zero_is_passed_over_with_a_reason(host: SimHost,
                                                       sim: FeedSimulator) -> None:
    sim.release("1.0.0", rollout=0)
    engine = host.engine()
    result = run(lambda: engine.check("hello"))
    assert result.available is None
    assert "0%" in result.passed_over["1.0.0"]


def test_prefetch_fetches_and_verifies_without_installing(host: SimHost,
                                                          sim: FeedSimulator) -> None:
    art = sim.release("1.0.0")
    engine = host.engine()
    result = run(lambda: engine.prefetch("hello"))
    assert result.available == "1.0.0" and host.current() is None and host.releases() == []
    assert (host.base / "cache" / "hello" / art.url).is_file()
    assert sim.requests == {"manifest": 1, art.url: 1}
    assert state_of(engine).installed is None


def on_1_0_0_with_1_1_0_released(host: SimHost, sim: FeedSimulator) -> Any:
    """An engine whose host runs 1.0.0, and a feed that now offers 1.1.0 too."""
    sim.release("1.0.0")
    engine = host.engine()
    run(lambda: engine.update("hello"))
    sim.release("1.1.0")
    return engine


def test_rollback_returns_to_the_previous_release_and_skips_the_one_left(
        host: SimHost, sim: FeedSimulator) -> None:
    engine = on_1_0_0_with_1_1_0_released(host, sim)
    run(lambda: engine.update("hello"))
    result = run(lambda: engine.rollback("hello"))
    assert (result.from_version, result.to_version) == ("1.1.0", "1.0.0")
    assert host.current() == "1.0.0"
    assert state_of(engine).skipped == ["1.1.0"]
    assert run(lambda: engine.check("hello")).available is None  # skipped, not offered
    again = run(lambda: engine.update("hello", "1.1.0"))  # on purpose: allowed
    assert again.result == "installed" and host.current() == "1.1.0"


def test_an_unknown_version_asked_for_is_refused_by_name(host: SimHost,
                                                        sim: FeedSimulator) -> None:
    sim.release("1.0.0")
    engine = host.engine()
    with pytest.raises(NoSuchVersion, match=r"9\.9\.9"):
        run(lambda: engine.update("hello", "9.9.9"))
    assert host.releases() == []


def test_an_update_interrupted_after_its_switch_is_finished_by_the_next_operation(
        host: SimHost, sim: FeedSimulator, monkeypatch: pytest.MonkeyPatch) -> None:
    sim.release("1.0.0")
    engine = host.engine()
    run(lambda: engine.update("hello"))
    art = sim.release("1.1.0")
    monkeypatch.setenv(failpoints.ENV, "switch.after_rename=raise")
    with pytest.raises(failpoints.FailpointError):
        run(lambda: engine.update("hello"))
    assert host.current() == "1.1.0" and state_of(engine).pending is not None
    monkeypatch.delenv(failpoints.ENV)
    fresh = host.engine()  # a new process would read the journal from disk
    run(lambda: fresh.recover("hello"))
    st = state_of(fresh)
    assert st.pending is None and st.installed == "1.1.0" and host.current() == "1.1.0"
    assert sim.requests[art.url] == 1


def test_an_update_interrupted_before_its_switch_is_undone(
        host: SimHost, sim: FeedSimulator, monkeypatch: pytest.MonkeyPatch) -> None:
    sim.release("1.0.0")
    engine = host.engine()
    run(lambda: engine.update("hello"))
    sim.release("1.1.0")
    monkeypatch.setenv(failpoints.ENV, "journal.after_write=raise")
    with pytest.raises(failpoints.FailpointError):
        run(lambda: engine.update("hello"))
    monkeypatch.delenv(failpoints.ENV)
    fresh = host.engine()
    run(lambda: fresh.recover("hello"))
    st = state_of(fresh)
    assert st.pending is None and st.installed == "1.0.0" and host.current() == "1.0.0"
    assert [h.action for h in st.history][-1] == "interrupted"


def test_an_expired_feed_is_refused(host: SimHost, sim: FeedSimulator) -> None:
    sim.release("1.0.0")
    sim.expires = sim.expires.replace(year=2000)
    sim.sign()
    with pytest.raises(FeedError, match="expired"):
        run(lambda: host.engine().check("hello"))


def test_a_feed_for_another_app_is_refused(host: SimHost, sim: FeedSimulator) -> None:
    sim.app = "other"
    sim.releases.append(Release(version="1.0.0", published=sim.expires, artifacts=[]))
    sim.sign()
    with pytest.raises(FeedError, match="other"):
        run(lambda: host.engine().check("hello"))


def test_every_event_of_an_update_names_the_app_and_ends_idle(host: SimHost,
                                                              sim: FeedSimulator) -> None:
    sim.release("1.0.0")
    run(lambda: host.engine().update("hello"))
    phases = [e.phase for e in host.events if e.kind == "phase"]
    assert phases[0] == "checking" and phases[-1] == "idle"
    for step in ("downloading", "staging", "switching", "health_check", "committing"):
        assert step in phases
    assert {e.app for e in host.events} == {"hello"}
    assert os.path.realpath(host.prefix / "current") == str(host.prefix / "releases" / "1.0.0")


class RecordingGate:
    """A gate that says whether it defers, and records what ran when it was passed."""

    def __init__(self, host: SimHost, defers: str | None = None) -> None:
        self.host, self.reason = host, defers
        self.passed_with: list[str | None] = []

    def defers(self) -> str | None:
        return self.reason

    async def passage(self) -> None:
        self.passed_with.append(self.host.current())


def test_the_gate_handed_to_update_is_passed_once_just_before_the_switch(
        host: SimHost, sim: FeedSimulator) -> None:
    engine = on_1_0_0_with_1_1_0_released(host, sim)
    gate = RecordingGate(host)
    result = run(lambda: engine.update("hello", gate=gate))
    assert result.result == "installed" and gate.passed_with == ["1.0.0"]


def test_a_gate_that_defers_downloads_and_does_not_switch(host: SimHost,
                                                           sim: FeedSimulator) -> None:
    sim.release("1.0.0")
    gate = RecordingGate(host, defers="waiting for window (opens in 2h)")
    engine = host.engine()
    result = run(lambda: engine.update("hello", gate=gate))
    assert (result.result, result.to_version, result.reason) == \
        ("deferred", "1.0.0", "waiting for window (opens in 2h)")
    assert gate.passed_with == [] and host.current() is None
    assert sim.requests["hello-1.0.0-linux-x86_64.tar.gz"] == 1


# -- the one refresh: the kept copy, "not modified", key rotations ------------------------------
# (end to end, through nginx and the daemon, in test_update_e2e.py and
# tests/security/test_keys_rows.py)

def kept_copy(host: SimHost) -> Path:
    return host.base / "state" / "hello" / "feed.json"


def test_an_unchanged_feed_is_answered_not_modified_from_the_kept_copy(
        host: SimHost, sim: FeedSimulator) -> None:
    sim.release("1.0.0")
    engine = host.engine()
    first = run(lambda: engine.check("hello"))
    assert kept_copy(host).read_bytes() == sim.raw
    assert engine.load_state("hello").etag == sim.etag()
    again = run(lambda: engine.check("hello"))
    assert (sim.requests["manifest"], sim.not_modified) == (2, 1)
    assert (again.current, again.available) == (first.current, first.available) == \
        (None, "1.0.0")
    assert sim.documents_asked["keys.json"] == 1, "keys are looked for only with new bytes"


def test_the_kept_copy_is_verified_again_not_believed(host: SimHost, sim: FeedSimulator) -> None:
    """A "not modified" answer only says the bytes did not change: the copy on disk is checked
    as if fetched (a copy changed on disk is refused, not used)."""
    sim.release("1.0.0")
    engine = host.engine()
    run(lambda: engine.check("hello"))
    kept_copy(host).write_bytes(sim.raw.replace(b"1.0.0", b"9.0.0"))
    with pytest.raises(FeedError, match="signature refused"):
        run(lambda: engine.check("hello"))
    assert sim.not_modified == 1


def test_new_bytes_after_a_not_modified_are_fetched_whole(host: SimHost,
                                                          sim: FeedSimulator) -> None:
    sim.release("1.0.0")
    engine = host.engine()
    run(lambda: engine.check("hello"))
    run(lambda: engine.check("hello"))
    sim.release("1.1.0")
    result = run(lambda: engine.check("hello"))
    assert result.available == "1.1.0" and sim.not_modified == 1
    assert kept_copy(host).read_bytes() == sim.raw
    assert engine.load_state("hello").serial == 2


def rotate(sim: FeedSimulator, version: int = 1) -> minisign.SecretKey:
    """Publish keys.json naming a new key, signed by the old and the new key, and sign the
    feed with the new key from now on (what `updaterd rotate-keys` does)."""
    new = minisign.SecretKey.generate()
    raw = json.dumps({"schema": 1, "app": sim.app, "version": version,
                      "keys": [new.public.to_base64()]}).encode()
    sim.documents["keys.json"] = raw
    sim.documents["keys.json.minisig"] = (sim.key.sign(raw, "t") +
                                          new.sign(raw, "t")).encode()
    sim.key = new
    return new


def test_a_key_rotation_is_followed_before_the_manifest_is_checked(
        host: SimHost, sim: FeedSimulator) -> None:
    sim.release("1.0.0")
    engine = host.engine()
    run(lambda: engine.check("hello"))
    rotate(sim)
    sim.release("1.1.0")  # signed by the new key alone
    result = run(lambda: engine.check("hello"))
    st = engine.load_state("hello")
    assert result.available == "1.1.0"
    assert st.trust is not None and st.trust.version == 1 and st.serial == 2


def test_a_manifest_signed_by_an_unannounced_key_is_refused(host: SimHost,
                                                            sim: FeedSimulator) -> None:
    sim.release("1.0.0")
    engine = host.engine()
    run(lambda: engine.check("hello"))
    sim.key = minisign.SecretKey.generate()  # no keys.json: a key nobody rotated to
    sim.release("1.1.0")
    with pytest.raises(FeedError, match="signature refused"):
        run(lambda: engine.check("hello"))
    st = engine.load_state("hello")
    assert st.trust is None and st.serial == 1 and kept_copy(host).read_bytes() != sim.raw


def test_what_a_check_found_is_said_once_not_again_by_the_update_that_takes_it(
        host: SimHost, sim: FeedSimulator) -> None:
    sim.release("1.0.0")
    engine = host.engine()

    def said() -> list[str]:
        return [e.message for e in host.events if e.kind == "phase" and e.phase == "idle"
                and "is available" in e.message]

    run(lambda: engine.check("hello"))
    assert said() == ["1.0.0 is available"]
    assert run(lambda: engine.update("hello")).to_version == "1.0.0"
    assert said() == ["1.0.0 is available"], "the update said it again"
    run(lambda: engine.check("hello"))
    sim.release("1.1.0")
    assert run(lambda: engine.update("hello")).to_version == "1.1.0"
    assert said() == ["1.0.0 is available", "1.1.0 is available"], "news is said"
