"""A feed served by the other servers docs/feed.md gives lines for, as new users serve them:
Debian's Apache 2.4 with its default modules (mod_deflate, mod_mime), alone and behind
Varnish 7.1, and Caddy 2. Each server runs the guide's own lines, read out of docs/feed.md, so
the guide says what the tests ran; each failure first seen on that server is reproduced."""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import Host
from tests.helpers import Feed, run_updaterd
from tests.servers.apache import Apache, running_apache
from tests.servers.caddy import Caddy, running_caddy
from tests.servers.nginx import running_nginx
from tests.servers.squid import running_squid
from tests.servers.varnish import running_varnish
from tests.test_varnish import expected_of, fetch
from updaterd.net.fetcher import _PartMeta, _save_meta

GUIDE = Path(__file__).parents[1] / "docs" / "feed.md"
# what users write, and what Apache's Debian mime.conf carries commented out
ADD_ENCODING = "AddEncoding x-gzip .gz .tgz"


def guide_block(language: str) -> list[str]:
    """The lines inside the guide's ```language block, without its first and last line (the
    <Directory> or site around them, which a test server writes for its own folder)."""
    found = re.search(rf"```{language}\n(.*?)```", GUIDE.read_text(), re.S)
    assert found, f"docs/feed.md has no {language} block"
    return [line.strip() for line in found.group(1).splitlines()[1:-1]]


NGINX_LINES = "\n    ".join(guide_block("nginx"))
APACHE_LINES = "\n    ".join(guide_block("apache"))
CADDY_LINES = "\n    ".join(line for line in guide_block("caddy")
                            if not line.startswith("root "))  # the test server's own root


def once(host: Host) -> subprocess.CompletedProcess[str]:
    return run_updaterd("--config", host.config, "--once")


def follow(host: Host, url: str, feed: Feed) -> None:
    host.configure(source="manifest", url=url, public_keys=[feed.pub], allow_insecure=True)


@contextlib.contextmanager
def apache_behind_varnish(tmp_path: Path, directory: str) -> Iterator[tuple[Apache, str]]:
    """Apache with a user's AddEncoding line (and `directory` for the feed's folder), Varnish's
    defaults before it; yields the server and the feed's URL through the cache."""
    with running_apache(directory, server=ADD_ENCODING) as apache, \
            running_varnish(tmp_path / "varnish", apache.port) as cache:
        yield apache, cache.url("feed/manifest.json")


def test_apache_labelling_a_tar_gz_gzip_behind_varnish_blocks_the_install_by_name(
        host: Host, tmp_path: Path) -> None:
    """Issue 40, point 2, as first seen: "server announces 5007360 bytes, more than the signed
    2218419", with no word of the encoding."""
    with apache_behind_varnish(tmp_path, "") as (apache, url):
        feed = Feed(folder=apache.root / "feed", work=tmp_path / "work")
        feed.release("1.0.0")
        follow(host, url, feed)
        r = once(host)
    assert r.returncode == 1
    assert re.search(r"(more bytes than|more than) the signed \d+", r.stderr), r.stderr
    assert "changed the file's encoding" in r.stderr
    assert host.current() is None


def test_apache_with_the_guides_lines_behind_varnish_installs(host: Host,
                                                              tmp_path: Path) -> None:
    with apache_behind_varnish(tmp_path, APACHE_LINES) as (apache, url):
        feed = Feed(folder=apache.root / "feed", work=tmp_path / "work")
        feed.release("1.0.0")
        follow(host, url, feed)
        r = once(host)
        assert r.returncode == 0, r.stderr
        assert host.current() == "1.0.0"
        feed.release("1.1.0")
        r = once(host)
    assert r.returncode == 0, r.stderr
    assert host.current() == "1.1.0"


def test_apache_with_the_guides_lines_serves_the_whole_cycle(host: Host,
                                                             tmp_path: Path) -> None:
    """Alone, with the user's AddEncoding line still on for the server: the small files
    say no-cache, the artifacts carry no encoding, a re-check is a 304, and an update goes
    through."""
    with running_apache(APACHE_LINES, server=ADD_ENCODING) as apache:
        feed = Feed(folder=apache.root / "feed", work=tmp_path / "work")
        art = feed.release("1.0.0")
        follow(host, apache.url("feed/manifest.json"), feed)
        assert once(host).returncode == 0 and host.current() == "1.0.0"
        small = httpx.head(apache.url("feed/manifest.json"))
        big = httpx.head(apache.url(f"feed/{art.name}"))
        r = once(host)
        assert r.returncode == 0, r.stderr
        manifests = [q["status"] for q in apache.requests() if q["uri"] == "/feed/manifest.json"
                     and q["method"] == "GET"]
        feed.release("1.1.0")
        r = once(host)
    assert small.headers["cache-control"] == "no-cache"
    assert "content-encoding" not in big.headers, big.headers
    assert big.headers["cache-control"] == "public, max-age=31536000, immutable"
    assert manifests == [200, 304]
    assert r.returncode == 0, r.stderr
    assert host.current() == "1.1.0"


def resumes(url: str, data: bytes, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A third of `data` kept from a cut download at `url` is resumed, not started over."""
    import logging

    caplog.set_level(logging.INFO, logger="updaterd.fetcher")
    head = httpx.head(url, headers={"Accept-Encoding": "identity"})
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "a.bin.part").write_bytes(data[: len(data) // 3])
    expected = expected_of(data)
    _save_meta(cache / "a.bin.part.json", _PartMeta(
        url=url, size=len(data), sha256=expected.sha256, blake3=expected.blake3,
        etag=head.headers.get("etag"), last_modified=head.headers.get("last-modified")))
    assert fetch(url, cache / "a.bin", expected) == data
    assert "discarding partial" not in caplog.text
    assert "ignored the range" not in caplog.text


def test_a_resume_through_varnish_before_apache_takes_the_range(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with apache_behind_varnish(tmp_path, APACHE_LINES) as (apache, url):
        data = os.urandom(3 << 20)
        (apache.root / "feed").mkdir()
        (apache.root / "feed" / "a.bin").write_bytes(data)
        resumes(url.replace("manifest.json", "a.bin"), data, tmp_path, caplog)


def test_a_resume_through_varnish_before_apache_compressing_everything_takes_the_range(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Issue 40, point 3, as first seen: mod_deflate on for every file (a common snippet) and
    Varnish before it give a weak ETag, and an If-Range with it was never met: every resume
    started over. The Last-Modified date resumes."""
    with apache_behind_varnish(tmp_path, "SetOutputFilter DEFLATE") as (apache, url):
        data = os.urandom(1 << 10) * (3 << 10)  # compressible: mod_deflate keeps it gzipped
        (apache.root / "feed").mkdir()
        (apache.root / "feed" / "a.bin").write_bytes(data)
        url = url.replace("manifest.json", "a.bin")
        assert httpx.head(url).headers["etag"].startswith("W/")  # as it was seen
        resumes(url, data, tmp_path, caplog)


@pytest.fixture
def caddy(tmp_path: Path) -> Iterator[Caddy]:
    with running_caddy(tmp_path / "caddy", CADDY_LINES) as server:
        yield server


def test_caddy_with_the_guides_lines_serves_the_whole_cycle(host: Host, caddy: Caddy,
                                                            tmp_path: Path) -> None:
    feed = Feed(folder=caddy.root / "feed", work=tmp_path / "work")
    art = feed.release("1.0.0")
    follow(host, caddy.url("feed/manifest.json"), feed)
    assert once(host).returncode == 0 and host.current() == "1.0.0"
    r = once(host)
    assert r.returncode == 0, r.stderr
    assert [q["status"] for q in caddy.requests()
            if q["uri"] == "/feed/manifest.json"] == [200, 304]
    assert httpx.head(caddy.url("feed/manifest.json")).headers["cache-control"] == "no-cache"
    big = httpx.head(caddy.url(f"feed/{art.name}"), headers={"Accept-Encoding": "gzip"})
    assert "content-encoding" not in big.headers
    assert big.headers["cache-control"] == "public, max-age=31536000, immutable"
    feed.release("1.1.0")
    r = once(host)
    assert r.returncode == 0, r.stderr
    assert host.current() == "1.1.0"


def test_a_resume_from_caddy_takes_the_range(caddy: Caddy, tmp_path: Path,
                                              caplog: pytest.LogCaptureFixture) -> None:
    data = os.urandom(3 << 20)
    (caddy.root / "a.bin").write_bytes(data)
    resumes(caddy.url("a.bin"), data, tmp_path, caplog)


@contextlib.contextmanager
def guides_nginx_behind(cache: str, tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """nginx with the guide's lines for the feed's folder, behind `cache` (Squid keeping an
    answer without an expiry for an hour; Varnish's defaults); yields the folder and the
    feed's URL through the cache."""
    with running_nginx(tmp_path / "origin",
                       http_extra=f"location /feed/ {{ {NGINX_LINES} }}") as origin, \
            (running_squid(origin.port) if cache == "squid"
             else running_varnish(tmp_path / "varnish", origin.port)) as front:
        yield origin.root / "feed", front.url("feed/manifest.json")


@pytest.mark.parametrize("cache", ["squid", "varnish"])
def test_with_the_guides_nginx_lines_a_cache_never_hides_a_release(
        cache: str, host: Host, tmp_path: Path) -> None:
    """The small files say no-cache: Squid revalidates them at every request (its one-hour
    default for answers without an expiry no longer applies) and Varnish keeps none, so a
    release is seen at the first check after it, without `--fresh` or a purge."""
    with guides_nginx_behind(cache, tmp_path) as (folder, url):
        feed = Feed(folder=folder, work=tmp_path / "work")
        feed.release("1.0.0")
        follow(host, url, feed)
        assert once(host).returncode == 0 and host.current() == "1.0.0"
        # nginx's validators count seconds, and a signature's size never changes: a second
        # publish within the same second looks unchanged to a cache revalidating the old
        # signature (hosts then ask past it, as the test without the wait shows)
        time.sleep(1.1)
        feed.release("1.1.0")
        r = once(host)
    assert r.returncode == 0, r.stderr
    assert host.current() == "1.1.0"
    assert "asked again past it" not in r.stderr
