"""rollout.json as a host checks it (trust/rollout.py), at its edges: its size, its signature,
its schema, its clock, its replay mark, which keys a release names, and what a halt or a recall
says. Bytes in, verdict out; two through the engine on the FeedSimulator."""

from __future__ import annotations

import dataclasses
import json
import re
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from tests.simulator import FeedSimulator, SimHost
from tests.test_rollout import Guarded, run
from updaterd.errors import FeedError
from updaterd.trust import feed, minisign, rollout
from updaterd.trust.feed import Artifact, Release, RolloutDoc, RolloutEntry, RolloutMark

NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
KEY = minisign.SecretKey.generate()
OTHER = minisign.SecretKey.generate()


def document(**over: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {"schema": 1, "app": "hello", "serial": 5,
                           "expires": "2026-12-08T12:00:00Z",
                           "releases": {"1.1.0": {"share": 50, "state": "active",
                                                  "since": "2026-12-07T11:00:00Z"}}}
    doc.update(over)
    return doc


def signed(raw: bytes, *keys: minisign.SecretKey) -> bytes:
    return b"".join(k.sign(raw, "t").encode() for k in (keys or (KEY,)))


def verify(raw: bytes, sig: bytes | None = None, keys: list[minisign.PublicKey] | None = None,
           mark: RolloutMark | None = None, now: datetime = NOW) -> rollout.Accepted:
    return rollout.verify(raw, signed(raw) if sig is None else sig,
                          keys if keys is not None else [KEY.public], app="hello", mark=mark,
                          cycle_start=now)


def raw_of(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc).encode()


def test_a_document_without_its_signature_is_refused_by_name() -> None:
    with pytest.raises(FeedError, match=r"rollout\.json: signature is missing"):
        rollout.verify(raw_of(document()), None, [KEY.public], app="hello", mark=None,
                       cycle_start=NOW)
    with pytest.raises(FeedError, match=r"rollout\.json is missing"):
        rollout.verify(None, None, [KEY.public], app="hello", mark=None, cycle_start=NOW)


@pytest.mark.parametrize("raw,why", [
    (b'{"schema": 1, "schema": 1, "app": "hello", "serial": 5, "expires": '
     b'"2026-12-08T12:00:00Z"}', "has the key 'schema' twice"),
    (raw_of(document(releases={"1.1.0": {"share": "50", "since": "2026-12-07T11:00:00Z"}})),
     "Expected `int`, got `str`"),
    (raw_of(document(app="other")), "is for app 'other', not 'hello'"),
    (raw_of(document(app="aaa")), "is for app 'aaa', not 'hello'"),
    (raw_of(document(releases={"../x": {"share": 5, "since": "2026-12-07T11:00:00Z"}})),
     "names a version '../x' that is not a safe name"),
    (raw_of(document(releases={"1.1.0": {"share": 101, "since": "2026-12-07T11:00:00Z"}})),
     "does not match schema 1"),
    (raw_of(document(extra=1)), "does not match schema 1"),
])
def test_a_document_is_refused_for_each_fault_with_its_reason(raw: bytes, why: str) -> None:
    with pytest.raises(FeedError, match=re.escape(why)):
        verify(raw)


def test_expires_is_taken_at_its_real_instant_and_a_document_expiring_now_is_expired() -> None:
    naive = raw_of(document(expires="2026-12-07T12:00:01"))  # no offset: UTC
    assert verify(naive).doc.expires.replace(tzinfo=UTC) == NOW + timedelta(seconds=1)
    with pytest.raises(FeedError, match="expired at 2026-12-07T12:00:01"):
        verify(naive, now=NOW + timedelta(seconds=1))
    plus_two = raw_of(document(expires="2026-12-07T13:30:00+02:00"))  # 11:30 UTC
    with pytest.raises(FeedError, match="expired"):
        verify(plus_two)
    assert verify(plus_two, now=NOW - timedelta(minutes=31)).doc.expires == \
        datetime(2026, 12, 7, 13, 30, tzinfo=timezone(timedelta(hours=2)))
    at_start = raw_of(document(expires="2026-12-07T12:00:00Z"))
    with pytest.raises(FeedError, match="expired"):
        verify(at_start)  # equal to the cycle's start: expired


def test_the_replay_mark_holds_for_the_same_keys_and_restarts_with_new_ones() -> None:
    raw = raw_of(document(serial=5))
    mark = verify(raw).mark
    assert verify(raw, mark=mark).mark == mark  # the same bytes again: fine
    with pytest.raises(FeedError, match="serial 4 is below 5 already seen"):
        verify(raw_of(document(serial=4)), mark=mark)
    with pytest.raises(FeedError, match="serial 5 was seen before with different content"):
        verify(raw_of(document(serial=5, releases={})), mark=mark)
    # the mark of other keys binds nothing, whichever way their fingerprints sort
    for other_keys in ("0" * 64, "f" * 64):
        foreign = RolloutMark(keys=other_keys, serial=99, digest="x")
        assert verify(raw_of(document(serial=5)), mark=foreign).doc.serial == 5
    # a new rollout key: the mark of the old keys does not bind it
    lower = raw_of(document(serial=1))
    accepted = verify(lower, signed(lower, OTHER), keys=[OTHER.public], mark=mark)
    assert accepted.mark.serial == 1 and accepted.mark.keys != mark.keys


def test_of_two_declared_keys_that_sign_the_first_block_that_verifies_is_the_signer() -> None:
    raw = raw_of(document())
    both = [KEY.public, OTHER.public]
    assert verify(raw, signed(raw, OTHER, KEY), keys=both).signer == OTHER.public
    assert verify(raw, signed(raw, KEY, OTHER), keys=both).signer == KEY.public
    forged = minisign.SecretKey.generate()
    assert verify(raw, signed(raw, forged, KEY), keys=both).signer == KEY.public


def _release(*artifacts: Artifact) -> Release:
    return Release(version="1.1.0", published=NOW, rollout=80, artifacts=list(artifacts))


def test_only_rollout_key_entries_with_their_prefix_name_a_key() -> None:
    good = rollout.marker(KEY.public)
    unprefixed = Artifact(platform=rollout.PLATFORM, url=good.url.removeprefix("rollout-key."),
                          size=0, sha256=good.sha256)
    other_platform = Artifact(platform="linux-x86_64", url=good.url, size=0,
                              sha256=good.sha256)
    garbled = Artifact(platform=rollout.PLATFORM, url="rollout-key.not-a-key", size=0,
                       sha256=good.sha256)
    assert rollout.keys_of(_release(good)) == [KEY.public]
    first = Artifact(platform="linux-x86_64", url="a.tar.gz", size=1, sha256="0" * 64)
    second = rollout.marker(OTHER.public)
    assert rollout.keys_of(_release(first, garbled, good, second)) == [KEY.public, OTHER.public]
    assert rollout.keys_of(_release(unprefixed, other_platform, garbled)) == []
    assert rollout.is_guarded(_release(garbled))  # meant to be guarded: held, never widened
    assert not rollout.is_guarded(_release(other_platform))
    after = Artifact(platform="zos-s390x", url=good.url, size=0, sha256=good.sha256)
    assert rollout.keys_of(_release(after)) == []  # a platform sorting after it is a platform
    assert not rollout.is_guarded(_release(after))
    assert good.size == 0  # a marker holds no bytes


def test_a_halt_or_a_recall_given_no_reason_says_so_plainly() -> None:
    release = _release(rollout.marker(KEY.public))

    def governed(state: str, why: str = "") -> rollout.Governed:
        doc = RolloutDoc(schema=1, app="hello", serial=1, expires=NOW, releases={
            "1.1.0": RolloutEntry(share=90, state=state, since=NOW, why=why)})  # type: ignore
        return rollout.govern(release, doc, KEY.public.to_base64(), None)

    assert governed("halted") == rollout.Governed(0, held="rollout halted at 80%")
    assert governed("halted", "looking") == rollout.Governed(0, held="rollout halted at 80%: "
                                                                     "looking")
    assert governed("recalled") == rollout.Governed(0, held="recalled by its rollout",
                                                    recalled="recalled by its rollout")
    assert governed("recalled", "bad") == rollout.Governed(0, held="recalled by its rollout: "
                                                                   "bad", recalled="bad")
    assert governed("active") == rollout.Governed(80)  # never above the manifest's
    other = rollout.govern(release, governed_doc(), OTHER.public.to_base64(), None)
    assert other.share == 0 and "has not started" in (other.held or "")
    missing = rollout.govern(release, None, None, "rollout.json is missing")
    assert missing.share == 0 and rollout.govern(release, None, None, None).share == 0
    with pytest.raises(dataclasses.FrozenInstanceError):  # a verdict is not changed later
        missing.share = 100  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        verify(raw_of(document())).doc = None  # type: ignore[misc]
    assert missing.held == "guarded by a rollout key, and rollout.json is missing; no new host " \
                           "takes it"


def governed_doc() -> RolloutDoc:
    return RolloutDoc(schema=1, app="hello", serial=1, expires=NOW, releases={
        "1.1.0": RolloutEntry(share=90, since=NOW)})


# -- through the engine ------------------------------------------------------------------------


@pytest.fixture
def host(tmp_path: Path, sim: FeedSimulator) -> SimHost:
    return SimHost(tmp_path, sim)


def on_1_0_0_with_1_1_0_guarded(host: SimHost, sim: FeedSimulator) -> tuple[Guarded, Any]:
    guarded = Guarded(sim)
    sim.release("1.0.0")
    engine = host.engine()
    run(lambda: engine.update("hello"))
    guarded.release("1.1.0")
    return guarded, engine


def padded_to(guarded: Guarded, size: int) -> None:
    """Serve a valid rollout.json of exactly `size` bytes (trailing spaces), signed."""
    guarded.serial += 1
    doc = RolloutDoc(schema=1, app="hello", serial=guarded.serial,
                     expires=datetime.now(UTC) + timedelta(hours=1),
                     releases={"1.1.0": RolloutEntry(share=100, since=datetime.now(UTC))})
    raw = feed.encode(doc)
    raw += b" " * (size - len(raw))
    assert len(raw) == size
    guarded.sim.documents[rollout.DOCUMENT] = raw
    guarded.sim.documents[rollout.SIGNATURE] = guarded.key.sign(raw, "t").encode()


def test_a_document_of_exactly_64_kib_is_read_and_one_byte_more_is_refused(
        host: SimHost, sim: FeedSimulator) -> None:
    guarded, engine = on_1_0_0_with_1_1_0_guarded(host, sim)
    padded_to(guarded, rollout.MAX_DOCUMENT + 1)
    assert run(lambda: engine.update("hello")).result == "up_to_date"
    assert engine.load_state("hello").passed_over["1.1.0"] == \
        "guarded by a rollout key, and rollout.json: more than 65536 bytes; no new host takes it"
    padded_to(guarded, rollout.MAX_DOCUMENT)
    assert run(lambda: engine.update("hello")).to_version == "1.1.0"


def test_a_document_served_without_its_signature_holds_guarded_releases(
        host: SimHost, sim: FeedSimulator) -> None:
    guarded, engine = on_1_0_0_with_1_1_0_guarded(host, sim)
    guarded.steer({"1.1.0": (100, "active")})
    del sim.documents[rollout.SIGNATURE]
    assert run(lambda: engine.update("hello")).result == "up_to_date"
    st = engine.load_state("hello")
    assert "rollout.json: signature is missing" in st.passed_over["1.1.0"], st.passed_over
    assert host.current() == "1.0.0"
