"""Streaming installs (row 183, engine/streaming.py): a tar artifact is downloaded, hashed and
unpacked in one pass. First the reader in this process (every archive of the extraction corpus
streamed in chunks of random sizes; the digest checked at the end), then the real daemon
against nginx and the fault server: nothing of the archive in the cache, a digest that fails
only at the last byte, cuts at random bytes resumed, a server that cannot resume, kill -9
mid-stream, and a disk with room for the release but not for the archive beside it."""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
import trio

from tests import archive_corpus
from tests.conftest import FaultServer, Host, Nginx
from tests.helpers import BIN, Feed, make_tar, release_files, run_updaterd
from updaterd.engine.streaming import Pipe, StreamStopped, unpack_as_it_arrives
from updaterd.errors import ArchiveError, DigestMismatch
from updaterd.net.cachefile import Expected
from updaterd.trust import archive
from updaterd.trust.digests import Digests


def expected_of(data: bytes) -> Expected:
    d = Digests()
    d.update(data)
    return Expected(len(data), d.sha256, d.blake3)


def streamed(data: bytes, staging: Path, *, expected: Expected | None = None,
             kind: archive.Kind = "tar", fail_at: int | None = None) -> Path:
    """`data` extracted as the daemon extracts a download (`unpack_as_it_arrives`): fed by a
    trio task in chunks of random sizes, read by the extraction on a thread of its own.
    `fail_at`: the download stops there (the error the extraction must raise)."""
    rng = random.Random(len(data))

    async def feed(pipe: Pipe) -> None:
        at = 0
        while at < len(data):
            if fail_at is not None and at >= fail_at:
                raise StreamStopped("cut on purpose")
            n = rng.randrange(1, 200_000)
            await pipe.put(data[at:at + n])
            at += n

    return trio.run(lambda: unpack_as_it_arrives(
        "a.tar", expected or expected_of(data), feed,
        lambda reader: archive.extract(reader, kind, staging, archive_corpus.LIMITS, "app")))


@pytest.mark.parametrize("name", sorted(archive_corpus.HOSTILE))
def test_b54_every_hostile_archive_streamed_is_refused_naming_a_member(
        name: str, tmp_path: Path) -> None:
    assert archive_corpus.check_hostile(name, tmp_path, streamed) == ""


@pytest.mark.parametrize("name", sorted(archive_corpus.GOOD))
def test_every_good_archive_streamed_extracts_as_it_describes(name: str,
                                                              tmp_path: Path) -> None:
    assert archive_corpus.check_good(name, tmp_path, streamed) == ""


def sample_tar(tmp_path: Path, fmt: str = "tar", size: int = 3 << 20) -> bytes:
    files = release_files("1.0.0")
    files["share/big.bin"] = (os.urandom(size), 0o644)
    return make_tar(tmp_path / f"a.{fmt}", files, top="app-1.0.0").read_bytes()


@pytest.mark.parametrize("fmt", ["tar", "tar.gz", "tar.xz", "tar.zst", "tar.bz2"])
def test_every_tar_format_streams(fmt: str, tmp_path: Path) -> None:
    data = sample_tar(tmp_path, fmt, 1 << 20)
    (tmp_path / "s").mkdir()
    root = streamed(data, tmp_path / "s", kind=fmt)  # type: ignore[arg-type]
    assert (root / "share" / "VERSION").read_text() == "1.0.0\n"


def test_a_digest_that_fails_at_the_last_byte_is_raised_by_the_extraction(
        tmp_path: Path) -> None:
    data = sample_tar(tmp_path)
    wrong = expected_of(data[:-1] + bytes([data[-1] ^ 1]))
    (tmp_path / "s").mkdir()
    with pytest.raises(DigestMismatch, match=r"a\.tar: SHA-256 mismatch"):
        streamed(data, tmp_path / "s", expected=wrong)


def test_a_shorter_or_longer_artifact_than_signed_is_refused(tmp_path: Path) -> None:
    data = sample_tar(tmp_path)
    for n, promise in enumerate((expected_of(data + b"\0" * 512),
                                 Expected(len(data) - 1, None, None))):
        (tmp_path / f"s{n}").mkdir()
        with pytest.raises((DigestMismatch, ArchiveError)):
            streamed(data, tmp_path / f"s{n}", expected=promise)


def test_a_download_that_stops_is_raised_in_the_staging_thread(tmp_path: Path) -> None:
    data = sample_tar(tmp_path)
    (tmp_path / "s").mkdir()
    with pytest.raises(StreamStopped, match="cut on purpose"):
        streamed(data, tmp_path / "s", fail_at=len(data) // 2)


# -- the real daemon -------------------------------------------------------------------------


def once(host: Host) -> subprocess.CompletedProcess[str]:
    return run_updaterd("--config", host.config, "--once")


def big_release(feed: Feed, version: str, size: int = 3 << 20) -> Path:
    files = release_files(version)
    files["share/big.bin"] = (os.urandom(size), 0o644)
    art = make_tar(feed.work / f"hello-{version}-linux-x86_64.tar.gz", files,
                   top=f"hello-{version}")
    feed.publish(version, [art])
    return art


def staging_is_clean(host: Host) -> bool:
    staging = host.prefix / ".staging"
    return not staging.exists() or not any(staging.iterdir())


def test_a_tar_artifact_installs_as_it_downloads_and_the_cache_never_holds_it(
        host: Host, nginx: Nginx, served_feed: Feed) -> None:
    art = big_release(served_feed, "1.0.0")
    host.follow(nginx, served_feed)
    r = once(host)
    assert r.returncode == 0, r.stderr
    assert host.current() == "1.0.0"
    assert "installing 1.0.0 as it downloads from" in r.stderr
    assert not list((host.base / "cache" / "hello").iterdir())
    uri = f"/{served_feed.folder.name}/{art.name}"
    assert [q["status"] for q in nginx.requests() if q["uri"] == uri] == [200]


def test_j183_a_digest_that_fails_only_at_the_last_byte_installs_nothing(
        host: Host, nginx: Nginx, served_feed: Feed) -> None:
    served_feed.release("1.0.0")
    host.follow(nginx, served_feed)
    assert once(host).returncode == 0
    art = big_release(served_feed, "1.1.0")
    served = served_feed.folder / art.name
    data = bytearray(served.read_bytes())
    data[-1] ^= 0xFF  # the gzip trailer's last byte: every member extracts before it
    served.write_bytes(bytes(data))
    r = once(host)
    assert r.returncode == 1
    assert "SHA-256 mismatch" in r.stderr, r.stderr
    assert host.current() == "1.0.0"
    assert sorted(os.listdir(host.prefix / "releases")) == ["1.0.0"]
    assert staging_is_clean(host)


def test_j183_cuts_at_random_bytes_are_resumed_where_they_stopped(
        host: Host, fault_server: FaultServer, tmp_path: Path) -> None:
    feed = Feed(folder=fault_server.root, work=tmp_path / "work")
    art = big_release(feed, "1.0.0")
    host.configure(source="manifest", url=fault_server.url("cuts", "manifest.json"),
                   public_keys=[feed.pub], allow_insecure=True)
    r = once(host)
    assert r.returncode == 0, r.stderr
    assert host.current() == "1.0.0"
    asked = [q for q in fault_server.requests() if q["path"].endswith(art.name)]
    assert len(asked) == 4 and asked[0]["range"] is None
    sent = sum(q["sent"] for q in asked)
    assert sent == art.stat().st_size, "no byte fetched twice"
    assert all(q["range"] == f"bytes={sum(p['sent'] for p in asked[:i])}-"
               for i, q in enumerate(asked) if i), asked
    assert "installing 1.0.0 as it downloads" in r.stderr and "stopped" not in r.stderr


def test_j183_a_server_that_cannot_resume_is_fetched_through_the_cache_said_why(
        host: Host, fault_server: FaultServer, tmp_path: Path) -> None:
    feed = Feed(folder=fault_server.root, work=tmp_path / "work")
    big_release(feed, "1.0.0")
    host.configure(source="manifest", url=fault_server.url("dropnorange", "manifest.json"),
                   public_keys=[feed.pub], allow_insecure=True)
    r = once(host)
    assert r.returncode == 0, r.stderr
    assert host.current() == "1.0.0"
    assert "the streaming install of 1.0.0 stopped" in r.stderr
    assert "the server ignored the range (no Accept-Ranges" in r.stderr or \
        "the server ignored the range (" in r.stderr
    assert "fetched through the cache" in r.stderr
    assert staging_is_clean(host)


def test_j183_a_kill_9_mid_stream_leaves_nothing_a_switch_could_take_and_starts_over(
        host: Host, nginx: Nginx, served_feed: Feed) -> None:
    served_feed.release("1.0.0")
    host.follow(nginx, served_feed, max_rate="400KiB/s")
    assert once(host).returncode == 0
    art = big_release(served_feed, "1.1.0")
    proc = subprocess.Popen([str(BIN / "updaterd"), "--config", str(host.config), "--once"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        uri = f"/{served_feed.folder.name}/{art.name}"
        while not [q for q in nginx.requests() if q["uri"] == uri] \
                and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(2)  # a good part of it arrived, and members were written
        assert not staging_is_clean(host), "caught mid-stream"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert host.current() == "1.0.0"
    assert sorted(os.listdir(host.prefix / "releases")) == ["1.0.0"]
    r = once(host)
    assert r.returncode == 0, r.stderr
    assert host.current() == "1.1.0"
    assert staging_is_clean(host)
    asked = [q for q in nginx.requests() if q["uri"] == uri]
    assert len(asked) == 2 and asked[-1]["range"] == "", "started over: nothing was kept"


@pytest.fixture
def small_disk(tmp_path: Path) -> Path:
    """A tmpfs of 16 MiB (root mounts it): the host's state, cache and prefix on it."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root")
    where = tmp_path / "disk"
    where.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m,mode=0755", "tmpfs", str(where)],
                   check=True)
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def test_a_disk_with_room_for_the_release_but_not_the_archive_beside_it_installs(
        small_disk: Path, nginx: Nginx, served_feed: Feed) -> None:
    """12 MiB of incompressible data: the archive is about as large, so release and archive
    together (24 MiB) do not fit in 16 MiB; the release and a tenth more do."""
    host = Host(small_disk)
    art = big_release(served_feed, "1.0.0", 12 << 20)
    assert art.stat().st_size > 12 << 20
    host.follow(nginx, served_feed)
    r = once(host)
    assert r.returncode == 0, r.stderr
    assert host.current() == "1.0.0"
