"""Catalogue group I: guarded rollout. Each refusal of a rollout.json leaves the host where it
was and offers a guarded release to no new host; the host's state and disk are compared before
and after. In this process on the FeedSimulator (the real daemons, nginx and Prometheus prove
the whole in tests/fleet)."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.simulator import FeedSimulator, SimHost
from tests.test_rollout import Guarded, run
from updaterd.trust import minisign, rollout, yank


@pytest.fixture
def host(tmp_path: Path, sim: FeedSimulator) -> SimHost:
    return SimHost(tmp_path, sim)


@pytest.fixture
def guarded(sim: FeedSimulator) -> Guarded:
    return Guarded(sim)


def on_guarded_1_1_0(host: SimHost, guarded: Guarded) -> Any:
    """A host on 1.0.0 that went on to the guarded 1.1.0; 1.2.0 is published, guarded too."""
    guarded.sim.release("1.0.0")
    engine = host.engine()
    run(lambda: engine.update("hello"))
    guarded.release("1.1.0")
    guarded.steer({"1.1.0": (100, "active")})
    assert run(lambda: engine.update("hello")).to_version == "1.1.0"
    guarded.release("1.2.0")
    return engine


def nothing_moves(host: SimHost, engine: Any, reason: str) -> None:
    """An automatic update neither installs 1.2.0 nor leaves 1.1.0, and says why."""
    result = run(lambda: engine.update("hello"))
    assert result.result == "up_to_date", result
    assert host.current() == "1.1.0" and host.releases() == ["1.0.0", "1.1.0"]
    st = engine.load_state("hello")
    assert reason in st.passed_over["1.2.0"], st.passed_over
    assert st.blocked == [] and st.rollbacks_from == {}


def test_i160_a_missing_rollout_json_never_widens_and_never_moves(
        host: SimHost, guarded: Guarded, caplog: pytest.LogCaptureFixture) -> None:
    engine = on_guarded_1_1_0(host, guarded)
    del guarded.sim.documents[rollout.DOCUMENT]
    nothing_moves(host, engine, "rollout.json is missing")
    assert "hello: rollout.json is missing; guarded releases reach no new host and no host " \
           "moves" in caplog.text


def test_i161_a_forged_rollout_json_is_ignored_and_logged(
        host: SimHost, guarded: Guarded, caplog: pytest.LogCaptureFixture) -> None:
    engine = on_guarded_1_1_0(host, guarded)
    forger = minisign.SecretKey.generate()
    guarded.steer({"1.1.0": (100, "recalled"), "1.2.0": (100, "active")}, key=forger)
    nothing_moves(host, engine, "not signed by a rollout key the manifest names")
    assert "not signed by a rollout key" in caplog.text
    # the same with the signature of the right key over other bytes
    raw = guarded.steer({"1.2.0": (1, "active")})
    guarded.sim.documents[rollout.DOCUMENT] = raw.replace(b'"share": 1', b'"share": 100')
    nothing_moves(host, engine, "not signed by a rollout key")


def test_i161_another_releases_rollout_key_steers_nothing_here(host: SimHost,
                                                               guarded: Guarded) -> None:
    engine = on_guarded_1_1_0(host, guarded)
    other = minisign.SecretKey.generate()
    guarded.sim.release("0.9.0")  # an old release that names another rollout key
    guarded.sim.releases[-1].artifacts.append(rollout.marker(other.public))
    guarded.sim.sign()
    guarded.steer({"1.1.0": (100, "recalled"), "1.2.0": (100, "active")}, key=other)
    nothing_moves(host, engine, "has not started")


def test_i162_an_expired_rollout_json_is_ignored(host: SimHost, guarded: Guarded) -> None:
    engine = on_guarded_1_1_0(host, guarded)
    guarded.steer({"1.1.0": (100, "recalled"), "1.2.0": (100, "active")},
                  expires=timedelta(seconds=-1))
    nothing_moves(host, engine, "rollout.json expired at")


def test_i163_a_replayed_rollout_json_cannot_undo_a_halt(host: SimHost,
                                                         guarded: Guarded) -> None:
    engine = on_guarded_1_1_0(host, guarded)
    guarded.steer({"1.1.0": (100, "active"), "1.2.0": (5, "active")})
    before_halt = dict(guarded.sim.documents)
    guarded.steer({"1.1.0": (100, "active"), "1.2.0": (5, "halted")})
    nothing_moves(host, engine, "rollout halted at 5%")
    guarded.sim.documents.update(before_halt)  # an attacker serves the older, wider one
    nothing_moves(host, engine, "serial 2 is below 3 already seen")
    # the same serial with other bytes
    guarded.steer({"1.1.0": (100, "active"), "1.2.0": (100, "active")}, serial=3)
    nothing_moves(host, engine, "serial 3 was seen before with different content")


def test_i164_rollout_json_never_raises_a_share_nor_names_an_artifact(
        host: SimHost, guarded: Guarded) -> None:
    engine = on_guarded_1_1_0(host, guarded)
    guarded.sim.releases[-1].rollout = 0  # the manifest holds 1.2.0 back
    guarded.sim.sign()
    guarded.steer({"1.1.0": (100, "active"), "1.2.0": (100, "active")})
    nothing_moves(host, engine, "available to 0% of hosts")
    doc = json.loads(guarded.steer({"1.2.0": (100, "active")}))
    doc["releases"]["1.2.0"]["artifacts"] = [{"url": "evil.tar.gz"}]
    raw = json.dumps(doc).encode()
    guarded.sim.documents[rollout.DOCUMENT] = raw
    guarded.sim.documents[rollout.SIGNATURE] = guarded.key.sign(raw, "t").encode()
    guarded.sim.releases[-1].rollout = 100
    guarded.sim.sign()
    nothing_moves(host, engine, "does not match schema 1")


def test_i165_only_a_valid_recall_moves_a_host_and_only_to_a_release_as_installed(
        host: SimHost, guarded: Guarded) -> None:
    engine = on_guarded_1_1_0(host, guarded)
    guarded.steer({"1.1.0": (100, "recalled")}, expires=timedelta(seconds=-1))
    nothing_moves(host, engine, "expired")
    (host.prefix / "releases" / "1.0.0" / "bin" / "hello").write_text("#!/bin/sh\nexit 0\n")
    guarded.steer({"1.1.0": (100, "recalled")})
    with pytest.raises(Exception, match=r"1\.0\.0 on disk is not what was installed"):
        run(lambda: engine.update("hello"))
    assert host.current() == "1.1.0", "a recall never switches to a damaged release"


def on_guarded_1_2_0_with_1_1_0_yanked(host: SimHost, guarded: Guarded) -> Any:
    engine = on_guarded_1_1_0(host, guarded)
    guarded.steer({"1.1.0": (100, "active"), "1.2.0": (100, "active")})
    assert run(lambda: engine.update("hello")).to_version == "1.2.0"
    assert host.releases() == ["1.0.0", "1.1.0", "1.2.0"]
    yank.apply(guarded.sim.releases[1], "eats data")
    guarded.sim.sign()
    return engine


def test_j173_a_recall_never_moves_a_host_onto_a_yanked_release_and_active_again_unblocks(
        host: SimHost, guarded: Guarded) -> None:
    engine = on_guarded_1_2_0_with_1_1_0_yanked(host, guarded)
    guarded.steer({"1.1.0": (100, "active"), "1.2.0": (100, "recalled")}, why="slow")
    done = run(lambda: engine.update("hello"))
    assert (done.result, done.from_version, host.current()) == ("rolled_back", "1.0.0", "1.0.0")
    st = engine.load_state("hello")
    assert st.blocked == ["1.2.0"] and st.recall_blocked == ["1.2.0"]
    # the rollout key sets it active again: the block the recall placed goes, and it is taken
    guarded.steer({"1.1.0": (100, "active"), "1.2.0": (100, "active")})
    assert run(lambda: engine.update("hello")).to_version == "1.2.0"
    st = engine.load_state("hello")
    assert host.current() == "1.2.0" and st.blocked == [] and st.recall_blocked == []


def test_j173_with_no_kept_release_a_host_may_run_it_stays_and_says_why(
        host: SimHost, guarded: Guarded, caplog: pytest.LogCaptureFixture) -> None:
    engine = on_guarded_1_2_0_with_1_1_0_yanked(host, guarded)
    engine.edit_state("hello", lambda st, _limit: st.skipped.append("1.0.0"))  # left once
    guarded.steer({"1.1.0": (100, "active"), "1.2.0": (100, "recalled")})
    done = run(lambda: engine.update("hello"))
    assert (done.result, host.current()) == ("up_to_date", "1.2.0")
    assert "1.2.0 is recalled by its rollout: recalled by its rollout; none of the kept " \
           "releases may run here (1.0.0 is skipped here; 1.1.0 is yanked (eats data)), so " \
           "it stays" in caplog.text, caplog.text


def test_j173_a_block_after_a_failed_check_is_not_lifted_by_a_rollout(
        host: SimHost, guarded: Guarded) -> None:
    guarded.sim.release("1.0.0")
    engine = host.engine()
    run(lambda: engine.update("hello"))
    guarded.release("1.1.0", healthy=False)
    guarded.steer({"1.1.0": (100, "active")})
    assert run(lambda: engine.update("hello")).result == "rolled_back"
    guarded.steer({"1.1.0": (100, "active")})
    run(lambda: engine.update("hello"))
    st = engine.load_state("hello")
    assert host.current() == "1.0.0" and st.blocked == ["1.1.0"] and st.recall_blocked == []


def test_j178_a_yanked_release_is_recalled_and_a_recalled_one_yanked_in_either_order(
        tmp_path: Path) -> None:
    """The publisher's side, with the real commands: `rollout recall` of a release already
    yanked (it refused: 'no rollout widens it, feed unyank first'), and `feed yank` of one
    already recalled; `rollout resume` of a yanked release is still refused."""
    from tests.helpers import Feed, run_updaterd

    feed = Feed(folder=tmp_path / "feed", work=tmp_path / "work")
    key = minisign.SecretKey.generate()
    key_file = tmp_path / "rollout.key"
    key_file.write_text(key.to_file())
    feed.release("1.0.0")
    for v in ("1.1.0", "1.2.0"):
        feed.release(v, rollout_keys=[key.public.to_base64()])

    def cli(*args: str) -> str:
        is_feed = args[0] == "feed"
        r = run_updaterd(*args, "--feed", feed.folder, "--key", feed.key if is_feed
                         else key_file)
        assert r.returncode == 0, (args, r.stderr)
        return r.stdout

    cli("rollout", "resume", "1.1.0", "--share", "100")
    cli("rollout", "resume", "1.2.0", "--share", "100")
    cli("feed", "yank", "1.1.0", "--why", "eats data")  # yank first, then recall
    assert cli("rollout", "recall", "1.1.0", "--why", "eats data").strip() == \
        "1.1.0: recalled at 100% (yanked too: eats data): eats data"
    cli("rollout", "recall", "1.2.0", "--why", "slow")  # recall first, then yank
    cli("feed", "yank", "1.2.0", "--why", "slow")
    doc = json.loads(run_updaterd("rollout", "status", "--json", "--feed", feed.folder).stdout)
    assert {v: e["state"] for v, e in doc["releases"].items()} == {"1.1.0": "recalled",
                                                                  "1.2.0": "recalled"}
    r = run_updaterd("rollout", "resume", "1.1.0", "--feed", feed.folder, "--key", key_file)
    assert r.returncode != 0 and "is yanked (eats data): no rollout widens it" in r.stderr


def test_j178_a_host_on_a_yanked_release_goes_back_when_it_is_recalled_and_never_takes_it(
        host: SimHost, guarded: Guarded) -> None:
    engine = on_guarded_1_1_0(host, guarded)
    yank.apply(guarded.sim.releases[1], "eats data")
    guarded.sim.sign()
    assert run(lambda: engine.update("hello")).result == "up_to_date"
    assert host.current() == "1.1.0"  # a yank alone moves no host
    guarded.steer({"1.1.0": (100, "recalled")}, why="eats data")
    assert run(lambda: engine.update("hello")).result == "rolled_back"
    assert host.current() == "1.0.0"
    for _ in range(2):  # yanked and recalled: never offered again
        assert run(lambda: engine.update("hello")).result == "up_to_date"
        assert host.current() == "1.0.0"
