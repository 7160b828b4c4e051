"""The origins of a feed with mirrors, in this process: the order they are asked in and their
back-off (sources/origins.py), the one error when none answers (sources/mirrors.py), and the
configuration's rules for `mirrors`. The real daemon against real nginx: tests/test_mirrors.py."""

from __future__ import annotations

import hashlib
import logging
import time
from pathlib import Path

import httpx
import pytest
import trio

from tests.simulator import FeedSimulator
from updaterd.errors import (
    DigestMismatch,
    DownloadError,
    FeedError,
    RateLimited,
    Retryable,
    SignatureRefused,
    UpdaterError,
)
from updaterd.host import config, outcome, trustroot
from updaterd.host.config import Limits
from updaterd.host.state import AppState
from updaterd.net.cachefile import Expected
from updaterd.net.fetcher import Fetcher
from updaterd.sources import watch
from updaterd.sources.mirrors import MirroredSource, every_origin_failed
from updaterd.sources.origins import BACKOFF_FIRST, BACKOFF_MAX, Origins
from updaterd.trust.feed import TrustedFeed

A, B, C = (f"https://{h}.example/app/manifest.json" for h in "abc")


def test_origins_are_asked_as_configured_until_one_fails() -> None:
    book = Origins()
    assert book.order("x", [A, B, C], now=0) == [A, B, C]
    assert book.failed("x", A, now=100) == BACKOFF_FIRST
    assert book.order("x", [A, B, C], now=100) == [B, C, A]
    assert book.order("x", [A, B, C], now=100 + BACKOFF_FIRST) == [A, B, C]  # over: first again
    assert book.order("y", [A, B, C], now=100) == [A, B, C], "each app its own book"


def test_the_backoff_doubles_with_each_failure_in_a_row_to_an_hour() -> None:
    book = Origins()
    waits = [book.failed("x", A, now=0) for _ in range(8)]
    assert waits == [60, 120, 240, 480, 960, 1920, 3600, 3600]
    assert waits[-1] == BACKOFF_MAX
    book.served("x", A)
    assert book.of("x", A).in_a_row == 0 and book.order("x", [A, B], now=1) == [A, B]
    assert book.failed("x", A, now=0) == BACKOFF_FIRST, "a success starts it again"


def test_origins_backing_off_are_still_asked_the_soonest_over_first() -> None:
    book = Origins()
    book.failed("x", A, now=0)
    book.failed("x", A, now=0)  # until 120
    book.failed("x", B, now=0)  # until 60
    book.failed("x", C, now=0, not_before=1000)  # a server's Retry-After: until 1000
    assert book.order("x", [A, B, C], now=10) == [B, A, C]


def test_counts_tell_failures_from_refusals() -> None:
    book = Origins()
    book.failed("x", A, now=0)
    book.failed("x", A, now=0)
    book.failed("x", A, now=0, refused=True)
    book.served("x", B)
    a, b = book.of("x", A), book.of("x", B)
    assert (a.failed, a.refused, a.served, a.in_a_row) == (2, 1, 0, 3)
    assert (b.failed, b.refused, b.served, b.in_a_row) == (0, 0, 1, 0)


@pytest.mark.parametrize("errors,kind", [
    ([Retryable("down"), SignatureRefused("stale sig")], FeedError),
    ([Retryable("down"), DigestMismatch("bad bytes")], DownloadError),
    ([RateLimited("wait", 50.0), RateLimited("wait", 20.0)], RateLimited),
    ([RateLimited("wait", 50.0), Retryable("down")], DownloadError),
])
def test_no_origin_answering_is_one_error_naming_each(errors: list[UpdaterError],
                                                      kind: type[UpdaterError]) -> None:
    e = every_origin_failed(list(zip([A, B], errors, strict=True)))
    assert type(e) is kind
    assert str(e) == f"no origin answered: {A}: {errors[0]}; {B}: {errors[1]}"
    if isinstance(e, RateLimited):
        assert e.until == 20.0, "asked again when the first origin answers again"


def test_one_origin_failing_is_its_own_error() -> None:
    alone = SignatureRefused("refused")
    assert every_origin_failed([(A, alone)]) is alone


def problems(app: str) -> list[str]:
    with pytest.raises(config.ConfigError) as e:
        config.parse(f"[apps.a]\nprefix = \"/opt/a\"\n{app}", "u.toml")
    return [p.removeprefix("u.toml: apps.a.") for p in e.value.problems]


KEY = 'public_keys = ["RWQf6LRCGA9i53mlYecO4IzT51TGPpvWucNSCh1CBM0QTaLn73Y7GFO3"]\n'


@pytest.mark.parametrize("app,why", [
    ('source = "directory"\npath = "/srv/feed"\nmirrors = ["https://b.example/m.json"]\n',
     "only a feed fetched over the network"),
    (f'source = "manifest"\nurl = "file:///srv/feed/manifest.json"\n{KEY}'
     'mirrors = ["https://b.example/m.json"]\n', "only a feed fetched over the network"),
    (f'source = "manifest"\nurl = "{A}"\n{KEY}mirrors = ["http://b.example/m.json"]\n',
     "plain http:// is allowed only to loopback"),
    (f'source = "manifest"\nurl = "{A}"\n{KEY}mirrors = ["ftp://b.example/m.json"]\n',
     "is not an https:// URL of a manifest"),
    (f'source = "manifest"\nurl = "{A}"\n{KEY}mirrors = ["{B}", "{A}"]\n',
     "an origin is named twice"),
    (f'source = "manifest"\nurl = "{A}"\n{KEY}mirrors = ['
     + ", ".join(f'"https://m{i}.example/m.json"' for i in range(17)) + "]\n",
     "17 mirrors; at most 16"),
])
def test_mirrors_that_cannot_be_used_are_named(app: str, why: str) -> None:
    found = problems(app)
    assert any(p.startswith("mirrors: ") and why in p for p in found), found


def test_good_mirrors_decode_in_order() -> None:
    cfg = config.parse(f'[apps.a]\nprefix = "/opt/a"\nsource = "manifest"\nurl = "{A}"\n{KEY}'
                       f'mirrors = ["{B}", "{C}"]\n', "u.toml")
    assert config.origins(cfg.apps["a"]) == [A, B, C]


def test_feed_check_compares_origins_with_the_newest() -> None:
    from updaterd.release.feedcheck import Report, compare_origins

    reports = {A: Report(serial=7, digest="x"), B: Report(serial=7, digest="y"),
               C: Report(serial=6, digest="z"), "down": Report(problems=["unreachable"])}
    compare_origins(reports)
    assert reports[A].problems == []
    assert reports[B].problems == [f"{B}: serial 7 with other bytes than {A}; hosts that saw "
                                   "one refuse the other (publish to one place, then copy)"]
    assert reports[C].problems == [f"{C}: stale: serial 6, where {A} has 7; hosts that saw 7 "
                                   "pass this origin over"]
    assert reports["down"].problems == ["unreachable"]
    nothing = {A: Report(problems=["x"])}
    compare_origins(nothing)
    assert nothing[A].problems == ["x"]


# -- MirroredSource in this process: httpx's MockTransport plays the origins ------------------

class Origins3:
    """Three origins of one feed, each serving a copy (or none: down) of a simulated feed."""

    def __init__(self, tmp_path: Path, ports: tuple[int, ...] = (81, 82, 83)) -> None:
        self.sim = FeedSimulator()
        self.sim.release("1.0.0")
        self.urls = [f"http://127.0.0.1:{port}/feed/manifest.json" for port in ports]
        self.files: dict[str, dict[str, bytes] | None] = {u: self.copy() for u in self.urls}
        self.asked: list[tuple[str, str | None]] = []  # (url, If-None-Match)
        self.state_folder = tmp_path
        self.book = Origins()
        self.cfg = config.AppConfig(source="manifest", url=self.urls[0], mirrors=self.urls[1:],
                                    public_keys=[self.sim.public_key], prefix="/opt/x",
                                    allow_insecure=True)

    def copy(self) -> dict[str, bytes]:
        return {"manifest.json": self.sim.raw, "manifest.json.minisig": self.sim.signature,
                **self.sim.blobs}

    def handler(self, request: httpx.Request) -> httpx.Response:
        url = str(request.url)
        self.asked.append((url, request.headers.get("if-none-match")))
        base, name = url.rsplit("/", 1)
        files = self.files[base + "/manifest.json"]
        if files is None:
            raise httpx.ConnectError("down on purpose", request=request)
        if name not in files:
            return httpx.Response(404)
        etag = '"' + hashlib.sha256(files[name]).hexdigest()[:16] + '"'
        if request.headers.get("if-none-match") == etag:
            return httpx.Response(304, headers={"etag": etag})
        return httpx.Response(200, stream=httpx.ByteStream(files[name]),
                              headers={"etag": etag, "content-length": str(len(files[name]))})

    def source(self) -> MirroredSource:
        fetcher = Fetcher(Limits(retries=1, backoff_base="1ms", backoff_cap="1ms"),
                          allow_insecure=True, transport=httpx.MockTransport(self.handler))
        return MirroredSource("hello", self.cfg, Limits(), fetcher, self.state_folder,
                              self.book, fresh=False, now=lambda: 1000.0)

    def fetch(self, state: AppState) -> tuple[MirroredSource, TrustedFeed]:
        async def go() -> tuple[MirroredSource, TrustedFeed]:
            source = self.source()
            trust = trustroot.trusted_set("hello", self.cfg, state, time.time())
            feed = await source.fetch(state, trust)
            outcome.validators(state, *(feed.validators or (None, None)), feed.origin)
            state.serial, state.manifest_digest = feed.manifest.serial, feed.digest
            return source, feed  # its client stays open for `artifact`

        return trio.run(go)

    def look(self, state: AppState) -> str | None:
        async def go() -> str | None:
            source = self.source()
            try:
                return await source.look(state, Limits(), watch.Seen())
            finally:
                await source.fetcher.aclose()

        return trio.run(go)

    def artifact(self, source: MirroredSource, tmp_path: Path) -> bytes:
        art = self.sim.releases[-1].artifacts[0]

        async def go() -> bytes:
            try:
                with await source.fetch_artifact(art, tmp_path / art.url, Expected(
                        art.size, art.sha256, art.blake3), None) as f:
                    return f.read()
            finally:
                await source.fetcher.aclose()

        return trio.run(go)


@pytest.fixture
def three(tmp_path: Path) -> Origins3:
    return Origins3(tmp_path)


def test_the_feed_is_taken_from_the_first_origin_that_answers_and_said_so(
        three: Origins3, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="updaterd.mirrors")
    state = AppState()
    three.fetch(state)
    assert "taken from" not in caplog.text, "the primary serving is no news"
    three.files[three.urls[0]] = None
    source, _ = three.fetch(state)
    assert source.served == three.urls[1] and state.feed_origin == three.urls[1]
    assert caplog.text.count(f"the feed is taken from {three.urls[1]}") == 1
    assert f"origin {three.urls[0]} failed (feed)" in caplog.text


def test_the_artifact_comes_from_the_origin_of_the_feed_then_the_others_in_order(
        three: Origins3, tmp_path: Path) -> None:
    state = AppState()
    three.files[three.urls[0]] = None
    source, _ = three.fetch(state)
    assert source.served == three.urls[1]
    name = three.sim.releases[-1].artifacts[0].url
    assert source.describe(three.sim.releases[-1].artifacts[0]).endswith(f":82/feed/{name}")
    files = three.files[three.urls[1]]
    assert files is not None
    files[name] = b"x" * len(files[name])  # the feed's origin has a bad copy
    three.files[three.urls[2]] = {}  # the last has none
    three.files[three.urls[0]] = three.copy()  # the first is back
    three.asked.clear()
    assert three.artifact(source, tmp_path) == three.sim.blobs[name]
    order = [u.rsplit("/", 2)[0] for u, _ in three.asked if u.endswith(name)]
    assert order == ["http://127.0.0.1:82", "http://127.0.0.1:83", "http://127.0.0.1:81"], \
        "the feed's origin, then the others: 81 last, as it backs off from its failure"


def test_a_look_asks_the_origin_of_the_validators_then_the_others_whole(
        three: Origins3) -> None:
    state = AppState()
    three.files[three.urls[0]] = None
    three.fetch(state)  # validators from the second origin
    three.asked.clear()
    assert three.look(state) is None
    assert [(u.rsplit("/", 2)[0], inm is not None) for u, inm in three.asked] == \
        [("http://127.0.0.1:82", True)], "one conditional request to the second origin"
    three.files[three.urls[1]] = None
    three.files[three.urls[0]] = three.copy()
    three.asked.clear()
    assert three.look(state) is None  # the same bytes elsewhere: nothing new
    assert three.asked[0][1] is not None
    assert [(u.rsplit("/", 2)[0], inm) for u, inm in three.asked] == \
        [("http://127.0.0.1:82", three.asked[0][1]), ("http://127.0.0.1:83", None)], \
        "the second once (the next origin is the retry), then the third whole (the first " \
        "backs off)"
    three.sim.release("1.1.0")
    three.files[three.urls[2]] = three.copy()
    assert three.look(state) == "the manifest changed"


def test_a_look_with_every_origin_down_raises_the_first_failure(three: Origins3) -> None:
    state = AppState()
    three.fetch(state)
    three.files = dict.fromkeys(three.urls)
    with pytest.raises(DownloadError, match=r":81/feed/manifest\.json: ConnectError"):
        three.look(state)


def test_a_look_reaches_every_origin_before_it_gives_up(three: Origins3) -> None:
    state = AppState()
    three.files[three.urls[0]] = None
    three.fetch(state)  # validators from the second origin; the first backs off
    three.files = {three.urls[0]: three.copy(), three.urls[1]: None, three.urls[2]: None}
    three.asked.clear()
    assert three.look(state) is None
    assert [(u.rsplit("/", 2)[0], inm) for u, inm in three.asked] == [
        ("http://127.0.0.1:82", three.asked[0][1]), ("http://127.0.0.1:83", None),
        ("http://127.0.0.1:81", None)], "the one backing off too, last, whole"


def test_every_operation_says_which_mirror_it_took_the_feed_from(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The primary (here the origin whose address sorts last) backing off, an operation that
    takes the feed from a mirror says so, though no origin failed in it."""
    caplog.set_level(logging.INFO, logger="updaterd.mirrors")
    three = Origins3(tmp_path, ports=(89, 81, 82))
    state = AppState()
    three.files[three.urls[0]] = None
    three.fetch(state)
    three.fetch(state)  # the primary backs off: the mirror is asked first, and answers
    assert caplog.text.count(f"the feed is taken from {three.urls[1]}") == 2
    assert caplog.text.count(f"origin {three.urls[0]} failed") == 1


def test_bytes_refused_from_a_stream_are_asked_of_that_origin_last(
        three: Origins3, tmp_path: Path) -> None:
    state = AppState()
    three.files[three.urls[0]] = None
    source, _ = three.fetch(state)
    three.files[three.urls[0]] = three.copy()
    art = three.sim.releases[-1].artifacts[0]
    assert source.stream_refused(art)
    assert source.refused == {three.urls[1]}
    three.asked.clear()
    assert three.artifact(source, tmp_path) == three.sim.blobs[art.url]
    assert [u.rsplit("/", 2)[0] for u, _ in three.asked] == ["http://127.0.0.1:83"]


def test_a_stream_that_fails_counts_against_its_origin(three: Origins3) -> None:
    state = AppState()
    three.files[three.urls[0]] = None
    source, _ = three.fetch(state)
    files = three.files[three.urls[1]]
    assert files is not None
    art = three.sim.releases[-1].artifacts[0]
    del files[art.url]
    got: list[bytes] = []

    async def consume(chunk: bytes) -> None:
        got.append(chunk)

    async def go() -> None:
        try:
            await source.stream_artifact(art, Expected(art.size, art.sha256, art.blake3),
                                         consume, None)
        finally:
            await source.fetcher.aclose()

    with pytest.raises(DownloadError, match="HTTP 404"):
        trio.run(go)
    health = three.book.of("hello", three.urls[1])
    assert (health.served, health.failed) == (1, 1) and not got
