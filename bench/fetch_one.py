"""Download one artifact with updaterd's downloader (digests on the way); print peak RSS (bytes)
and the seconds the download took once the process had started (what a running daemon pays).

Usage: python -m bench.fetch_one URL DEST SIZE SHA256 BLAKE3
"""

from __future__ import annotations

import resource
import sys
import time
from pathlib import Path

import trio

from updaterd.host.config import Limits
from updaterd.net.cachefile import Expected
from updaterd.net.fetcher import Fetcher


async def main(url: str, dest: str, size: int, sha256: str, blake3: str) -> None:
    fetcher = Fetcher(Limits(), allow_insecure=True)
    try:
        f = await fetcher.fetch_file(url, Path(dest), Expected(size, sha256, blake3))
        f.close()
    finally:
        await fetcher.aclose()


if __name__ == "__main__":
    url, dest, size, sha, b3 = sys.argv[1:6]
    started = time.perf_counter()
    trio.run(main, url, dest, int(size), sha, b3)
    took = time.perf_counter() - started
    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, f"{took:.4f}")
