"""`updaterctl status` wall time against `python3 -c pass`, with a real daemon, in one run.

Prints medians and the ratio; `--runs` (default 30).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BIN = Path(sys.executable).parent


def median_time(cmd: list[str], runs: int) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=30)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        sock = tmp / "updaterd.sock"
        (tmp / "feed").mkdir()
        cfg = tmp / "updaterd.toml"
        cfg.write_text(f"""[daemon]
state_dir = "{tmp}/state"
cache_dir = "{tmp}/cache"
lock_file = "{tmp}/lock"
socket = "{sock}"
[apps.demo]
source = "directory"
path = "{tmp}/feed"
prefix = "{tmp}/opt/demo"
check_interval = "24h"
jitter = "1h"
""")
        proc = subprocess.Popen([str(BIN / "updaterd"), "--config", str(cfg)],
                                stderr=subprocess.DEVNULL)
        try:
            while not sock.exists():
                time.sleep(0.02)
            baseline = median_time([sys.executable, "-c", "pass"], args.runs)
            ctl = median_time([str(BIN / "updaterctl"), "--socket", str(sock), "status"],
                              args.runs)
        finally:
            proc.terminate()
            proc.wait()
    print(f"median of {args.runs} runs: python3 -c pass {baseline * 1000:.1f} ms, "
          f"updaterctl status {ctl * 1000:.1f} ms, ratio {ctl / baseline:.2f}x")


if __name__ == "__main__":
    main()
