"""`updaterd rollout`: the controller's decisions on a real feed folder, with Prometheus stood in
by a table of answers and time by a counter (its one job is to read Prometheus; the real one,
nginx and 60 daemons are in tests/fleet). Catalogue row I166: it never widens on missing
evidence."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import Feed, make_tar, release_files, run_updaterd
from updaterd.errors import FeedError
from updaterd.release import controller, feedtools
from updaterd.release.controller import NoVerdict, Plan
from updaterd.trust import minisign, rollout
from updaterd.trust.feed import RolloutEntry

GATE = 'sum(updaterd_release_failed_checks_total{app="$app",version="$version"}) or vector(0)'


@dataclass
class Fleet:
    """What Prometheus answers: hosts on the release, the places of the others, gate values."""

    places: list[int] = field(default_factory=lambda: list(range(0, 100, 2)))  # 50 hosts
    on_release: int = 0
    failures: float = 0.0
    down: bool = False
    asked: list[str] = field(default_factory=list)
    identities: list[tuple[str, str]] = field(default_factory=list)  # (instance, id)

    def query(self, promql: str) -> list[tuple[dict[str, str], float]]:
        self.asked.append(promql)
        if self.down:
            raise NoVerdict("Prometheus at http://127.0.0.1:9 cannot be asked: refused")
        if promql.startswith('count(updaterd_app_info{app="hello",installed='):
            return [({}, float(self.on_release))] if self.on_release else []
        if promql.startswith(("count(updaterd_app_info", "count(updaterd_last_check")):
            return [({}, float(self.on_release + len(self.places)))]
        if promql.startswith("updaterd_rollout_place"):
            return [({}, float(p)) for p in self.places]
        if promql == "updaterd_rollout_identity":
            return [({"instance": i, "id": ident}, 1.0) for i, ident in self.identities]
        assert 'version="1.1.0"' in promql and 'app="hello"' in promql, promql
        return [({}, self.failures)]


class Clock:
    """Time that moves only when the controller sleeps; `on_sleep` lets a test act between."""

    def __init__(self) -> None:
        self.now = time.time()  # the feed was published just now
        self.on_sleep: Callable[[float], None] = lambda t: None

    def time(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds
        self.on_sleep(self.now)


@pytest.fixture
def guarded_feed(tmp_path: Path) -> tuple[Feed, minisign.SecretKey]:
    feed = Feed(folder=tmp_path / "feed", work=tmp_path / "work")
    key = minisign.SecretKey.generate()
    feed.release("1.0.0")
    feed.release("1.1.0", rollout_keys=[key.public.to_base64()])
    return feed, key


def plan(**kw: Any) -> Plan:
    base: dict[str, Any] = {"version": "1.1.0", "steps": [10, 50, 100], "soak": "60s",
                            "min_hosts": 3, "interval": "1s",
                            "gate": [{"name": "failed checks", "query": GATE, "max": 0}]}
    base.update(kw)
    import msgspec
    return msgspec.convert(base, Plan)


def shares(feed: Feed) -> tuple[int, str, str]:
    doc = controller.read(feed.folder)
    assert doc is not None
    e = doc.releases["1.1.0"]
    return e.share, e.state, e.why


def start(feed: Feed, key: minisign.SecretKey, p: Plan, fleet: Fleet, clock: Clock,
          said: list[str]) -> None:
    controller.run(feed.folder, key, p, fleet, said.append, clock.time,  # type: ignore[arg-type]
                   clock.sleep)


def test_a_good_release_widens_step_by_step_and_ends_after_the_last_soak(
        guarded_feed: tuple[Feed, minisign.SecretKey]) -> None:
    feed, key = guarded_feed
    fleet, clock, said = Fleet(), Clock(), []
    signed: list[int] = []

    def hosts_follow(now: float) -> None:  # the hosts in the share take the release
        share = shares(feed)[0]
        if not signed or signed[-1] != share:
            signed.append(share)
        fleet.on_release = sum(1 for p in range(0, 100, 2) if p < share)

    clock.on_sleep = hosts_follow
    began = clock.now
    start(feed, key, plan(), fleet, clock, said)
    assert signed == [10, 50, 100]
    assert clock.now - began == pytest.approx(180, abs=1.5), "steps x soak, no more"
    assert said[-1] == "1.1.0: rollout complete: 100% for 60s with every gate holding"


def test_the_first_share_holds_at_least_min_hosts_by_their_places(
        guarded_feed: tuple[Feed, minisign.SecretKey]) -> None:
    feed, key = guarded_feed
    fleet = Fleet(places=[3, 7, 9, 40, 41, 77], failures=1)
    with pytest.raises(controller.Halted):
        start(feed, key, plan(steps=[1, 5, 100]), fleet, Clock(), [])
    assert shares(feed)[0] == 10, "the third-lowest place is 9: a share of 10 holds 3 hosts"


def test_a_breach_signs_a_halt_naming_the_gate_and_value(
        guarded_feed: tuple[Feed, minisign.SecretKey]) -> None:
    feed, key = guarded_feed
    fleet, clock, said = Fleet(), Clock(), []

    def fail_later(now: float) -> None:
        fleet.on_release = 3
        fleet.failures = 2 if now > clock_start + 5 else 0

    clock_start = clock.now
    clock.on_sleep = fail_later
    with pytest.raises(controller.Halted, match=r"halted at 10%: gate .failed checks.: 2 > 0"):
        start(feed, key, plan(), fleet, clock, said)
    assert shares(feed) == (10, "halted", "gate 'failed checks': 2 > 0")
    assert clock.now - clock_start <= 7, "the gate is asked every interval"
    with pytest.raises(controller.Halted, match=r"resume 1\.1\.0` first"):
        start(feed, key, plan(), fleet, clock, said)
    assert "1.1.0: active at 10%" in controller.set_state(feed.folder, key, "1.1.0", "active",
                                                          "")


def test_on_fail_recall_signs_a_recall(guarded_feed: tuple[Feed, minisign.SecretKey]) -> None:
    feed, key = guarded_feed
    with pytest.raises(controller.Halted, match="recalled at 10%"):
        start(feed, key, plan(on_fail="recall"), Fleet(failures=1), Clock(), [])
    assert shares(feed)[1] == "recalled"


def test_i166_no_widening_while_prometheus_cannot_be_asked_or_has_no_value(
        guarded_feed: tuple[Feed, minisign.SecretKey]) -> None:
    feed, key = guarded_feed
    fleet, clock, said = Fleet(on_release=3), Clock(), []
    began = clock.now

    class Enough(Exception):
        pass

    def prometheus_goes_away(now: float) -> None:
        if now - began > 30:
            fleet.down = True
        if now - began > 600:
            raise Enough

    clock.on_sleep = prometheus_goes_away
    with pytest.raises(Enough):
        start(feed, key, plan(), fleet, clock, said)
    assert shares(feed)[:2] == (10, "active"), "ten soaks long, and never widened"
    assert said.count("1.1.0: holding (no widening): Prometheus at http://127.0.0.1:9 cannot "
                      "be asked: refused") == 1, said


def test_i166_no_widening_without_a_gate_value_or_enough_hosts(
        guarded_feed: tuple[Feed, minisign.SecretKey]) -> None:
    feed, key = guarded_feed

    class NoValue(Fleet):
        def query(self, promql: str) -> list[tuple[dict[str, str], float]]:
            return [] if "failed_checks" in promql else super().query(promql)

    class Enough(Exception):
        pass

    clock, said = Clock(), []
    began = clock.now

    def stop(now: float) -> None:
        if now - began > 300:
            raise Enough

    clock.on_sleep = stop
    with pytest.raises(Enough):
        start(feed, key, plan(), NoValue(on_release=3), clock, said)
    assert shares(feed)[0] == 10
    assert any("gate 'failed checks' has no value" in s for s in said), said
    began = clock.now
    with pytest.raises(Enough):
        start(feed, key, plan(), Fleet(on_release=1), clock, said)
    assert shares(feed)[0] == 10
    assert said[-1] == "1.1.0: holding (no widening): 1 host runs it; the plan wants 3 " \
                       "before it widens", said


def test_killed_mid_step_it_picks_up_from_rollout_json(
        guarded_feed: tuple[Feed, minisign.SecretKey]) -> None:
    feed, key = guarded_feed
    fleet, clock = Fleet(on_release=60), Clock()
    began = clock.now

    class Killed(BaseException):
        pass

    def kill_in_step_two(now: float) -> None:
        if now - began > 90:
            raise Killed

    clock.on_sleep = kill_in_step_two
    with pytest.raises(Killed):
        start(feed, key, plan(), fleet, clock, [])
    assert shares(feed)[0] == 50
    serial = controller.read(feed.folder).serial  # type: ignore[union-attr]
    clock.on_sleep = lambda now: None
    said: list[str] = []
    start(feed, key, plan(), fleet, clock, said)
    assert said[0].startswith("1.1.0: picking up at 50%")
    assert clock.now - began == pytest.approx(180, abs=2.5)
    assert controller.read(feed.folder).serial == serial + 1  # type: ignore[union-attr]


def test_a_release_that_does_not_name_the_key_is_refused(tmp_path: Path) -> None:
    feed = Feed(folder=tmp_path / "feed", work=tmp_path / "work")
    feed.release("1.1.0")
    with pytest.raises(FeedError, match=r"does not name rollout key .*--rollout-key"):
        start(feed, minisign.SecretKey.generate(), plan(), Fleet(), Clock(), [])
    assert not (feed.folder / rollout.DOCUMENT).exists()


@pytest.mark.parametrize(("change", "problem"), [
    ({"steps": [50, 10, 100]}, "steps must grow"),
    ({"steps": [10, 50]}, "the last step must be 100"),
    ({"soak": "ten minutes"}, "soak"),
    ({"gate": [{"name": "g", "query": "up{job=\"$job\"}", "max": 0}]}, "only $app and $version"),
    ({"on_fail": "panic"}, "on_fail"),
])
def test_a_bad_plan_is_refused_naming_the_problem(tmp_path: Path, change: dict[str, Any],
                                                  problem: str) -> None:
    base: dict[str, Any] = {"version": "1.1.0", "steps": [10, 50, 100], "soak": "60s",
                            "gate": [{"name": "g", "query": GATE, "max": 0}]}
    base.update(change)
    lines = []
    for k, v in base.items():
        if k != "gate":
            lines.append(f"{k} = {v!r}".replace("'", '"'))
    for g in base["gate"]:
        lines += ["[[gate]]", f"name = {g['name']!r}", f"query = '{g['query']}'",
                  f"max = {g['max']}"]
    path = tmp_path / "plan.toml"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(FeedError, match=problem.replace("$", r"\$")):
        controller.load_plan(path)


def test_by_hand_halt_resume_recall_status_and_resign(
        guarded_feed: tuple[Feed, minisign.SecretKey], tmp_path: Path) -> None:
    feed, key = guarded_feed
    key_file = tmp_path / "rollout.key"
    key_file.write_text(key.to_file())

    def cli(*args: str) -> str:
        r = run_updaterd("rollout", *args, "--feed", feed.folder,
                         *(["--key", key_file] if args[0] != "status" else []))
        assert r.returncode == 0, r.stderr
        return r.stdout

    assert "none yet; guarded releases reach no host" in cli("status")
    assert json.loads(cli("status", "--json")) is None
    assert cli("resume", "1.1.0", "--share", "5").strip() == "1.1.0: active at 5%"
    assert cli("halt", "1.1.0", "--why", "looking into #42").strip() == \
        "1.1.0: halted at 5%: looking into #42"
    assert cli("recall", "1.1.0", "--why", "bad").strip() == "1.1.0: recalled at 5%: bad"
    out = cli("status")
    assert "rollout.json serial 3" in out and "1.1.0  recalled  5%" in out and ": bad" in out
    doc = json.loads(cli("status", "--json"))
    assert (doc["serial"], doc["expired"], doc["app"]) == (3, False, "hello")
    entry = doc["releases"]["1.1.0"]
    assert (entry["share"], entry["state"], entry["why"]) == (5, "recalled", "bad")
    assert doc["expires"].endswith("Z") and entry["since"].endswith("Z"), doc
    assert "serial 4" in cli("resign")
    r = run_updaterd("rollout", "halt", "1.1.0", "--feed", feed.folder, "--key", feed.key)
    assert r.returncode == 1 and "does not name rollout key" in r.stderr, r.stderr


def test_i166_no_share_is_signed_before_min_hosts_report_their_place(
        guarded_feed: tuple[Feed, minisign.SecretKey]) -> None:
    feed, key = guarded_feed
    fleet, clock, said = Fleet(places=[4, 9]), Clock(), []

    class Enough(Exception):
        pass

    def hosts_check_in(now: float) -> None:
        if now - clock_start > 5:
            fleet.places = [4, 9, 20]
        if shares_signed():
            raise Enough

    def shares_signed() -> bool:
        return controller.read(feed.folder) is not None

    clock_start = clock.now
    clock.on_sleep = hosts_check_in
    with pytest.raises(Enough):
        start(feed, key, plan(), fleet, clock, said)
    assert said[0] == "1.1.0: holding (no widening): 2 hosts report their place in this " \
                      "rollout; the plan wants 3 in its first share"
    assert shares(feed)[0] == 21 and clock.now - clock_start > 5


def test_i166_the_first_share_waits_for_every_host_to_check_in(
        guarded_feed: tuple[Feed, minisign.SecretKey]) -> None:
    feed, key = guarded_feed
    clock, said = Clock(), []
    clock_start = clock.now

    class CheckingIn(Fleet):
        """Only the hosts with the highest places have checked since the publish."""

        def query(self, promql: str) -> list[tuple[dict[str, str], float]]:
            late = clock.now - clock_start < 5
            if promql.startswith("count(updaterd_last_check"):
                return [({}, 3.0 if late else 6.0)]
            if promql.startswith("updaterd_rollout_place"):
                return [({}, float(p)) for p in ([50, 60, 70] if late else
                                                 [3, 7, 9, 50, 60, 70])]
            return super().query(promql)

    class Enough(Exception):
        pass

    def stop_once_signed(now: float) -> None:
        if controller.read(feed.folder) is not None:
            raise Enough

    clock.on_sleep = stop_once_signed
    with pytest.raises(Enough):
        start(feed, key, plan(), CheckingIn(places=[0] * 6), clock, said)
    assert said[0] == "1.1.0: holding (no widening): 3 of 6 hosts checked the feed since the " \
                      "release was published; waiting for their places in the rollout", said
    assert shares(feed)[0] == 10, "the three lowest places, 3 7 9, not the first to report"


def test_a_halt_by_hand_stops_a_running_controller_and_is_never_overwritten(
        guarded_feed: tuple[Feed, minisign.SecretKey]) -> None:
    """An operator's `rollout halt` while `run` soaks: the controller must not sign the next
    step over it (it reads rollout.json again every turn, and writes under a lock)."""
    feed, key = guarded_feed
    fleet, clock, said = Fleet(on_release=60), Clock(), []
    began = clock.now

    def operator_halts(now: float) -> None:
        if now - began > 30 and shares(feed)[1] == "active":
            controller.set_state(feed.folder, key, "1.1.0", "halted", "looking into it")

    clock.on_sleep = operator_halts
    with pytest.raises(controller.Halted, match=r"halted at 10% by hand: looking into it"):
        start(feed, key, plan(), fleet, clock, said)
    assert shares(feed) == (10, "halted", "looking into it")


def test_two_controllers_of_one_feed_never_lose_each_others_entries(
        guarded_feed: tuple[Feed, minisign.SecretKey]) -> None:
    import threading

    feed, key = guarded_feed
    feed.release("1.2.0", rollout_keys=[key.public.to_base64()])
    from datetime import UTC, datetime

    def writes(version: str) -> None:
        for share in range(1, 41):
            now = datetime.now(UTC)
            controller.change(feed.folder, key, version, lambda _old, share=share, now=now:
                              RolloutEntry(share=share, state="active", since=now),
                              expires="1h", now=now)

    threads = [threading.Thread(target=writes, args=(v,)) for v in ("1.1.0", "1.2.0")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    doc = controller.read(feed.folder)
    assert doc is not None and doc.serial == 80
    assert {v: e.share for v, e in doc.releases.items()} == {"1.1.0": 40, "1.2.0": 40}


def test_a_yanked_release_is_not_rolled_out(guarded_feed: tuple[Feed, minisign.SecretKey]) -> None:
    feed, key = guarded_feed
    r = run_updaterd("feed", "yank", "--feed", feed.folder, "--key", feed.key, "1.1.0", "--why",
                     "bad")
    assert r.returncode == 0, r.stderr
    with pytest.raises(FeedError, match=r"1\.1\.0 is yanked"):
        start(feed, key, plan(), Fleet(), Clock(), [])


def test_a_bad_plan_exits_2_before_anything_is_read_or_signed(tmp_path: Path) -> None:
    plan_file = tmp_path / "plan.toml"
    plan_file.write_text('version = "1.1.0"\nsteps = [50, 10, 100]\nsoak = "1m"\n[[gate]]\n'
                         'name = "g"\nquery = "up"\nmax = 0\n')
    r = run_updaterd("rollout", "run", "--feed", tmp_path, "--key", tmp_path / "no.key",
                     "--plan", plan_file, "--prometheus", "http://127.0.0.1:9")
    assert r.returncode == 2 and "steps must grow" in r.stderr, r.stderr


def test_only_checks_from_the_second_after_the_publish_count_as_checked_in(
        guarded_feed: tuple[Feed, minisign.SecretKey]) -> None:
    """The manifest's `published` has whole seconds: a check in that same second may have read
    the feed before the release was in it (the fleet suite met it: a host without a place
    counted as checked in, and the first share held one host more than min_hosts)."""
    feed, key = guarded_feed
    published = controller.feedtools.load(feed.folder).release("1.1.0").published  # type: ignore[union-attr]
    fleet, clock = Fleet(failures=1), Clock()
    with pytest.raises(controller.Halted):
        start(feed, key, plan(), fleet, clock, [])
    checked = [q for q in fleet.asked if q.startswith("count(updaterd_last_check")]
    assert checked and all(q.endswith(f"> {published.timestamp() + 1:.3f})") for q in checked)


def test_feed_guard_and_publish_rollout_key_name_the_key_and_say_so(tmp_path: Path) -> None:
    feed = Feed(folder=tmp_path / "feed", work=tmp_path / "work")
    feed.release("1.0.0")
    r = run_updaterd("keygen", "--out", tmp_path / "rollout")
    assert r.returncode == 0, r.stderr
    pub = tmp_path / "rollout.pub"
    key = minisign.PublicKey.parse(pub.read_text())

    def guard(*extra: str) -> str:
        r = run_updaterd("feed", "guard", "--feed", feed.folder, "--key", feed.key,
                         "--rollout-key", pub, *extra, "1.0.0")
        assert r.returncode == 0, r.stderr
        return r.stdout

    before = (feed.folder / "manifest.json").read_bytes()
    assert "would" in guard("--dry-run")
    assert (feed.folder / "manifest.json").read_bytes() == before
    assert f"hello 1.0.0 is guarded by rollout key {key.id_hex}: hosts take it as " \
           "rollout.json allows" in guard()
    release = feedtools.load(feed.folder).release("1.0.0")
    assert release is not None and rollout.keys_of(release) == [key]
    assert "guarded by" not in guard(), "guarding twice changes nothing"
    listed = run_updaterd("feed", "list", "--feed", feed.folder).stdout
    assert f"guarded by rollout key {key.to_base64()}" in listed
    art = feed.work / "hello-1.1.0-linux-x86_64.tar.gz"
    make_tar(art, release_files("1.1.0"), top="hello-1.1.0")
    r = run_updaterd("publish", "--feed", feed.folder, "--key", feed.key, "--app", "hello",
                     "--version", "1.1.0", "--rollout-key", pub, art)
    assert r.returncode == 0, r.stderr
    assert f"  guarded by rollout key {key.to_base64()}: hosts take it as rollout.json " \
           "allows" in r.stdout
    new = feedtools.load(feed.folder).release("1.1.0")
    assert new is not None and rollout.keys_of(new) == [key]


def test_j184_hosts_sharing_a_machine_id_are_named_before_a_share_is_chosen(
        guarded_feed: tuple[Feed, minisign.SecretKey]) -> None:
    """Cloned images: three hosts report one rollout identity, two others another; the
    controller names them at each share it signs (they draw one place and move together)."""
    from updaterd import versions

    feed, key = guarded_feed
    same, other = versions.rollout_identity("cloned"), versions.rollout_identity("clone-2")
    fleet, clock, said = Fleet(), Clock(), []
    fleet.identities = [("h3:9137", same), ("h1:9137", same), ("h2:9137", same),
                        ("h4:9137", other), ("h5:9137", other),
                        ("h6:9137", versions.rollout_identity("own")), ("h7:9137", "")]
    clock.on_sleep = lambda now: setattr(fleet, "on_release", 50)
    start(feed, key, plan(), fleet, clock, said)
    named = [s for s in said if "share a rollout identity" in s]
    assert len(named) == 3  # once before each of the three shares it signed
    assert all(s.startswith("1.1.0: 5 hosts share a rollout identity with another (")
               for s in named), named[0]
    assert "h1:9137, h2:9137, h3:9137" in named[0] and "h4:9137, h5:9137" in named[0]
    assert "h6" not in named[0] and "h7" not in named[0]  # its own; no identity at all
    assert "systemd-machine-id-setup" in named[0] and "[daemon] host_id" in named[0]
    assert said.index(named[0]) < next(i for i, s in enumerate(said) if "share 10%" in s)


def test_j184_no_clones_no_word(guarded_feed: tuple[Feed, minisign.SecretKey]) -> None:
    feed, key = guarded_feed
    from updaterd import versions

    fleet, clock, said = Fleet(), Clock(), []
    fleet.identities = [(f"h{i}:9137", versions.rollout_identity(f"host-{i}"))
                        for i in range(50)]
    clock.on_sleep = lambda now: setattr(fleet, "on_release", 50)
    start(feed, key, plan(), fleet, clock, said)
    assert not [s for s in said if "rollout identity" in s]
    assert "updaterd_rollout_identity" in fleet.asked


def test_j184_the_identity_is_a_digest_not_the_machine_id() -> None:
    from updaterd import versions

    machine_id = "0123456789abcdef0123456789abcdef"
    ident = versions.rollout_identity(machine_id)
    assert len(ident) == 16 and machine_id[:8] not in ident
    assert ident == versions.rollout_identity(machine_id)
    assert ident != versions.rollout_identity(machine_id[:-1] + "0")


def test_going_on_after_a_hold_says_what_held_it(
        guarded_feed: tuple[Feed, minisign.SecretKey]) -> None:
    """Issue 38: "going on" alone left the on-call guessing what had changed."""
    feed, key = guarded_feed
    fleet, clock, said = Fleet(on_release=50), Clock(), []
    began = clock.now

    def prometheus_blinks(now: float) -> None:
        fleet.down = 30 < now - began < 40

    clock.on_sleep = prometheus_blinks
    start(feed, key, plan(), fleet, clock, said)
    held = said.index("1.1.0: holding (no widening): Prometheus at http://127.0.0.1:9 cannot "
                      "be asked: refused")
    assert said[held + 1] == ("1.1.0: going on: what held it is gone (Prometheus at "
                              "http://127.0.0.1:9 cannot be asked: refused)")
