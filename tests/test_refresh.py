"""The one refresh of a signed feed, in-process through the FeedSimulator as a transport: the
kept copy and "not modified" answers, and key rotations (end to end, through nginx and the
daemon, in test_update_e2e.py and tests/security/test_keys_rows.py)."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import pytest
import trio

from tests.simulator import FeedSimulator, SimHost
from updaterd.errors import FeedError
from updaterd.trust import minisign

T = TypeVar("T")


def run(call: Callable[[], Awaitable[T]]) -> T:
    return trio.run(call)


@pytest.fixture
def sim() -> FeedSimulator:
    return FeedSimulator()


@pytest.fixture
def host(tmp_path: Path, sim: FeedSimulator) -> SimHost:
    return SimHost(tmp_path, sim)


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
