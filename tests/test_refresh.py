"""One refresh of a signed feed (sources/refresh.py), at its edges: what it fetches when the
kept copy is gone, what `verify = "skip"` asks for, and a folder feed without its signature.
In this process: the FeedSimulator as a web server, and a real feed folder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.helpers import Feed
from tests.simulator import FeedSimulator, SimHost
from tests.test_rollout import run
from updaterd.engine.engine import Engine
from updaterd.errors import FeedError
from updaterd.sources import verified
from updaterd.trust.feed import SIGNATURE


@pytest.fixture
def host(tmp_path: Path, sim: FeedSimulator) -> SimHost:
    return SimHost(tmp_path, sim)


def test_with_the_kept_copy_gone_but_its_etag_kept_the_manifest_is_fetched_whole(
        host: SimHost, sim: FeedSimulator) -> None:
    sim.release("1.0.0")
    engine = host.engine()
    run(lambda: engine.check("hello"))
    run(lambda: engine.check("hello"))
    assert sim.not_modified == 1  # the kept copy answers the second
    kept = host.base / "state" / "hello" / verified.CACHED
    assert engine.load_state("hello").etag is not None and kept.exists()
    kept.unlink()
    checked = run(lambda: engine.check("hello"))
    assert sim.not_modified == 1 and sim.requests["manifest"] == 3  # asked whole, not 304
    assert checked.available == "1.0.0" and kept.exists()


def test_with_verify_skip_no_signature_is_asked_for(host: SimHost, sim: FeedSimulator) -> None:
    sim.release("1.0.0")
    sim.signature = b"not a signature"
    engine = host.engine(verify="skip")
    assert run(lambda: engine.update("hello")).to_version == "1.0.0"
    assert sim.documents_asked[SIGNATURE] == 0


def test_a_folder_feed_without_its_signature_is_refused_by_name(tmp_path: Path,
                                                                sim: FeedSimulator) -> None:
    feed = Feed(folder=tmp_path / "feed", work=tmp_path / "work")
    feed.release("1.0.0")
    (feed.folder / SIGNATURE).unlink()
    host = SimHost(tmp_path / "host", sim)
    engine = Engine(host.configure(path=str(feed.folder), public_keys=[feed.pub]),
                    host.events.append)
    with pytest.raises(FeedError, match="manifest signature is missing"):
        run(lambda: engine.check("hello"))
    assert host.current() is None


def test_a_304_to_a_request_without_validators_is_refused_even_with_a_copy_kept(
        host: SimHost, sim: FeedSimulator) -> None:
    """A copy is kept, but the state holds no serial (so nothing was asked conditionally): a
    304 then is the server's error, never a reason to use the copy."""
    from tests.simulator import SimulatedTransport
    from updaterd.net.document import Document

    sim.release("1.0.0")
    engine = host.engine()
    run(lambda: engine.check("hello"))
    engine.edit_state("hello", lambda st, _limit: setattr(st, "serial", None))

    class Always304(SimulatedTransport):
        async def document(self, name: str, cap: int, *, missing_ok: bool = False,
                           validators: object = None) -> Document:
            if name == "manifest.json":
                return Document(not_modified=True)
            return await super().document(name, cap, missing_ok=missing_ok)

    engine = Engine(host.configure(), host.events.append,
                    transports=lambda app, cfg: Always304(sim))
    with pytest.raises(FeedError, match="304 Not Modified to a request that carried no "
                                        "validator"):
        run(lambda: engine.check("hello"))


def guarded_feed(host: SimHost, sim: FeedSimulator) -> tuple[Any, Engine]:
    """1.0.0 guarded by a rollout key, active at 100%, and an engine on the simulator."""
    from tests.test_rollout import Guarded

    guarded = Guarded(sim)
    guarded.release("1.0.0")
    guarded.steer({"1.0.0": (100, "active")})
    return guarded, host.engine()


# -- rollout.json, asked conditionally (the bulk of a fleet's steady traffic) -----------------


def test_an_unchanged_rollout_json_costs_one_conditional_request_and_no_signature(
        host: SimHost, sim: FeedSimulator) -> None:
    """It was fetched whole with its signature at every check: three requests where one does."""
    from updaterd.trust import rollout

    guarded, engine = guarded_feed(host, sim)
    run(lambda: engine.check("hello"))
    sig = f"{rollout.DOCUMENT}.minisig"
    asked, signatures = sim.documents_asked[rollout.DOCUMENT], sim.documents_asked[sig]
    kept = host.base / "state" / "hello" / rollout.DOCUMENT
    assert kept.exists() and engine.load_state("hello").rollout_etag is not None
    for _ in range(2):
        checked = run(lambda: engine.check("hello"))
        assert checked.available == "1.0.0"  # the kept copy, re-verified, still steers it
    assert sim.documents_asked[rollout.DOCUMENT] - asked == 2
    assert sim.documents_not_modified[rollout.DOCUMENT] == 2
    assert sim.documents_asked[sig] == signatures, "no signature for an unchanged document"
    guarded.steer({"1.0.0": (100, "halted")})  # a change is fetched whole, with its signature
    checked = run(lambda: engine.check("hello"))
    assert checked.available is None and sim.documents_asked[sig] == signatures + 1


def test_without_the_kept_copy_rollout_json_is_asked_whole(host: SimHost,
                                                           sim: FeedSimulator) -> None:
    from updaterd.trust import rollout

    _, engine = guarded_feed(host, sim)
    run(lambda: engine.check("hello"))
    (host.base / "state" / "hello" / rollout.DOCUMENT).unlink()
    assert run(lambda: engine.check("hello")).available == "1.0.0"
    assert sim.documents_not_modified[rollout.DOCUMENT] == 0


# -- a signature refused: asked again past the caches --------------------------------------------


def test_a_signature_a_cache_kept_from_another_publish_is_asked_again_fresh(
        host: SimHost, sim: FeedSimulator, caplog: pytest.LogCaptureFixture) -> None:
    sim.release("1.0.0")
    old_signature = sim.signature
    sim.release("1.1.0")
    sim.stale[SIGNATURE] = old_signature  # the cache kept it: it signs 1.0.0's manifest
    engine = host.engine()
    assert run(lambda: engine.check("hello")).available == "1.1.0"
    assert sim.fresh_asked == {"manifest.json": 1, SIGNATURE: 1}
    assert "asked again past it (Cache-Control: no-cache), the manifest and its signature " \
        "go together" in caplog.text
    kept = host.base / "state" / "hello" / verified.CACHED
    assert (kept.read_bytes(), kept.with_name(kept.name + ".minisig").read_bytes()) == \
        (sim.raw, sim.signature), "the copy kept is the pair that verified"


def test_a_good_feed_is_never_asked_fresh(host: SimHost, sim: FeedSimulator) -> None:
    sim.release("1.0.0")
    engine = host.engine()
    run(lambda: engine.check("hello"))
    run(lambda: engine.check("hello"))
    assert sim.fresh_asked == {}


def test_the_same_refusal_past_the_caches_says_so(host: SimHost, sim: FeedSimulator) -> None:
    from updaterd.trust import minisign

    sim.release("1.0.0")
    sim.sign(key=minisign.SecretKey.generate())
    engine = host.engine()
    with pytest.raises(FeedError, match="asked again past any cache with Cache-Control: "
                                        "no-cache: the same answer"):
        run(lambda: engine.check("hello"))


@pytest.mark.parametrize("cached", [b"a", b"zz"])  # sorting before and after the origin's
def test_another_refusal_past_the_caches_is_that_refusal(host: SimHost, sim: FeedSimulator,
                                                         cached: bytes) -> None:
    from updaterd.trust import minisign

    sim.release("1.0.0")
    sim.stale[SIGNATURE] = cached  # whatever the cache holds, not the origin's signature
    sim.sign(key=minisign.SecretKey.generate())  # and the origin's by a key not trusted
    engine = host.engine()
    with pytest.raises(FeedError) as e:
        run(lambda: engine.check("hello"))
    assert "manifest signature refused" in str(e.value)
    assert "the same answer" not in str(e.value)


# -- key rotations and a missing rollout.json, as a refresh says them ---------------------------


def test_a_rotation_taken_and_a_walk_stopped_are_logged(host: SimHost, sim: FeedSimulator,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    import json as json_
    import logging

    from updaterd.trust import minisign

    caplog.set_level(logging.INFO)
    sim.release("1.0.0")
    engine = host.engine()
    run(lambda: engine.check("hello"))
    new = minisign.SecretKey.generate()
    raw = json_.dumps({"schema": 1, "app": "hello", "version": 1,
                       "keys": [new.public.to_base64()]}).encode()
    sim.documents["keys.json"] = raw
    sim.documents["keys.json.minisig"] = (sim.key.sign(raw, "t") + new.sign(raw, "t")).encode()
    sim.key = new
    sim.release("1.1.0")
    assert run(lambda: engine.check("hello")).available == "1.1.0"
    assert "hello: key rotation to version 1 accepted (1 keys, threshold 1)" in caplog.text
    bad = json_.dumps({"schema": 1, "app": "hello", "version": 2, "keys": ["RWQbad"]}).encode()
    sim.documents["keys.json"] = bad
    sim.documents["keys.json.minisig"] = new.sign(bad, "t").encode()
    sim.release("1.2.0")
    run(lambda: engine.check("hello"))
    assert "hello: keys.json version 2: " in caplog.text


def test_a_rollout_json_gone_holds_its_releases_and_says_it_is_missing(
        host: SimHost, sim: FeedSimulator) -> None:
    from updaterd.trust import rollout

    _, engine = guarded_feed(host, sim)
    assert run(lambda: engine.check("hello")).available == "1.0.0"
    del sim.documents[rollout.DOCUMENT]  # the copy kept must not stand in for it
    checked = run(lambda: engine.check("hello"))
    assert checked.available is None
    assert "rollout.json is missing" in checked.passed_over["1.0.0"]


def test_validators_are_sent_only_to_the_origin_that_gave_them(host: SimHost,
                                                               sim: FeedSimulator) -> None:
    """A feed with mirrors: an ETag or a date is one server's; a stale mirror asked with a
    newer origin's date would answer 304 and hide what the next origin has."""
    sim.release("1.0.0")
    engine = host.engine()
    asked = ["https://a.example/manifest.json"]
    make = engine.transports
    assert make is not None

    def at_origin(app: str, cfg: Any) -> Any:
        transport = make(app, cfg)
        transport.origin = asked[0]
        return transport

    engine.transports = at_origin
    run(lambda: engine.check("hello"))
    assert engine.load_state("hello").feed_origin == asked[0]
    run(lambda: engine.check("hello"))
    assert sim.not_modified == 1  # the same origin: asked conditionally
    asked[0] = "https://b.example/manifest.json"
    run(lambda: engine.check("hello"))
    assert sim.not_modified == 1 and sim.requests["manifest"] == 3  # another: asked whole
    assert engine.load_state("hello").feed_origin == asked[0]
    run(lambda: engine.check("hello"))
    assert sim.not_modified == 2
