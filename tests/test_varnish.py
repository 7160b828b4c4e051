"""A feed through a real Varnish (Debian's 7.1) in front of nginx set up as users set it up
(gzip on; a `.tar.gz` labelled `Content-Encoding: gzip`, as Apache's AddEncoding does): each
failure as it was first seen through it, and what updaterd does and says now."""

from __future__ import annotations

import contextlib
import logging
import os
import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import trio

from tests.conftest import Host
from tests.helpers import Feed, run_updaterd
from tests.servers.nginx import Nginx, running_nginx
from tests.servers.varnish import HONOUR_NO_CACHE, Varnish, running_varnish
from updaterd.errors import DigestMismatch
from updaterd.host.config import Limits
from updaterd.net.cachefile import Expected
from updaterd.net.fetcher import Fetcher
from updaterd.trust.digests import Digests

# gzip for every file a client may take gzipped (Varnish asks for it), and the encoding label a
# server puts on a .tar.gz (Apache's `AddEncoding x-gzip .gz`)
AS_USERS_DO = """
        gzip on; gzip_types application/octet-stream application/json; gzip_min_length 1;
        location ~ \\.tar\\.gz$ { gzip off; add_header Content-Encoding gzip; }
"""


@dataclass
class Cached:
    origin: Nginx
    cache: Varnish


@contextlib.contextmanager
def varnish_before_nginx(tmp_path: Path, origin: str = "", recv: str = "") -> Iterator[Cached]:
    with running_nginx(tmp_path / "origin", http_extra=origin) as server, \
            running_varnish(tmp_path / "varnish", server.port, recv) as cache:
        yield Cached(server, cache)


@pytest.fixture
def cached(tmp_path: Path) -> Iterator[Cached]:
    """Varnish's defaults before nginx set up as users do (gzip, the encoding label)."""
    with varnish_before_nginx(tmp_path, AS_USERS_DO) as both:
        yield both


@pytest.fixture
def plain(tmp_path: Path) -> Iterator[Cached]:
    """Varnish's defaults before nginx's: files served as they are."""
    with varnish_before_nginx(tmp_path) as both:
        yield both


@pytest.fixture
def honouring(tmp_path: Path) -> Iterator[Cached]:
    """Varnish with the line docs/feed.md gives: a request that says no-cache passes."""
    with varnish_before_nginx(tmp_path, recv=HONOUR_NO_CACHE) as both:
        yield both


def expected_of(data: bytes) -> Expected:
    d = Digests()
    d.update(data)
    return Expected(len(data), d.sha256, d.blake3)


def fetch(url: str, dest: Path, expected: Expected) -> bytes:
    async def go() -> bytes:
        fetcher = Fetcher(Limits(backoff_base="10ms", backoff_cap="50ms", retries=2),
                          allow_insecure=True)
        try:
            with await fetcher.fetch_file(url, dest, expected) as f:
                return f.read()
        finally:
            await fetcher.aclose()

    return trio.run(go)


def test_a_resume_through_varnish_with_gzip_on_takes_the_range(
        cached: Cached, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Varnish gives a weak ETag for what its origin may gzip; an If-Range with it is never
    met, and every resume started over. The Last-Modified date resumes."""
    caplog.set_level(logging.INFO, logger="updaterd.fetcher")
    data = os.urandom(3 << 20)
    (cached.origin.root / "a.bin").write_bytes(data)
    url = cached.cache.url("a.bin")
    head = httpx.get(url, headers={"Accept-Encoding": "identity"})
    assert head.headers["etag"].startswith("W/"), head.headers  # as it was seen
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "a.bin.part").write_bytes(data[: 1 << 20])
    from updaterd.net.fetcher import _PartMeta, _save_meta

    meta = _PartMeta(url=url, size=len(data), sha256=expected_of(data).sha256,
                     blake3=expected_of(data).blake3, etag=head.headers["etag"],
                     last_modified=head.headers["last-modified"])
    _save_meta(cache / "a.bin.part.json", meta)
    assert fetch(url, cache / "a.bin", expected_of(data)) == data
    assert "discarding partial" not in caplog.text
    assert "ignored the range" not in caplog.text, "Varnish answered the range"


def test_a_tar_gz_varnish_decompressed_is_named_for_its_encoding(cached: Cached,
                                                                 tmp_path: Path) -> None:
    """The origin labels the .tar.gz gzip; Varnish decompresses it for a client that asks for
    it as it is, drops the label, and the file fails its signed size."""
    import gzip

    raw = gzip.compress(os.urandom(4096) * 100, mtime=0)
    (cached.origin.root / "app.tar.gz").write_bytes(raw)
    (tmp_path / "cache").mkdir()
    with pytest.raises(DigestMismatch) as e:
        fetch(cached.cache.url("app.tar.gz"), tmp_path / "cache" / "app.tar.gz",
              expected_of(raw))
    # a miss streams it (more bytes than signed); a hit may announce its length first
    assert re.search(f"(more bytes than|announces 409600 bytes, more than) the signed "
                     f"{len(raw)}", str(e.value)), e.value
    assert "the answer varies by encoding (Vary: Accept-Encoding, weak ETag" in str(e.value)
    assert "changed the file's encoding" in str(e.value)


def _purge_the_manifest_alone(cached: Cached, host: Host, tmp_path: Path
                              ) -> subprocess.CompletedProcess[str]:
    feed = Feed(folder=cached.origin.root / "feed", work=tmp_path / "work")
    feed.release("1.0.0")
    host.configure(source="manifest", url=cached.cache.url("feed/manifest.json"),
                   public_keys=[feed.pub], allow_insecure=True)
    first = run_updaterd("--config", host.config, "--once")
    assert first.returncode == 0 and host.current() == "1.0.0", first.stderr
    feed.release("1.1.0")
    cached.cache.ban("/feed/manifest.json")  # the signature stays cached: the old one
    return run_updaterd("--config", host.config, "--once")


def test_varnish_ignores_no_cache_by_default_and_the_refusal_says_so(
        plain: Cached, host: Host, tmp_path: Path) -> None:
    r = _purge_the_manifest_alone(plain, host, tmp_path)
    assert r.returncode == 1 and host.current() == "1.0.0"
    assert "manifest signature refused" in r.stderr
    assert "or a cache in front of it ignores no-cache, as Varnish does by default" in r.stderr


def test_varnish_with_the_guides_line_passes_no_cache_and_the_host_updates(
        honouring: Cached, host: Host, tmp_path: Path) -> None:
    r = _purge_the_manifest_alone(honouring, host, tmp_path)
    assert r.returncode == 0, r.stderr
    assert host.current() == "1.1.0"
    assert "as a cache in front of the feed served them; asked again past it" in r.stderr
