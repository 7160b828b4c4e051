"""Following a feed's key rotations (sources/keys.py: the walk through `keys-<N>.json`) and
which keys a host uses (host/trustroot.py: configured, or rotated from them), in-process and
fast. The decisions on each rotation are a table in tests/test_trusted_set.py; the end-to-end
rows are in tests/security/test_keys_rows.py."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import msgspec
import pytest
import trio

from updaterd.errors import FeedError
from updaterd.host import trustroot
from updaterd.host.config import AppConfig
from updaterd.host.state import AppState, TrustRoot
from updaterd.sources import keys
from updaterd.trust import minisign
from updaterd.trust.rotation import KEYS, Keys, versioned
from updaterd.trust.trustedset import TrustedSet

K = [minisign.SecretKey.generate() for _ in range(5)]
NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)


def b64(k: minisign.SecretKey) -> str:
    return k.public.to_base64()


def cfg(*signers: minisign.SecretKey, threshold: int = 1,
        verify: str = "required") -> AppConfig:
    return AppConfig(source="directory", path="/x", prefix="/opt/x", threshold=threshold,
                     public_keys=[b64(k) for k in signers], verify=verify)  # type: ignore[arg-type]


def doc(version: int, new: list[minisign.SecretKey]) -> bytes:
    return json.dumps({"schema": 1, "app": "x", "version": version,
                       "keys": [b64(k) for k in new], "threshold": 1}).encode()


def signed(raw: bytes, *by: minisign.SecretKey) -> tuple[bytes, bytes]:
    return raw, "".join(k.sign(raw, "t") for k in by).encode()


# -- the walk -----------------------------------------------------------------------------------

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
        docs[versioned(v)] = signed(doc(v, [chain_keys[v]]), chain_keys[v - 1], chain_keys[v])
    docs[KEYS] = docs[versioned(length)]
    return docs


def walk(feed: FeedDocs, trust: TrustedSet | None = None) -> tuple[TrustedSet, keys.Walk]:
    trust = trust or TrustedSet("x", Keys([K[0].public], 1, 0), now=NOW)
    return trust, trio.run(keys.follow, trust, feed.fetch)


def version(trust: TrustedSet) -> int:
    assert trust.keys is not None
    return trust.keys.version


def test_a_host_that_missed_rotations_walks_them_one_by_one() -> None:
    feed = FeedDocs(chain(3))
    trust, done = walk(feed)
    assert version(trust) == 3 and done.stopped is None
    assert [k.version for k in done.accepted] == [1, 2, 3]
    assert feed.asked == ["keys.json", "keys-1.json", "keys-2.json"]  # keys.json read once


def test_the_walk_does_nothing_without_keys_or_with_verify_skip_or_without_keys_json() -> None:
    for keys_in_use in (Keys([], 1, 0), None):
        feed = FeedDocs(chain(1))
        walk(feed, TrustedSet("x", keys_in_use, now=NOW))
        assert feed.asked == []
    feed = FeedDocs({})
    trust, done = walk(feed)
    assert feed.asked == ["keys.json"] and not trust.rotated and done.accepted == []


def test_a_missing_step_stops_the_walk_and_keeps_the_keys() -> None:
    docs = chain(3)
    del docs["keys-2.json"]
    trust, done = walk(FeedDocs(docs))
    assert version(trust) == 1 and done.stopped is not None
    assert "not signed by the keys in use (version 1)" in done.stopped


def test_a_bad_step_stops_the_walk() -> None:
    docs = chain(3)
    docs["keys-2.json"] = signed(doc(2, [K[2]]), K[3], K[2])  # not signed by version 1's key
    trust, done = walk(FeedDocs(docs))
    assert version(trust) == 1
    assert done.stopped is not None and \
        done.stopped.startswith("keys.json: not signed by the keys in use (version 1)")


def test_a_step_that_is_not_newer_stops_the_walk() -> None:
    docs = chain(3)
    docs["keys-2.json"] = docs["keys-1.json"]
    trust, done = walk(FeedDocs(docs))
    assert version(trust) == 1
    assert done.stopped is not None and "not signed by the keys in use" in done.stopped


def test_at_most_max_steps_rotations_in_one_check() -> None:
    trust, done = walk(FeedDocs(chain(keys.MAX_STEPS + 2)))
    assert version(trust) == keys.MAX_STEPS
    assert done.stopped == f"more than {keys.MAX_STEPS} key rotations at once; the rest at " \
        "the next check"
    docs = chain(keys.MAX_STEPS + 2)
    first, _ = walk(FeedDocs(docs))
    second, _ = walk(FeedDocs(docs), TrustedSet("x", first.keys, now=NOW))
    assert version(second) == keys.MAX_STEPS + 2


def test_the_latest_rotation_alone_is_enough_when_the_keys_in_use_signed_it() -> None:
    feed = FeedDocs({KEYS: signed(doc(5, [K[1]]), K[0], K[1])})
    trust, _ = walk(feed)
    assert version(trust) == 5 and feed.asked == ["keys.json"]


def test_the_walk_stops_after_the_32_rotations_docs_feed_md_promises() -> None:
    assert keys.MAX_STEPS == 32


# -- which keys this host uses --------------------------------------------------------------------

def test_a_rotation_is_kept_with_the_configured_keys_it_descends_from() -> None:
    state = AppState(serial=9, manifest_digest="d", etag="e", last_modified="m")
    trust = trustroot.trusted_set("x", cfg(K[0]), state, NOW.timestamp())
    assert trust.rotate(*signed(doc(1, [K[1]]), K[0], K[1]))
    trustroot.keep(cfg(K[0]), state, trust)
    assert state.trust == TrustRoot(origin=trustroot.origin_of(cfg(K[0])), version=1,
                                    keys=[b64(K[1])], threshold=1)
    assert (state.serial, state.manifest_digest, state.etag, state.last_modified) == \
        (None, None, None, None)
    now = trustroot.in_use(cfg(K[0]), state)
    assert (now.version, now.threshold, [k.raw for k in now.keys]) == (1, 1, [K[1].public.raw])


def test_a_set_that_rotated_nothing_leaves_the_state_alone() -> None:
    state = AppState(serial=9, manifest_digest="d", etag="e",
                     trust=TrustRoot(origin=trustroot.origin_of(cfg(K[0])), version=2,
                                     keys=[b64(K[1])], threshold=1))
    trust = trustroot.trusted_set("x", cfg(K[0]), state, NOW.timestamp())
    assert not trust.rotate(*signed(doc(2, [K[2]]), K[1], K[2]))  # not newer
    before = msgspec.json.encode(state)
    trustroot.keep(cfg(K[0]), state, trust)
    assert msgspec.json.encode(state) == before


def test_the_set_a_host_opens_carries_its_marks_and_its_keys() -> None:
    state = AppState(serial=9, manifest_digest="d")
    trust = trustroot.trusted_set("x", cfg(K[0], K[1], threshold=2), state, NOW.timestamp())
    assert trust.keys == Keys([K[0].public, K[1].public], 2, 0) and trust.now == NOW
    assert trustroot.trusted_set("x", cfg(K[0], verify="skip"), state, 0).keys is None


def test_origin_depends_on_the_keys_and_threshold_not_their_order() -> None:
    assert trustroot.origin_of(cfg(K[0], K[1])) == trustroot.origin_of(cfg(K[1], K[0]))
    assert trustroot.origin_of(cfg(K[0], K[1])) != \
        trustroot.origin_of(cfg(K[0], K[1], threshold=2))
    assert trustroot.origin_of(cfg(K[0])) != trustroot.origin_of(cfg(K[1]))
    assert len(trustroot.origin_of(cfg(K[0]))) == 64


@pytest.mark.parametrize("origin", ["0" * 64, "f" * 64])
def test_a_stored_key_set_of_other_configured_keys_is_not_used(origin: str) -> None:
    stored = AppState(trust=TrustRoot(origin=origin, version=4, keys=[b64(K[3])],
                                      threshold=1))
    now = trustroot.in_use(cfg(K[0]), stored)
    assert now.version == 0 and [k.raw for k in now.keys] == [K[0].public.raw]


def test_a_stored_key_that_does_not_parse_is_named() -> None:
    stored = AppState(trust=TrustRoot(origin=trustroot.origin_of(cfg(K[0])), version=3,
                                      keys=["RWQbad"], threshold=1))
    with pytest.raises(FeedError, match="stored key set: "):
        trustroot.in_use(cfg(K[0]), stored)
