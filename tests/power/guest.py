"""Runs inside the qemu guest of `make test-power` (started by /power/init, standard library only).

At every boot it first reports the kernel's ext4 lines (the journal replay after a power cut),
then, when an earlier boot left an update in flight, checks the invariant of catalogue C58
as an operator would find it: what is on disk at the cut, then `updaterd --once` and `updaterd
verify`, then exactly one complete current version, state agreeing with the disk, no leftovers.
Then it updates the app one release at a time (a `pin` written to the config, `updaterd --once`)
until the host cuts the power; or, when the kernel command line says `updaterd.hold=FAILPOINT`,
runs one update stopped at that step (SIGSTOP) and reports it, so the cut lands exactly there.
Reports are JSON lines on the second serial port (/dev/ttyS1).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

CONFIG = Path("/etc/updaterd/updaterd.toml")
PREFIX = Path("/opt/hello")
STATE_DIR = Path("/var/lib/updaterd")
CACHE_DIR = Path("/var/cache/updaterd")
LAST = int(Path("/power/last").read_text())
RETAIN = 1
_port = open("/dev/ttyS1", "w", buffering=1)  # noqa: SIM115 (open for the whole run)


def report(kind: str, **data: Any) -> None:
    _port.write(json.dumps({"kind": kind, "uptime": _uptime(), **data}) + "\n")
    _port.flush()


def _uptime() -> float:
    return float(Path("/proc/uptime").read_text().split()[0])


def version(n: int) -> str:
    return f"1.0.{n}"


def write_config(n: int) -> None:
    """The config pinned to release n, written as a careful operator's tool would (temp file,
    fsync, rename, fsync of the folder) so that the cut never tears it."""
    text = CONFIG.with_suffix(".base").read_text() + f'pin = "<={version(n)}"\n'
    tmp = CONFIG.with_suffix(".tmp")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.rename(tmp, CONFIG)
    fd = os.open(CONFIG.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def updaterd(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["/usr/local/bin/updaterd", "--config", str(CONFIG), *args],
                          capture_output=True, text=True, check=False)


def state() -> dict[str, Any] | None:
    try:
        return json.loads((STATE_DIR / "hello" / "state.json").read_text())
    except FileNotFoundError:
        return None


def current() -> str | None:
    try:
        return os.readlink(PREFIX / "current").removeprefix("releases/")
    except FileNotFoundError:
        return None


def pinned() -> int:
    for line in CONFIG.read_text().splitlines():
        if line.startswith("pin = "):
            return int(line.split('"')[1].rsplit(".", 1)[1])
    raise SystemExit("the config has no pin")


def leftovers() -> list[str]:
    found = []
    staging = PREFIX / ".staging"
    if staging.exists():
        found += [str(p) for p in staging.iterdir()]
    for folder in (PREFIX, PREFIX / "bin", PREFIX / "releases", STATE_DIR / "hello",
                   CACHE_DIR / "hello"):
        if folder.exists():
            found += [str(p) for p in folder.iterdir() if p.name.startswith(".updaterd-tmp")]
    return found


def complete(v: str) -> bool:
    """The release answers as itself: its VERSION file and its program (the health check)."""
    root = PREFIX / "releases" / v
    try:
        if (root / "share" / "VERSION").read_text() != f"{v}\n":
            return False
    except OSError:
        return False
    out = subprocess.run([str(root / "bin" / "hello")], capture_output=True, text=True,
                         check=False)
    return f" {v}" in out.stdout


def check_after_cut() -> None:
    """What the cut left, then what `--once` and `verify` make of it."""
    target = pinned()
    before = state() or {}
    at_cut = current()
    found: dict[str, Any] = {"target": version(target), "at_cut": at_cut,
                             "pending_at_cut": before.get("pending") is not None}
    problems = []
    if at_cut not in (version(target - 1), version(target)):
        problems.append(f"at the cut the app was on {at_cut}, neither {version(target - 1)} "
                        f"nor {version(target)}")
    if at_cut is None or not complete(at_cut):
        problems.append(f"{at_cut}, current at the cut, does not answer as itself")
    once = updaterd("--once")
    if once.returncode != 0:
        problems.append(f"updaterd --once exited {once.returncode}: {once.stderr[-2000:]}")
    # --once never writes into a release, and keeps the one current at the cut (retain = 1):
    # this re-hash proves that release was whole at the cut too
    verify = updaterd("verify", "hello")
    kept = sorted(p.name for p in (PREFIX / "releases").iterdir())
    after = state() or {}
    now = current()
    if verify.returncode != 0 or verify.stdout.count(": intact") != len(kept):
        problems.append(f"updaterd verify: {verify.returncode}\n{verify.stdout}")
    if at_cut not in kept or f"hello {at_cut}: intact" not in verify.stdout:
        problems.append(f"{at_cut}, current at the cut, is not kept intact: {kept}")
    if now != version(target) or after.get("installed") != now:
        problems.append(f"after --once: current {now}, state says {after.get('installed')}, "
                        f"the pin asks for {version(target)}")
    if after.get("pending") is not None:
        problems.append(f"a transaction is still pending: {after['pending']}")
    if now is None or not complete(now):
        problems.append(f"{now} does not answer as itself")
    if len(kept) > RETAIN + 1 or now not in kept:
        problems.append(f"kept releases {kept} (retain = {RETAIN}, current {now})")
    if os.readlink(PREFIX / "bin" / "hello") != "../current/bin/hello":
        problems.append("bin/hello does not point into current")
    if (rest := leftovers()):
        problems.append(f"leftovers: {rest}")
    report("check", ok=not problems, problems=problems, kept=kept, now=now, **found)


def held_at() -> str | None:
    """The failpoint named on the kernel command line (`updaterd.hold=NAME`): the host's way to
    ask for a cut at that exact step."""
    for word in Path("/proc/cmdline").read_text().split():
        if word.startswith("updaterd.hold="):
            return word.partition("=")[2]
    return None


def hold(point: str, n: int) -> None:
    """Update to release n with updaterd stopped (SIGSTOP) at `point`, then wait for the cut."""
    write_config(n)
    proc = subprocess.Popen(["/usr/local/bin/updaterd", "--config", str(CONFIG), "--once"],
                            env={**os.environ, "UPDATERD_FAILPOINTS": f"{point}=stop"},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    stat = Path(f"/proc/{proc.pid}/stat")
    while stat.read_text().rpartition(")")[2].split()[0] != "T":
        if proc.poll() is not None:
            report("error", what=f"updaterd exited {proc.returncode} before {point}")
            return
        time.sleep(0.05)
    report("held", at=point, to=version(n))
    time.sleep(1e9)


def kernel_ext4_lines() -> list[str]:
    out = subprocess.run(["dmesg"], capture_output=True, text=True, check=False).stdout
    return [line.split("] ", 1)[-1] for line in out.splitlines() if "EXT4-fs" in line]


def main() -> None:
    report("boot", ext4=kernel_ext4_lines())
    if state() is None:
        write_config(1)
        started = time.monotonic()
        r = updaterd("--once")
        if r.returncode != 0 or current() != version(1):
            report("error", what="the first install failed", stderr=r.stderr[-3000:])
            return
        report("ready", seconds=round(time.monotonic() - started, 2))
    else:
        check_after_cut()
    n = int((current() or version(1)).rsplit(".", 1)[1])
    if (point := held_at()) and n < LAST:
        hold(point, n + 1)
        return
    report("loop", at=version(n))
    while n < LAST:
        n += 1
        write_config(n)
        started = time.monotonic()
        r = updaterd("--once")
        if r.returncode != 0:
            report("error", what=f"the update to {version(n)} failed", stderr=r.stderr[-3000:])
            return
        report("updated", to=version(n), seconds=round(time.monotonic() - started, 2))
    report("done")


if __name__ == "__main__":
    try:
        main()
    except BaseException as e:  # the host must hear of any failure, not wait for a time-out
        report("error", what=f"guest.py: {type(e).__name__}: {e}")
        sys.exit(1)
