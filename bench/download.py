"""Download benchmark: updaterd's downloader (SHA-256 and BLAKE3 on the way) against `curl -o`,
and against `curl -o` followed by `sha256sum` and `b3sum`, from nginx on 127.0.0.1, in one run.

Each run writes a new file (the figures include the VM's cost of allocating it). Prints medians
and ratios; `--size` in MiB (default 1024), `--runs` (default 3).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.servers.nginx import running_nginx


def timed(cmd: list[str]) -> tuple[float, str]:
    start = time.perf_counter()
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return time.perf_counter() - start, out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=1024, help="MiB")
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    size = args.size << 20
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_DIR")) as tmp_name:
        tmp = Path(tmp_name)
        with running_nginx(tmp / "nginx") as nginx:
            art = nginx.root / "artifact.bin"
            with open(art, "wb") as f:
                for _ in range(args.size):
                    f.write(os.urandom(1 << 20))
            sha = subprocess.run(["sha256sum", str(art)], capture_output=True, text=True,
                                 check=True).stdout.split()[0]
            b3 = subprocess.run(["b3sum", str(art)], capture_output=True, text=True,
                                check=True).stdout.split()[0]
            url = nginx.url("artifact.bin")
            out = tmp / "out"
            out.mkdir()
            results: dict[str, list[float]] = {"updaterd (sha256+blake3 inline)": [],
                                               "curl -o": [],
                                               "curl -o; sha256sum; b3sum": []}
            rss: list[int] = []
            for i in range(args.runs):
                dest = out / f"u{i}"
                t, printed = timed([sys.executable, "-m", "bench.fetch_one", url, str(dest),
                                    str(size), sha, b3])
                results["updaterd (sha256+blake3 inline)"].append(t)
                rss.append(int(printed.strip()))
                dest.unlink()
                dest = out / f"c{i}"
                t, _ = timed(["curl", "-s", "-o", str(dest), url])
                results["curl -o"].append(t)
                dest.unlink()
                dest = out / f"s{i}"
                t, _ = timed(["sh", "-c", f"curl -s -o {dest} {url} && sha256sum {dest} "
                                          f">/dev/null && b3sum {dest} >/dev/null"])
                results["curl -o; sha256sum; b3sum"].append(t)
                dest.unlink()
    base = statistics.median(results["curl -o"])
    print(f"download of {args.size} MiB from nginx on 127.0.0.1, median of {args.runs} runs")
    print(f"| {'tool':<34} | {'median s':>8} | {'MiB/s':>7} | {'time vs curl -o':>15} |")
    print(f"|{'-' * 36}|{'-' * 10}|{'-' * 9}|{'-' * 17}|")
    for name, times in results.items():
        med = statistics.median(times)
        print(f"| {name:<34} | {med:8.2f} | {args.size / med:7.0f} | {med / base:14.2f}x |")
    print(f"updaterd downloader peak RSS: {max(rss) / 2**20:.0f} MiB")


if __name__ == "__main__":
    main()
