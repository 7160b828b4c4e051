"""Rows 171, 172 and 176: the publisher's commands held to the daemon's standards. They never
read through a link or carry over bytes they did not parse, never sign again what does not
verify, and the rollout controller bounds what Prometheus tells it. The real `updaterd`
commands on real feed folders; Prometheus as a table of answers, and as a real HTTP server
that answers what each test gives it."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import pytest

from tests.helpers import Feed, run_updaterd
from tests.test_rollout_controller import Clock, Fleet, plan, shares, start
from updaterd.errors import FeedError
from updaterd.release import controller, feedfolder
from updaterd.release.controller import NoVerdict, Prometheus
from updaterd.trust import minisign, rollout


@pytest.fixture
def guarded(tmp_path: Path) -> tuple[Feed, minisign.SecretKey, Path]:
    feed = Feed(folder=tmp_path / "feed", work=tmp_path / "work")
    key = minisign.SecretKey.generate()
    feed.release("1.0.0")
    feed.release("1.1.0", rollout_keys=[key.public.to_base64()])
    key_file = tmp_path / "rollout.key"
    key_file.write_text(key.to_file())
    os.chmod(key_file, 0o600)
    return feed, key, key_file


def rollout_cli(feed: Feed, key_file: Path, *args: str) -> tuple[int, str]:
    r = run_updaterd("rollout", *args, "--feed", feed.folder, "--key", key_file)
    return r.returncode, r.stdout + r.stderr


def test_j171_a_signature_file_linked_to_the_secret_key_is_refused_and_the_key_never_copied(
        guarded: tuple[Feed, minisign.SecretKey, Path]) -> None:
    feed, _, key_file = guarded
    assert rollout_cli(feed, key_file, "resume", "1.1.0", "--share", "5")[0] == 0
    sig = feed.folder / rollout.SIGNATURE
    sig.unlink()
    sig.symlink_to(key_file)  # planted by someone who can write in the feed folder
    secret = key_file.read_bytes()
    code, out = rollout_cli(feed, key_file, "halt", "1.1.0", "--why", "x")
    assert code != 0 and f"{sig} is a symbolic link" in out, out
    everything = b"".join(p.read_bytes() for p in feed.folder.iterdir()
                          if p.is_file() and not p.is_symlink())
    assert secret.splitlines()[1] not in everything
    assert key_file.read_bytes() == secret and sig.is_symlink()
    # the manifest's own signature, and a feed folder that is a link, are refused as well
    (feed.folder / "manifest.json.minisig").rename(feed.work / "kept.minisig")
    (feed.folder / "manifest.json.minisig").symlink_to(feed.key)
    r = run_updaterd("feed", "resign", "--feed", feed.folder, "--key", feed.key)
    assert r.returncode != 0 and "manifest.json.minisig is a symbolic link" in r.stderr, \
        r.stderr
    linked = feed.work / "linked-feed"
    linked.symlink_to(feed.folder)
    r = run_updaterd("feed", "resign", "--feed", linked, "--key", feed.key)
    assert r.returncode != 0 and f"{linked} is a symbolic link" in r.stderr, r.stderr


def test_j171_a_feed_file_of_another_user_or_with_two_names_is_named_and_refused(
        guarded: tuple[Feed, minisign.SecretKey, Path]) -> None:
    feed, _, _ = guarded
    manifest = feed.folder / "manifest.json"
    os.chown(manifest, 65534, 65534)
    r = run_updaterd("feed", "resign", "--feed", feed.folder, "--key", feed.key)
    assert r.returncode != 0 and f"{manifest} belongs to uid 65534" in r.stderr, r.stderr
    os.chown(manifest, 0, 0)
    os.link(manifest, feed.work / "second-name")
    r = run_updaterd("feed", "resign", "--feed", feed.folder, "--key", feed.key)
    assert r.returncode != 0 and "has 2 names" in r.stderr, r.stderr
    (feed.work / "second-name").unlink()
    assert run_updaterd("feed", "resign", "--feed", feed.folder, "--key", feed.key) \
        .returncode == 0


def test_j171_only_blocks_that_parse_as_signatures_are_carried_over(
        guarded: tuple[Feed, minisign.SecretKey, Path]) -> None:
    feed, _, _ = guarded
    sig = feed.folder / "manifest.json.minisig"
    signed = sig.read_bytes()
    sig.write_bytes(b"untrusted comment: x\nRWQ-not-a-key\n" + signed + b"SECRET bytes\n\xff\n")
    assert feedfolder.signature_blocks(feed.folder, sig.name) == signed
    assert minisign.valid_blocks(b"\xff\xfe") == b""
    assert minisign.valid_blocks(signed * 20).count(b"untrusted comment") == \
        minisign.MAX_SIGNATURES


def test_j172_a_rollout_json_edited_by_hand_is_never_signed_again(
        guarded: tuple[Feed, minisign.SecretKey, Path]) -> None:
    feed, key, key_file = guarded
    assert rollout_cli(feed, key_file, "halt", "1.1.0", "--why", "looking")[0] == 0
    doc_path = feed.folder / rollout.DOCUMENT
    doc = json.loads(doc_path.read_text())
    doc["releases"]["1.1.0"].update(share=100, state="active")  # someone's edit
    doc_path.write_text(json.dumps(doc))
    for args in (["resign"], ["resume", "1.1.0"], ["recall", "1.1.0"]):
        code, out = rollout_cli(feed, key_file, *args)
        assert code != 0 and "does not verify" in out and "refusing to sign it again" in out, \
            (args, out)
    assert json.loads(doc_path.read_text()) == doc  # nothing laundered, nothing written
    fleet, clock, said = Fleet(), Clock(), []
    with pytest.raises(FeedError, match="does not verify"):  # nor by the controller
        start(feed, key, plan(), fleet, clock, said)
    # a document signed by a key the release does not name is no better than an edited one
    other = minisign.SecretKey.generate()
    (feed.folder / rollout.SIGNATURE).write_text(other.sign(doc_path.read_bytes(), "x"))
    with pytest.raises(FeedError, match="does not verify"):
        controller.resign(feed.folder, key, "1d", clock_now())


def clock_now() -> controller.datetime:
    return controller.datetime.now(controller.UTC)


class Enough(Exception):
    """Ends a controller run from its sleep."""


def stop_after(clock: Clock, seconds: float) -> None:
    began = clock.now

    def maybe_stop(now: float) -> None:
        if now - began > seconds:
            raise Enough

    clock.on_sleep = maybe_stop


def test_j176_a_place_outside_0_99_or_a_bad_count_never_widens(
        guarded: tuple[Feed, minisign.SecretKey, Path]) -> None:
    feed, key, _ = guarded
    for places in ([4, 150, 9], [4, 100], [4, -1], [4, 7.5], [4, float("inf")]):
        fleet, clock, said = Fleet(places=places), Clock(), []  # type: ignore[arg-type]
        stop_after(clock, 30)
        with pytest.raises(Enough):
            start(feed, key, plan(), fleet, clock, said)
        assert controller.read(feed.folder) is None, places  # nothing signed
        assert any("outside 0-99" in s for s in said), said
    fleet, clock, said = Fleet(on_release=-3), Clock(), []
    stop_after(clock, 30)
    with pytest.raises(Enough):
        start(feed, key, plan(), fleet, clock, said)
    assert controller.read(feed.folder) is None and any("not a number of hosts" in s
                                                        for s in said), said


def test_j176_a_raised_first_step_says_so_and_which_steps_it_skips(
        guarded: tuple[Feed, minisign.SecretKey, Path]) -> None:
    feed, key, _ = guarded
    fleet, clock, said = Fleet(places=[3, 40, 60, 80]), Clock(), []
    stop_after(clock, 0)
    with pytest.raises(Enough):
        start(feed, key, plan(steps=[5, 25, 50, 100]), fleet, clock, said)
    assert shares(feed)[0] == 61
    assert any("share 61% (step 1 of 4, raised from 5% so that 3 hosts take it (skipping "
               "25%, 50%))" in s for s in said), said


class _Canned(BaseHTTPRequestHandler):
    """A stand-in Prometheus answering each GET with the next (status, body) given."""

    answers: ClassVar[list[tuple[int, bytes]]] = []

    def do_GET(self) -> None:
        status, body = self.answers.pop(0)
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        return None


@pytest.fixture
def canned() -> Iterator[tuple[str, list[tuple[int, bytes]]]]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Canned)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02},
                              daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", _Canned.answers
    finally:
        server.shutdown()
        _Canned.answers.clear()


def success(data: dict[str, object]) -> tuple[int, bytes]:
    return 200, json.dumps({"status": "success", "data": data}).encode()


@pytest.mark.parametrize("data", [
    {"resultType": "vector", "result": [{"metric": {}, "value": [1]}]},
    {"resultType": "vector", "result": [{"metric": {}, "value": [1, "many"]}]},
    {"resultType": "vector", "result": [{"metric": [], "value": [1, "1"]}]},
    {"resultType": "vector", "result": ["x"]},
    {"resultType": "scalar", "result": "x"},
    {"resultType": "vector", "result": {"a": 1}},
])
def test_j176_a_malformed_sample_from_prometheus_is_no_verdict_never_a_traceback(
        canned: tuple[str, list[tuple[int, bytes]]], data: dict[str, object]) -> None:
    url, answers = canned
    answers.append(success(data))
    with pytest.raises(NoVerdict, match=r"malformed|not an instant"):
        Prometheus(url).query("up")


@pytest.mark.parametrize("data,samples", [
    ({"resultType": "vector", "result": [{"metric": {"app": "hello"}, "value": [1, "3"]},
                                         {"metric": {}, "value": [1, "NaN"]}]},
     [({"app": "hello"}, 3.0)]),
    ({"resultType": "vector", "result": []}, []),
    ({"resultType": "scalar", "result": [1, "0.5"]}, [({}, 0.5)]),
])
def test_j176_a_well_formed_answer_is_read(canned: tuple[str, list[tuple[int, bytes]]],
                                           data: dict[str, object],
                                           samples: list[tuple[dict[str, str], float]]) -> None:
    url, answers = canned
    answers.append(success(data))
    got = Prometheus(url).query("up")
    assert [(labels, v) for labels, v in got if v == v] == samples  # NaN != NaN


class Counts:
    """Prometheus answering counts and places as given."""

    def __init__(self, on: float, hosts: float, checked: float, places: list[float]) -> None:
        self.on, self.hosts, self.checked, self.places = on, hosts, checked, places

    def query(self, promql: str) -> list[tuple[dict[str, str], float]]:
        if promql.startswith('count(updaterd_app_info{app="hello",installed='):
            return [({}, self.on)]
        if promql.startswith("count(updaterd_app_info"):
            return [({}, self.hosts)]
        if promql.startswith("count(updaterd_last_check"):
            return [({}, self.checked)]
        return [({}, p) for p in self.places]


def test_j176_counts_are_bounded_to_a_number_of_hosts() -> None:
    big = controller.MAX_FLEET
    assert big == 10_000_000
    counted = controller.fleet(Counts(0, big, big, [5.0, float("nan"), 0.0, 99.0]),  # type: ignore
                               "hello", "1.1.0", 0.0)
    assert (counted.on_release, counted.hosts, counted.checked, counted.places) == \
        (0, big, big, [5, 0, 99])  # a host with no place yet (NaN) is passed over
    for bad in (big + 1, -1.0, 2.5, float("nan"), float("inf")):
        with pytest.raises(NoVerdict, match="not a number of hosts"):
            controller.fleet(Counts(0, bad, 1, []), "hello", "1.1.0", 0.0)  # type: ignore


def test_j176_more_hosts_checked_in_than_listed_is_no_reason_to_wait() -> None:
    """A host that left keeps its last check in Prometheus for a while: all listed hosts have
    checked in, so the share is chosen."""
    fleet = controller.Fleet(on_release=0, places=[10, 50, 90], hosts=3, checked=5)
    assert fleet.share_for(2, settled=False) == 51
    one_more = controller.Fleet(on_release=2, places=[30, 70], hosts=4, checked=4)
    assert one_more.share_for(3, settled=False) == 31  # one host more: the first place
    assert one_more.share_for(2, settled=False) == 1  # enough on it already
    last = controller.Fleet(on_release=0, places=[99], hosts=1, checked=1)
    assert last.share_for(1, settled=False) == 100  # the last place takes all of it
    with pytest.raises(NoVerdict, match="2 of 3 hosts checked the feed"):
        controller.Fleet(on_release=0, places=[10, 50], hosts=3, checked=2).share_for(
            2, settled=False)


@pytest.mark.parametrize("steps,said", [
    ('["5", 100]', "Expected `int`, got `str`"),  # a share written as text
    ("[5, 5, 100]", "steps must grow, each larger than the one before"),
])
def test_a_plan_whose_steps_are_not_growing_numbers_is_refused(tmp_path: Path, steps: str,
                                                               said: str) -> None:
    plan_file = tmp_path / "plan.toml"
    plan_file.write_text(f'version = "1.1.0"\nsteps = {steps}\nsoak = "1m"\n'
                         '[[gate]]\nname = "g"\nquery = "up"\nmax = 0\n')
    with pytest.raises(FeedError, match=said):
        controller.load_plan(plan_file)


@pytest.mark.parametrize("data,said", [
    ({"resultType": "matrix", "result": [{"metric": {}, "values": [[1, "1"]]}]},
     "the query returns a matrix, not an instant vector"),
    ({"resultType": "zeta", "result": []}, "the query returns a zeta, not an instant vector"),
])
def test_j176_an_answer_that_is_not_an_instant_vector_is_named(
        canned: tuple[str, list[tuple[int, bytes]]], data: dict[str, object],
        said: str) -> None:
    url, answers = canned
    answers.append(success(data))
    with pytest.raises(NoVerdict) as e:
        Prometheus(url).query("up")
    assert str(e.value) == said


def test_j176_an_answer_that_is_not_json_and_a_long_error_are_no_verdict_in_bounds(
        canned: tuple[str, list[tuple[int, bytes]]]) -> None:
    url, answers = canned
    answers.append((200, b"<html>a proxy's error page</html>"))
    with pytest.raises(NoVerdict, match=f"Prometheus at {url} cannot be asked"):
        Prometheus(url).query("up")
    answers.append(success({"resultType": "vector", "result": [
        {"metric": {}, "value": [1, "x" * 500]}]}))
    with pytest.raises(NoVerdict) as e:
        Prometheus(url).query("up")
    quoted = str(e.value).split("(ValueError: ", 1)[1].split("); nothing is judged", 1)[0]
    assert len(quoted) == 200 and quoted.startswith("could not convert string to float")


def test_j178_a_yanked_release_is_halted_and_recalled_but_never_resumed(
        guarded: tuple[Feed, minisign.SecretKey, Path]) -> None:
    feed, key, _ = guarded
    controller.set_state(feed.folder, key, "1.1.0", "active", "", share=50)
    r = run_updaterd("feed", "yank", "1.1.0", "--why", "bad", "--feed", feed.folder, "--key",
                     feed.key)
    assert r.returncode == 0, r.stderr
    for state in ("halted", "recalled"):
        said = controller.set_state(feed.folder, key, "1.1.0", state, "bad")  # type: ignore
        assert said == f"1.1.0: {state} at 50% (yanked too: bad): bad"
    with pytest.raises(FeedError, match="is yanked \\(bad\\): no rollout widens it"):
        controller.set_state(feed.folder, key, "1.1.0", "active", "")


def test_j176_a_refused_query_says_why_in_at_most_300_characters(
        canned: tuple[str, list[tuple[int, bytes]]]) -> None:
    url, answers = canned
    ok = {"status": "success", "data": {"resultType": "vector", "result": []}}
    answers += [
        (400, json.dumps({"status": "error", "error": "parse error at char 3"}).encode()),
        (200, json.dumps({"status": "error", "error": "e" * 500}).encode()),
        (503, b"x" * 500),
        (203, json.dumps(ok).encode()),  # success said, but not a 200: not Prometheus's
        (200, json.dumps({**ok, "status": "warnings"}).encode())]
    with pytest.raises(NoVerdict) as e:
        Prometheus(url).query("up(")
    assert str(e.value) == "Prometheus refused the query (400): parse error at char 3"
    with pytest.raises(NoVerdict) as e:
        Prometheus(url).query("up")
    assert str(e.value) == "Prometheus refused the query (200): " + "e" * 300
    with pytest.raises(NoVerdict, match=f"Prometheus at {url} cannot be asked"):
        Prometheus(url).query("up")  # not JSON at all
    for status in (203, 200):
        with pytest.raises(NoVerdict, match=f"Prometheus refused the query \\({status}\\)"):
            Prometheus(url).query("up")


def test_by_hand_what_is_said_and_signed_at_its_edges(
        guarded: tuple[Feed, minisign.SecretKey, Path]) -> None:
    """A halt before any step holds the release at 0%; a share equal to the manifest's is no
    cap to speak of; a reason is kept to 500 characters, as hosts accept it."""
    feed, key, _ = guarded
    assert controller.set_state(feed.folder, key, "1.1.0", "halted", "") == \
        "1.1.0: halted at 0%"
    assert controller.set_state(feed.folder, key, "1.1.0", "active", "", share=100) == \
        "1.1.0: active at 100%"
    controller.set_state(feed.folder, key, "1.1.0", "halted", "w" * 600)
    doc = controller.read(feed.folder)
    assert doc is not None and doc.releases["1.1.0"].why == "w" * 500
