"""Downloads against a real misbehaving server (hypercorn on 127.0.0.1): retries, resume,
length enforcement, timeouts; and the URL and redirect policy."""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import random
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from tests.conftest import FaultServer
from updaterd.errors import DigestMismatch, DownloadError
from updaterd.host.config import Limits
from updaterd.net.cachefile import Expected
from updaterd.net.fetcher import Fetcher, parse_retry_after
from updaterd.trust.digests import Digests

FAST = Limits(backoff_base="10ms", backoff_cap="50ms", retries=3)
SIZE = 3 << 20


@pytest.fixture
def artifact(fault_server: FaultServer) -> tuple[str, bytes, Expected]:
    data = os.urandom(SIZE)
    (fault_server.root / "art.tar.gz").write_bytes(data)
    d = Digests()
    d.update(data)
    return "art.tar.gz", data, Expected(SIZE, d.sha256, d.blake3)


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    (tmp_path / "cache").mkdir()
    return tmp_path / "cache"


def fetch(url: str, dest: Path, expected: Expected, limits: Limits = FAST) -> bytes:
    async def go() -> bytes:
        fetcher = Fetcher(limits, allow_insecure=True)
        try:
            f = await fetcher.fetch_file(url, dest, expected)
            with f:
                return f.read()
        finally:
            await fetcher.aclose()

    return trio.run(go)


def served(fault: FaultServer, mode: str) -> list[dict[str, Any]]:
    """The requests the fault server logged for `mode`. It logs a request after answering it,
    so a client can be done first: read until the log has an entry and stops growing."""
    deadline = time.monotonic() + 5
    seen = [r for r in fault.requests() if r["mode"] == mode]
    while time.monotonic() < deadline:
        time.sleep(0.05)
        now = [r for r in fault.requests() if r["mode"] == mode]
        if now and now == seen:
            break
        seen = now
    return seen


def test_d81_d89_dropped_connection_resumes_with_range_and_downloads_only_the_rest(
        fault_server: FaultServer, artifact: tuple[str, bytes, Expected], cache: Path) -> None:
    name, data, expected = artifact
    got = fetch(fault_server.url("drop", name), cache / name, expected)
    assert got == data
    first, second = served(fault_server, "drop")
    assert first["range"] is None and 0 < first["sent"] < SIZE
    assert second["range"] == f"bytes={first['sent']}-" or second["range"].startswith("bytes=")
    assert second["if_range"], "resume must be conditional (If-Range)"
    assert first["sent"] + second["sent"] <= SIZE + 65536, "only the rest is downloaded again"
    assert second["status"] == 206
    assert not (cache / f"{name}.part").exists()


def test_d75_500_then_success_is_retried(fault_server: FaultServer,
                                         artifact: tuple[str, bytes, Expected],
                                         cache: Path) -> None:
    name, data, expected = artifact
    assert fetch(fault_server.url("fail500", name), cache / name, expected) == data
    assert [r["status"] for r in served(fault_server, "fail500")] == [500, 200]


def test_d74_429_retry_after_is_honoured(fault_server: FaultServer,
                                         artifact: tuple[str, bytes, Expected],
                                         cache: Path) -> None:
    name, data, expected = artifact
    start = time.monotonic()
    assert fetch(fault_server.url("r429", name), cache / name, expected) == data
    assert time.monotonic() - start >= 0.9, "Retry-After: 1 was not waited for"
    assert [r["status"] for r in served(fault_server, "r429")] == [429, 200]


def test_d75_404_is_not_retried(fault_server: FaultServer, cache: Path) -> None:
    with pytest.raises(DownloadError, match="HTTP 404"):
        fetch(fault_server.url("plain", "missing"), cache / "missing", Expected(1, "0" * 64,
                                                                                  None))
    assert len(served(fault_server, "plain")) == 1


def test_d88_content_length_above_signed_aborts_before_body(
        fault_server: FaultServer, artifact: tuple[str, bytes, Expected], cache: Path) -> None:
    name, _, expected = artifact
    with pytest.raises(DigestMismatch, match="announces"):
        fetch(fault_server.url("bigger", name), cache / name, expected)
    assert not list(cache.iterdir()), "nothing that failed verification is kept"


def test_a15_d90_longer_body_aborted_at_signed_length(
        fault_server: FaultServer, artifact: tuple[str, bytes, Expected], cache: Path) -> None:
    name, _, expected = artifact
    with pytest.raises(DigestMismatch, match="more bytes than the signed"):
        fetch(fault_server.url("longer", name), cache / name, expected)
    assert not list(cache.iterdir())


def test_d80_slow_body_aborted_by_minimum_speed(fault_server: FaultServer,
                                                cache: Path) -> None:
    (fault_server.root / "small.bin").write_bytes(b"x" * 64)
    d = Digests()
    d.update(b"x" * 64)
    slow = Limits(retries=0, min_speed="100B", min_speed_window="1s")
    start = time.monotonic()
    with pytest.raises(DownloadError, match="slower than"):
        fetch(fault_server.url("slow", "small.bin"), cache / "small.bin",
              Expected(64, d.sha256, None), slow)
    assert time.monotonic() - start < 10


def test_d79_silence_after_headers_hits_read_timeout(fault_server: FaultServer,
                                                     cache: Path) -> None:
    (fault_server.root / "s.bin").write_bytes(b"xy")
    d = Digests()
    d.update(b"xy")
    limits = Limits(retries=0, read_timeout="200ms")
    with pytest.raises(DownloadError, match="ReadTimeout"):
        fetch(fault_server.url("slow", "s.bin"), cache / "s.bin",
              Expected(2, d.sha256, None), limits)


def plant_partial(dest: Path, data: bytes, expected: Expected, url: str, etag: str) -> None:
    half = len(data) // 2
    dest.with_name(dest.name + ".part").write_bytes(data[:half])
    dest.with_name(dest.name + ".part.json").write_text(json.dumps({
        "url": url, "size": expected.size, "sha256": expected.sha256, "blake3": expected.blake3,
        "etag": etag, "last_modified": None}))


def server_etag(data: bytes) -> str:
    return '"' + hashlib.sha256(data).hexdigest()[:16] + '"'


def test_d82_range_ignored_restarts_from_zero(fault_server: FaultServer,
                                              artifact: tuple[str, bytes, Expected],
                                              cache: Path) -> None:
    name, data, expected = artifact
    url = fault_server.url("norange", name)
    plant_partial(cache / name, data, expected, url, server_etag(data))
    assert fetch(url, cache / name, expected) == data
    (req,) = served(fault_server, "norange")
    assert req["range"] and req["status"] == 200


def test_d83_wrong_content_range_discards_partial(fault_server: FaultServer,
                                                  artifact: tuple[str, bytes, Expected],
                                                  cache: Path) -> None:
    name, data, expected = artifact
    url = fault_server.url("badrange", name)
    plant_partial(cache / name, data, expected, url, server_etag(data))
    assert fetch(url, cache / name, expected) == data
    assert [(bool(r["range"]), r["status"]) for r in served(fault_server, "badrange")] == [
        (True, 206), (False, 200)]


def test_d84_changed_etag_discards_partial(fault_server: FaultServer,
                                           artifact: tuple[str, bytes, Expected],
                                           cache: Path) -> None:
    name, data, expected = artifact
    url = fault_server.url("plain", name)
    plant_partial(cache / name, data, expected, url, '"an-old-etag"')
    assert fetch(url, cache / name, expected) == data
    (req,) = served(fault_server, "plain")
    assert req["if_range"] == '"an-old-etag"' and req["status"] == 200


def test_d86_corrupt_partial_gets_one_full_retry(fault_server: FaultServer,
                                                 artifact: tuple[str, bytes, Expected],
                                                 cache: Path) -> None:
    name, data, expected = artifact
    url = fault_server.url("plain", name)
    corrupt = bytes(len(data) // 2) + data[len(data) // 2:]
    plant_partial(cache / name, corrupt, expected, url, server_etag(data))
    assert fetch(url, cache / name, expected) == data
    assert [r["status"] for r in served(fault_server, "plain")] == [206, 200]


def test_d87_partial_longer_than_signed_is_deleted(fault_server: FaultServer,
                                                   artifact: tuple[str, bytes, Expected],
                                                   cache: Path) -> None:
    name, data, expected = artifact
    url = fault_server.url("plain", name)
    plant_partial(cache / name, data + data + data, expected, url, server_etag(data))
    assert fetch(url, cache / name, expected) == data
    (req,) = served(fault_server, "plain")
    assert req["range"] is None


def test_d91_identity_encoding_requested(fault_server: FaultServer,
                                         artifact: tuple[str, bytes, Expected],
                                         cache: Path) -> None:
    name, _, expected = artifact
    fetch(fault_server.url("plain", name), cache / name, expected)
    assert served(fault_server, "plain")[0]["accept_encoding"] == "identity"


def test_redirect_followed_within_policy(fault_server: FaultServer,
                                         artifact: tuple[str, bytes, Expected],
                                         cache: Path) -> None:
    name, data, expected = artifact
    assert fetch(fault_server.url("redirect", name), cache / name, expected) == data


def test_conditional_small_fetch_gets_304_without_body(fault_server: FaultServer) -> None:
    (fault_server.root / "m.json").write_bytes(b"{}")

    async def go() -> tuple[Any, Any]:
        fetcher = Fetcher(FAST, allow_insecure=True)
        url = fault_server.url("plain", "m.json")
        first = await fetcher.fetch_small(url, max_bytes=100)
        second = await fetcher.fetch_small(url, max_bytes=100, etag=first.etag)
        await fetcher.aclose()
        return first, second

    first, second = trio.run(go)
    assert first.body == b"{}" and not first.not_modified
    assert second.not_modified and second.body == b""


def test_a13_oversized_manifest_aborted(fault_server: FaultServer) -> None:
    (fault_server.root / "big.json").write_bytes(b" " * 5000)

    async def go() -> None:
        fetcher = Fetcher(FAST, allow_insecure=True)
        try:
            await fetcher.fetch_small(fault_server.url("plain", "big.json"), max_bytes=1000)
        finally:
            await fetcher.aclose()

    with pytest.raises(DownloadError, match=r"over the limit|more than"):
        trio.run(go)


# -- policy, with httpx.MockTransport (unit level: no https server here) ----------------------

def mock_fetch(handler: Any, url: str) -> Any:
    async def go() -> Any:
        fetcher = Fetcher(FAST, transport=httpx.MockTransport(handler))
        try:
            return await fetcher.fetch_small(url, max_bytes=100)
        finally:
            await fetcher.aclose()

    return trio.run(go)


def test_d92_https_to_http_redirect_refused() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(302, headers={"location": "http://127.0.0.1/x"})

    with pytest.raises(DownloadError, match="from https to"):
        mock_fetch(handler, "https://updates.example.com/m.json")


def test_d93_too_many_redirects_refused() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(302, headers={"location": "/again"})

    with pytest.raises(DownloadError, match="more than 5 redirects"):
        mock_fetch(handler, "https://updates.example.com/m.json")


def test_d95_authorization_not_forwarded_across_hosts() -> None:
    seen: list[tuple[str, str | None]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append((request.url.host, request.headers.get("authorization")))
        if request.url.host == "api.example.com":
            return httpx.Response(302, headers={"location": "https://storage.example.net/b"})
        return httpx.Response(200, content=b"ok")

    async def go() -> None:
        fetcher = Fetcher(FAST, transport=httpx.MockTransport(handler))
        async with fetcher._open("https://api.example.com/a", {"Authorization": "token s3"}):
            pass
        await fetcher.aclose()

    trio.run(go)
    assert seen == [("api.example.com", "token s3"), ("storage.example.net", None)]


@pytest.mark.parametrize("url", [
    "http://updates.example.com/m.json", "ftp://x/y", "https://user:pw@example.com/m.json",
    "https://169.254.169.254/latest", "https://metadata.google.internal/x",
    "https://[fe80::1]/x", "https://example.com/a\r\nb"])
def test_a21_url_policy_refuses(url: str) -> None:
    from updaterd.trust import urlpolicy

    with pytest.raises(DownloadError, match="refusing"):
        urlpolicy.require_allowed(url, allow_insecure=True)


def test_retry_after_both_forms() -> None:
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after("Thu, 01 Jan 1970 00:01:40 GMT", now=40.0) == 60.0
    assert parse_retry_after("soon") is None


# -- rows D78, D85, D94 -------------------------------------------------------------------------

def test_d78_blackholed_host_fails_within_the_connect_timeout(cache: Path) -> None:
    """A listener whose accept queue is full drops further SYNs: a real blackhole on loopback."""
    import socket

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(0)
    port = server.getsockname()[1]
    fillers = []
    for _ in range(4):  # fill the accept queue; later connects hang in SYN_SENT
        s = socket.socket()
        s.setblocking(False)
        s.connect_ex(("127.0.0.1", port))
        fillers.append(s)
    time.sleep(0.2)
    limits = Limits(connect_timeout="1s", backoff_base="10ms", backoff_cap="10ms", retries=2)
    started = time.monotonic()
    try:
        with pytest.raises(DownloadError, match="ConnectTimeout"):
            fetch(f"http://127.0.0.1:{port}/x.tar.gz", cache / "x.tar.gz",
                  Expected(10, "0" * 64, None), limits)
    finally:
        for s in fillers:
            s.close()
        server.close()
    took = time.monotonic() - started
    assert took < 2 * 1.0 + 1.5, f"{took:.1f}s for 2 attempts of a 1s connect timeout"


def test_d85_416_on_a_complete_partial_is_hashed(fault_server: FaultServer,
                                                 artifact: tuple[str, bytes, Expected],
                                                 cache: Path) -> None:
    name, data, expected = artifact
    url = fault_server.url("plain", name)
    plant_partial(cache / name, data + data, expected, url, server_etag(data))  # half: whole
    assert fetch(url, cache / name, expected) == data
    assert [r["status"] for r in served(fault_server, "plain")] == [416]


def test_d85_416_on_a_complete_but_corrupt_partial_downloads_again(
        fault_server: FaultServer, artifact: tuple[str, bytes, Expected], cache: Path) -> None:
    name, data, expected = artifact
    url = fault_server.url("plain", name)
    corrupt = b"\xff" + data[1:]
    plant_partial(cache / name, corrupt + corrupt, expected, url, server_etag(data))
    assert fetch(url, cache / name, expected) == data
    assert [r["status"] for r in served(fault_server, "plain")] == [416, 200]


@pytest.mark.parametrize("location", [
    "https://storage.example.net/a\r\nSet-Cookie: x=1", "https://storage.example.net/a\nb",
    "https://user:secret@storage.example.net/a", "https://storage.example.net@evil.example/a",
])
def test_d94_bad_location_is_refused(location: str) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.host == "updates.example.com":
            response = httpx.Response(302)
            response.headers._list.append((b"location", b"location",  # type: ignore[attr-defined]
                                           location.encode()))
            return response
        return httpx.Response(200, content=b"followed")

    with pytest.raises(DownloadError, match=r"bad Location|userinfo|credentials"):
        mock_fetch(handler, "https://updates.example.com/m.json")


# -- rows D100 and F123: the file that is hashed is the file that is used ----------------------

@pytest.mark.parametrize("plant", ["symlink", "hardlink"])
def test_d100_planted_partial_is_never_written_through(fault_server: FaultServer,
                                                       artifact: tuple[str, bytes, Expected],
                                                       cache: Path, tmp_path: Path,
                                                       plant: str) -> None:
    name, data, expected = artifact
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious")
    part = cache / f"{name}.part"
    if plant == "symlink":
        part.symlink_to(victim)
    else:
        os.link(victim, part)
    assert fetch(fault_server.url("plain", name), cache / name, expected) == data
    assert victim.read_bytes() == b"precious"
    assert (cache / name).read_bytes() == data and not (cache / name).is_symlink()
    assert os.stat(cache / name).st_nlink == 1


def test_f123_artifact_swapped_after_verification_is_not_used(
        fault_server: FaultServer, cache: Path, tmp_path: Path) -> None:
    """The descriptor returned by fetch_file() is the one that was hashed; replacing the file
    by name afterwards (a race with another writer) changes nothing for the extraction."""
    from tests.helpers import make_tar, release_files
    from updaterd.trust import archive

    art = make_tar(fault_server.root / "good.tar.gz", release_files("1.0.0"), top="hello")
    d = Digests()
    d.update(art.read_bytes())
    expected = Expected(art.stat().st_size, d.sha256, d.blake3)

    async def go() -> Path:
        fetcher = Fetcher(FAST, allow_insecure=True)
        try:
            f = await fetcher.fetch_file(fault_server.url("plain", art.name), cache / art.name,
                                       expected)
        finally:
            await fetcher.aclose()
        evil = make_tar(tmp_path / "evil.tar.gz", release_files("6.6.6"), top="hello")
        os.replace(evil, cache / art.name)  # swapped by name after the verification
        staging = tmp_path / "staging"
        staging.mkdir()
        with f:
            limits = archive.ExtractLimits(max_members=100, max_total=1 << 20, max_file=1 << 20)
            return archive.extract(f, "tar.gz", staging, limits, "hello")

    root = trio.run(go)
    assert (root / "share" / "VERSION").read_text() == "1.0.0\n"


# -- row D76: the retry schedule ----------------------------------------------------------------

class RecordingRandom(random.Random):
    """A seeded Random that remembers the bounds it was asked to draw between."""

    def __init__(self, seed: int) -> None:
        super().__init__(seed)
        self.draws: list[tuple[float, float, float]] = []

    def uniform(self, a: float, b: float) -> float:
        value = super().uniform(a, b)
        self.draws.append((a, b, value))
        return value


def test_d76_backoff_is_seeded_full_jitter_capped_and_counted(fault_server: FaultServer) -> None:
    (fault_server.root / "m.json").write_text("{}")
    limits = Limits(backoff_base="20ms", backoff_cap="80ms", retries=5)
    rng = RecordingRandom(1234)

    async def go() -> None:
        fetcher = Fetcher(limits, allow_insecure=True, rng=rng)
        try:
            await fetcher.fetch_small(fault_server.url("always500", "m.json"), max_bytes=100)
        finally:
            await fetcher.aclose()

    with pytest.raises(DownloadError, match="gave up after 6 attempts"):
        trio.run(go)
    deadline = time.monotonic() + 5  # the server logs a request after answering it
    while len(served(fault_server, "always500")) < 6 and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.2)
    assert len(served(fault_server, "always500")) == 6, "retries + 1 attempts, no more"
    # full jitter: uniform(0, min(cap, base * 2^n)), the cap holding from the third retry
    assert [(a, b) for a, b, _ in rng.draws] == [(0, 0.02), (0, 0.04), (0, 0.08), (0, 0.08),
                                                 (0, 0.08)]
    again = random.Random(1234)
    assert [v for _, _, v in rng.draws] == [again.uniform(0, b) for _, b, _ in rng.draws]


def test_d76_total_time_is_bounded_by_the_download_deadline(
        fault_server: FaultServer, artifact: tuple[str, bytes, Expected], cache: Path) -> None:
    name, _, expected = artifact
    limits = Limits(backoff_base="200ms", backoff_cap="200ms", retries=100,
                    download_deadline="1s")
    started = time.monotonic()
    with pytest.raises(DownloadError, match="not finished within 1s"):
        fetch(fault_server.url("always500", name), cache / name, expected, limits)
    assert time.monotonic() - started < 3


# -- row A14: each digest on its own -------------------------------------------------------------

@pytest.mark.parametrize("listed", ["sha256 only", "blake3 only", "both, sha256 wrong",
                                    "both, blake3 wrong"])
def test_a14_one_digest_mismatch_is_refused_and_deleted(fault_server: FaultServer,
                                                        artifact: tuple[str, bytes, Expected],
                                                        cache: Path, listed: str) -> None:
    name, _, good = artifact
    wrong = "0" * 64
    expected = {
        "sha256 only": Expected(good.size, wrong, None),
        "blake3 only": Expected(good.size, None, wrong),
        "both, sha256 wrong": Expected(good.size, wrong, good.blake3),
        "both, blake3 wrong": Expected(good.size, good.sha256, wrong),
    }[listed]
    algorithm = "SHA-256" if "sha256" in listed.split(",")[-1] else "BLAKE3"
    with pytest.raises(DigestMismatch, match=algorithm):
        fetch(fault_server.url("plain", name), cache / name, expected,
              Limits(retries=0, backoff_base="10ms"))
    assert sorted(p.name for p in cache.iterdir()) == [], "nothing kept that failed"


def test_downloaded_bytes_go_to_disk_as_they_arrive_then_fsync_then_rename(
        fault_server: FaultServer, artifact: tuple[str, bytes, Expected], cache: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Each written batch is handed to the disk at once (sync_file_range, no wait), so that the
    fsync before the rename finds little left to write; the order and the promise are those of
    an fsync alone: every byte, then fsync, then the rename."""
    from updaterd import fsutil

    calls: list[Any] = []
    real_writeback, real_fsync, real_replace = fsutil.start_writeback, os.fsync, os.replace

    def writeback(fd: int, offset: int, length: int) -> None:
        calls.append((offset, length))
        real_writeback(fd, offset, length)

    def fsync(fd: int) -> None:
        calls.append("fsync")
        real_fsync(fd)

    def replace(a: Any, b: Any) -> None:
        calls.append("rename")
        real_replace(a, b)

    monkeypatch.setattr(fsutil, "start_writeback", writeback)
    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    name, data, expected = artifact
    assert fetch(fault_server.url("ok", name), cache / name, expected) == data
    ranges = [c for c in calls if isinstance(c, tuple)]
    assert len(ranges) >= 2, "handed over batch by batch, not at the end"
    assert ranges[0][0] == 0 and all(a[0] + a[1] == b[0] for a, b in itertools.pairwise(ranges))
    assert ranges[-1][0] + ranges[-1][1] == SIZE
    last = max(i for i, c in enumerate(calls) if isinstance(c, tuple))
    assert calls[last + 1:last + 3] == ["fsync", "rename"]  # (before: the .meta file's own)


def test_writeback_is_a_hint_that_may_be_missing(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from updaterd import fsutil

    path = tmp_path / "f"
    path.write_bytes(b"x" * 10000)
    fd = os.open(path, os.O_RDWR)
    try:
        fsutil.start_writeback(fd, 0, 10000)  # glibc has it: no error, nothing changed
        monkeypatch.setattr(fsutil, "_libc_sync_file_range", lambda: None)
        fsutil.start_writeback(fd, 0, 10000)
    finally:
        os.close(fd)
    assert path.read_bytes() == b"x" * 10000


def test_every_client_shares_one_tls_context_per_ca_setting(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A client is made for each check of each app; building a TLS context reads the whole CA
    store (time, and 1-2 MiB each), so they share one, and a new one comes only with other
    CA settings or a store changed on disk (a CA added: no restart needed)."""
    import ssl

    from updaterd.trust import tlstrust

    built: list[str | None] = []
    real = tlstrust._build

    def counting(ca_file: str | None, paths: ssl.DefaultVerifyPaths) -> ssl.SSLContext:
        built.append(ca_file or os.environ.get("SSL_CERT_FILE"))
        return real(ca_file, paths)

    monkeypatch.setattr(tlstrust, "_CONTEXTS", {})
    monkeypatch.setattr(tlstrust, "_build", counting)
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    bundle = tmp_path / "ca.pem"
    bundle.write_bytes(Path(ssl.get_default_verify_paths().openssl_cafile).read_bytes()
                       if Path(ssl.get_default_verify_paths().openssl_cafile).is_file()
                       else Path("/etc/ssl/certs/ca-certificates.crt").read_bytes())

    async def clients(ca_file: str | None = None) -> None:
        for _ in range(3):
            await Fetcher(FAST, ca_file=ca_file).aclose()

    trio.run(clients)
    assert built == [None]
    monkeypatch.setenv("SSL_CERT_FILE", str(bundle))
    trio.run(clients)
    assert built == [None, str(bundle)]
    monkeypatch.delenv("SSL_CERT_FILE")
    trio.run(clients, str(bundle))
    assert built == [None, str(bundle), str(bundle)]
    os.utime(bundle, ns=(1, 1))  # the bundle changed on disk
    trio.run(clients, str(bundle))
    assert len(built) == 4


# -- caches and odd servers: validators and encodings ----------------------------------------------

def test_a_weak_etag_is_never_sent_in_if_range_the_date_is(
        fault_server: FaultServer, artifact: tuple[str, bytes, Expected], cache: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    """Behind Varnish with mod_deflate every ETag is weak: sent in If-Range it never matches
    (RFC 9110), so every resume started over. The Last-Modified date resumes."""
    name, data, expected = artifact
    assert fetch(fault_server.url("weakdrop", name), cache / name, expected) == data
    first, second = served(fault_server, "weakdrop")
    assert first["range"] is None and second["range"] == f"bytes={first['sent']}-"
    assert second["if_range"] == "Mon, 07 Dec 2026 10:00:00 GMT" and second["status"] == 206
    assert first["sent"] + second["sent"] == len(data), "only the rest was sent again"
    assert "ignored the range" not in caplog.text


def test_a_range_ignored_says_why(fault_server: FaultServer,
                                  artifact: tuple[str, bytes, Expected], cache: Path,
                                  caplog: pytest.LogCaptureFixture) -> None:
    import logging

    name, data, expected = artifact
    caplog.set_level(logging.INFO, logger="updaterd.fetcher")
    url = fault_server.url("plain", name)
    plant_partial(cache / name, data, expected, url, '"an-old-etag"')
    assert fetch(url, cache / name, expected) == data
    assert "the server ignored the range (the file changed since: If-Range \"an-old-etag\" " \
        "no longer matches); starting over" in caplog.text
    url = fault_server.url("norange", name)
    (cache / name).unlink()
    plant_partial(cache / name, data, expected, url, server_etag(data))
    assert fetch(url, cache / name, expected) == data
    assert "answers ranges with the whole file" in caplog.text


def test_a_file_whose_encoding_a_cache_changed_is_named_as_such(
        fault_server: FaultServer, cache: Path) -> None:
    """Varnish gunzipped a .tar.gz that Apache labelled Content-Encoding: gzip: the size no
    longer matched the signed one, and the message did not say why."""
    import gzip

    for inside, why in ((os.urandom(1000) * 200, "more than the signed"),  # a tar: larger
                        (os.urandom(200_000), "the answer ended at 200000 of the signed")):
        raw = gzip.compress(inside, mtime=0)
        (fault_server.root / "app.tar.gz").write_bytes(raw)
        d = Digests()
        d.update(raw)
        with pytest.raises(DigestMismatch) as e:
            fetch(fault_server.url("gunzipped", "app.tar.gz"), cache / "app.tar.gz",
                  Expected(len(raw), d.sha256, d.blake3))
        assert why in str(e.value)
        assert "labelled Content-Encoding: gzip" in str(e.value)
        assert "changed the file's encoding" in str(e.value) and "docs/feed.md" in str(e.value)
        assert not list(cache.iterdir()), "nothing of it is kept"


def test_an_identity_answer_that_fails_verification_says_nothing_of_encodings(
        fault_server: FaultServer, artifact: tuple[str, bytes, Expected], cache: Path) -> None:
    name, _, expected = artifact
    with pytest.raises(DigestMismatch) as e:
        fetch(fault_server.url("bigger", name), cache / name, expected)
    assert "Content-Encoding" not in str(e.value)
