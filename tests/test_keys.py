"""Key rotation decisions, in-process and fast (the end-to-end rows are in
tests/security/test_keys_rows.py; `make mutate` runs these against mutants of keys.py)."""

from __future__ import annotations

import json
from typing import Any

import pytest
import trio

from updaterd.errors import FeedError
from updaterd.host.config import AppConfig
from updaterd.host.state import AppState, TrustRoot
from updaterd.sources import keys
from updaterd.trust import minisign

K = [minisign.SecretKey.generate() for _ in range(5)]


def b64(k: minisign.SecretKey) -> str:
    return k.public.to_base64()


def cfg(*signers: minisign.SecretKey, threshold: int = 1,
        verify: str = "required") -> AppConfig:
    return AppConfig(source="directory", path="/x", prefix="/opt/x", threshold=threshold,
                     public_keys=[b64(k) for k in signers], verify=verify)  # type: ignore[arg-type]


def doc(version: int, new: list[minisign.SecretKey], *, threshold: int = 1, app: str = "x",
        **extra: Any) -> bytes:
    return json.dumps({"schema": 1, "app": app, "version": version,
                       "keys": [b64(k) for k in new], "threshold": threshold,
                       **extra}).encode()


def signed(raw: bytes, *by: minisign.SecretKey) -> tuple[bytes, bytes]:
    return raw, "".join(k.sign(raw, "t") for k in by).encode()


def test_an_accepted_rotation_replaces_the_keys_and_resets_the_serial() -> None:
    state = AppState(serial=9, manifest_digest="d", etag="e", last_modified="m")
    assert keys.apply("x", cfg(K[0]), state, *signed(doc(1, [K[1]]), K[0], K[1]))
    assert state.trust == TrustRoot(origin=keys.origin_of(cfg(K[0])), version=1,
                                    keys=[b64(K[1])], threshold=1)
    assert (state.serial, state.manifest_digest, state.etag, state.last_modified) == \
        (None, None, None, None)
    now = keys.in_use(cfg(K[0]), state)
    assert (now.version, now.threshold, [k.raw for k in now.keys]) == (1, 1, [K[1].public.raw])


@pytest.mark.parametrize("version", [1, 0])
def test_a_rotation_not_newer_than_the_keys_in_use_changes_nothing(version: int) -> None:
    state = AppState()
    keys.apply("x", cfg(K[0]), state, *signed(doc(1, [K[1]]), K[0], K[1]))
    before = state.trust
    raw = doc(version, [K[2]]) if version else json.dumps(
        {"schema": 1, "app": "x", "version": 1, "keys": [b64(K[2])]}).encode()
    assert not keys.apply("x", cfg(K[0]), state, *signed(raw, K[1], K[2]))
    assert state.trust == before


def test_the_new_threshold_may_equal_but_not_exceed_the_distinct_new_keys() -> None:
    state = AppState()
    assert keys.apply("x", cfg(K[0]), state,
                      *signed(doc(1, [K[1], K[2]], threshold=2), K[0], K[1], K[2]))
    with pytest.raises(FeedError, match="threshold 3 is more than its distinct keys"):
        keys.apply("x", cfg(K[0]), AppState(),
                   *signed(doc(1, [K[1], K[2], K[1]], threshold=3), K[0], K[1], K[2]))


def test_the_new_keys_must_meet_their_own_threshold() -> None:
    with pytest.raises(FeedError, match="version 1: not signed by its own new keys"):
        keys.apply("x", cfg(K[0]), AppState(),
                   *signed(doc(1, [K[1], K[2]], threshold=2), K[0], K[1]))


def test_the_keys_in_use_must_meet_their_threshold() -> None:
    two = cfg(K[0], K[1], threshold=2)
    with pytest.raises(FeedError, match=r"not signed by the keys in use \(version 0\)"):
        keys.apply("x", two, AppState(), *signed(doc(1, [K[2]]), K[0], K[2]))
    assert keys.apply("x", two, AppState(), *signed(doc(1, [K[2]]), K[0], K[1], K[2]))


@pytest.mark.parametrize("change", [
    {"version": 0}, {"version": 2**31 + 1}, {"keys": []}, {"threshold": 0}, {"threshold": 17},
    {"schema": 2}, {"surprise": True}, {"keys": ["RWQ"] * 17}])
def test_the_schema_is_strict(change: dict[str, Any]) -> None:
    body = json.loads(doc(1, [K[1]]))
    body.update(change)
    raw = json.dumps(body).encode()
    with pytest.raises(FeedError, match=r"keys\.json does not match schema 1"):
        keys.apply("x", cfg(K[0]), AppState(), *signed(raw, K[0], K[1]))


def test_the_largest_version_and_sixteen_keys_are_accepted() -> None:
    raw = doc(2**31, [K[1]] + [K[2]] * 15)
    assert keys.apply("x", cfg(K[0]), AppState(), *signed(raw, K[0], K[1]))


def test_text_that_is_not_json_is_named() -> None:
    with pytest.raises(FeedError, match=r"keys\.json is not valid JSON"):
        keys.apply("x", cfg(K[0]), AppState(), *signed(b"{", K[0]))


def test_a_key_that_does_not_parse_is_named() -> None:
    raw = json.dumps({"schema": 1, "app": "x", "version": 1, "keys": ["RWQbad"]}).encode()
    with pytest.raises(FeedError, match=r"keys\.json version 1: "):
        keys.apply("x", cfg(K[0]), AppState(), *signed(raw, K[0]))
    stored = AppState(trust=TrustRoot(origin=keys.origin_of(cfg(K[0])), version=3,
                                      keys=["RWQbad"], threshold=1))
    with pytest.raises(FeedError, match="stored key set: "):
        keys.in_use(cfg(K[0]), stored)


def test_origin_depends_on_the_keys_and_threshold_not_their_order() -> None:
    assert keys.origin_of(cfg(K[0], K[1])) == keys.origin_of(cfg(K[1], K[0]))
    assert keys.origin_of(cfg(K[0], K[1])) != keys.origin_of(cfg(K[0], K[1], threshold=2))
    assert keys.origin_of(cfg(K[0])) != keys.origin_of(cfg(K[1]))
    assert len(keys.origin_of(cfg(K[0]))) == 64


def test_versioned_names() -> None:
    assert keys.versioned(7) == "keys-7.json"


# -- refresh: following the feed's rotations ------------------------------------------------------

class FeedDocs:
    """The rotation documents a feed serves, and which were asked for."""

    def __init__(self, docs: dict[str, tuple[bytes, bytes]]) -> None:
        self.docs, self.asked = docs, []  # type: list[str]

    async def fetch(self, name: str) -> tuple[bytes, bytes | None] | None:
        self.asked.append(name)
        return self.docs.get(name)


def chain(length: int) -> dict[str, tuple[bytes, bytes]]:
    """keys-1 .. keys-N, each signed by the previous key and its own (a fresh key per version,
    K[0] first); keys.json is the last."""
    chain_keys = [K[0]] + [minisign.SecretKey.generate() for _ in range(length)]
    docs = {}
    for v in range(1, length + 1):
        docs[keys.versioned(v)] = signed(doc(v, [chain_keys[v]]), chain_keys[v - 1],
                                         chain_keys[v])
    docs[keys.KEYS] = docs[keys.versioned(length)]
    return docs


def refresh(config: AppConfig, state: AppState, feed: FeedDocs) -> None:
    trio.run(keys.refresh, "x", config, state, feed.fetch)


def test_a_host_that_missed_rotations_walks_them_one_by_one() -> None:
    state, feed = AppState(), FeedDocs(chain(3))
    refresh(cfg(K[0]), state, feed)
    assert state.trust is not None and state.trust.version == 3
    assert feed.asked == ["keys.json", "keys-1.json", "keys-2.json"]  # keys.json read once


def test_refresh_does_nothing_without_keys_or_with_verify_skip_or_without_keys_json() -> None:
    for config in (cfg(), cfg(K[0], verify="skip")):
        feed = FeedDocs(chain(1))
        refresh(config, AppState(), feed)
        assert feed.asked == []
    feed, state = FeedDocs({}), AppState()
    refresh(cfg(K[0]), state, feed)
    assert feed.asked == ["keys.json"] and state.trust is None


def test_a_missing_step_stops_the_walk_and_keeps_the_keys(caplog: pytest.LogCaptureFixture) \
        -> None:
    docs = chain(3)
    del docs["keys-2.json"]
    state, feed = AppState(), FeedDocs(docs)
    refresh(cfg(K[0]), state, feed)
    assert state.trust is not None and state.trust.version == 1
    assert "not signed by the keys in use (version 1)" in caplog.text


def test_a_bad_step_stops_the_walk(caplog: pytest.LogCaptureFixture) -> None:
    docs = chain(3)
    docs["keys-2.json"] = signed(doc(2, [K[2]]), K[3], K[2])  # not signed by version 1's key
    state = AppState()
    refresh(cfg(K[0]), state, FeedDocs(docs))
    assert state.trust is not None and state.trust.version == 1
    assert "keys.json: not signed by the keys in use (version 1)" in caplog.text


def test_a_step_that_is_not_newer_stops_the_walk(caplog: pytest.LogCaptureFixture) -> None:
    docs = chain(3)
    docs["keys-2.json"] = docs["keys-1.json"]
    state = AppState()
    refresh(cfg(K[0]), state, FeedDocs(docs))
    assert state.trust is not None and state.trust.version == 1
    assert "not signed by the keys in use" in caplog.text


def test_at_most_max_steps_rotations_in_one_check(caplog: pytest.LogCaptureFixture) -> None:
    state, feed = AppState(), FeedDocs(chain(keys.MAX_STEPS + 2))
    refresh(cfg(K[0]), state, feed)
    assert state.trust is not None and state.trust.version == keys.MAX_STEPS
    assert f"more than {keys.MAX_STEPS} key rotations at once" in caplog.text
    docs = chain(keys.MAX_STEPS + 2)
    state = AppState()
    refresh(cfg(K[0]), state, FeedDocs(docs))
    refresh(cfg(K[0]), state, FeedDocs(docs))
    assert state.trust is not None and state.trust.version == keys.MAX_STEPS + 2


def test_the_latest_rotation_alone_is_enough_when_the_keys_in_use_signed_it() -> None:
    docs = {keys.KEYS: signed(doc(5, [K[1]]), K[0], K[1])}
    state, feed = AppState(), FeedDocs(docs)
    refresh(cfg(K[0]), state, feed)
    assert state.trust is not None and state.trust.version == 5 and feed.asked == ["keys.json"]


# -- the edges (each of these kills a mutant the tests above let live) ---------------------------

def test_an_older_rotation_than_the_keys_in_use_changes_nothing() -> None:
    state = AppState()
    assert keys.apply("x", cfg(K[0]), state, *signed(doc(2, [K[1]]), K[0], K[1]))
    assert not keys.apply("x", cfg(K[0]), state, *signed(doc(1, [K[2]]), K[1], K[2]))
    assert state.trust is not None and state.trust.version == 2


@pytest.mark.parametrize("other", ["a", "zzz"])
def test_a_rotation_for_another_app_is_refused_whatever_the_names(other: str) -> None:
    with pytest.raises(FeedError, match=f"keys.json is for app '{other}', not 'x'"):
        keys.apply("x", cfg(K[0]), AppState(), *signed(doc(1, [K[1]], app=other), K[0], K[1]))


def test_a_mistyped_version_is_refused_not_coerced() -> None:
    body = json.loads(doc(1, [K[1]]))
    body["version"] = "2"
    with pytest.raises(FeedError, match="does not match schema 1"):
        keys.apply("x", cfg(K[0]), AppState(), *signed(json.dumps(body).encode(), K[0], K[1]))


def test_without_a_threshold_the_new_set_needs_one_signature() -> None:
    raw = json.dumps({"schema": 1, "app": "x", "version": 1,
                      "keys": [b64(K[1]), b64(K[2])]}).encode()
    state = AppState()
    assert keys.apply("x", cfg(K[0]), state, *signed(raw, K[0], K[1]))
    assert state.trust is not None and state.trust.threshold == 1


def test_a_threshold_of_sixteen_is_the_most() -> None:
    # a signature file holds at most 16 blocks: the old key must be one of the sixteen
    sixteen = [K[0]] + [minisign.SecretKey.generate() for _ in range(15)]
    state = AppState()
    assert keys.apply("x", cfg(K[0]), state, *signed(doc(1, sixteen, threshold=16), *sixteen))
    assert state.trust is not None and state.trust.threshold == 16


@pytest.mark.parametrize("origin", ["0" * 64, "f" * 64])
def test_a_stored_key_set_of_other_configured_keys_is_not_used(origin: str) -> None:
    stored = AppState(trust=TrustRoot(origin=origin, version=4, keys=[b64(K[3])],
                                      threshold=1))
    now = keys.in_use(cfg(K[0]), stored)
    assert now.version == 0 and [k.raw for k in now.keys] == [K[0].public.raw]


def test_the_keys_in_use_are_a_value() -> None:
    import dataclasses

    with pytest.raises(dataclasses.FrozenInstanceError):
        keys.in_use(cfg(K[0]), AppState()).version = 9  # type: ignore[misc]


def test_the_walk_stops_after_the_32_rotations_docs_feed_md_promises() -> None:
    assert keys.MAX_STEPS == 32
