"""Row F124 of the catalogue: lengths past 2 GiB and 4 GiB. A sparse artifact of 4 GiB + 1
byte (no disk needed for its zeros) is downloaded from nginx, whole and then resumed from an
offset past 2^32, and checked against digests computed by the real sha256sum and b3sum."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import trio

from tests.conftest import Nginx
from updaterd.host.config import Limits
from updaterd.net.cachefile import Expected
from updaterd.net.fetcher import Fetcher
from updaterd.trust.feed import Artifact

SIZE = (4 << 30) + 1


@pytest.fixture(scope="module")
def sparse(nginx: Nginx) -> tuple[str, Expected]:
    path = nginx.root / "sparse-4g.bin"
    with open(path, "wb") as f:
        f.seek(SIZE - 1)
        f.write(b"\x01")  # one real byte past 2^32, the rest a hole
    sha = subprocess.run(["sha256sum", str(path)], capture_output=True, text=True,
                         check=True).stdout.split()[0]
    b3 = subprocess.run(["b3sum", str(path)], capture_output=True, text=True,
                        check=True).stdout.split()[0]
    return nginx.url(path.name), Expected(SIZE, sha, b3)


def _download(url: str, dest: Path, expected: Expected) -> int:
    async def go() -> int:
        fetcher = Fetcher(Limits(), allow_insecure=True)
        try:
            with await fetcher.fetch_file(url, dest, expected) as f:
                return os.fstat(f.fileno()).st_size
        finally:
            await fetcher.aclose()

    return trio.run(go)


def test_f124_declared_lengths_past_2_and_4_gib_decode() -> None:
    for size in ((2 << 30) + 1, SIZE, 2**50):
        a = Artifact(platform="linux-x86_64", url="a.tar", size=size, sha256="0" * 64)
        assert a.size == size


def test_f124_four_gib_download_and_resume_past_2_32(sparse: tuple[str, Expected],
                                                      tmp_path: Path) -> None:
    url, expected = sparse
    dest = tmp_path / "whole" / "sparse-4g.bin"
    dest.parent.mkdir()
    assert _download(url, dest, expected) == SIZE
    dest.unlink()
    # a partial that stops 1 byte short of the end, 4 GiB in (sparse too)
    resume = tmp_path / "resume"
    resume.mkdir()
    part = resume / "sparse-4g.bin.part"
    with open(part, "wb") as f:
        f.truncate(SIZE - 1)
    import json

    (resume / "sparse-4g.bin.part.json").write_text(json.dumps({
        "url": url, "size": SIZE, "sha256": expected.sha256, "blake3": expected.blake3,
        "etag": None, "last_modified": _last_modified(url)}))
    assert _download(url, resume / "sparse-4g.bin", expected) == SIZE


def _last_modified(url: str) -> str:
    import httpx

    return httpx.head(url).headers["last-modified"]
