"""catalogue C58: power cuts, in a qemu virtual machine (real-host issue, section 3).

A Debian 12 guest (the nspawn root file system of `make test-systemd`, with the host's Python at
its own path and updaterd installed from this checkout) boots from an ext4 image made with
`mkfs.ext4 -d` and updates an app one release at a time, each release a few thousand files,
alternating between two trees. The host kills qemu with SIGKILL at a random instant: everything
the guest kernel had not written to the virtual disk is lost, as in a power cut (the host's page
cache survives, so this proves updaterd's fsync discipline, not a disk's cache). At the next boot
the guest (tests/power/guest.py) reports the ext4 journal replay and checks what an operator
would: one complete version, `updaterd --once` and `updaterd verify` clean, state agreeing with
the disk, no leftovers.

Run by `make test-power` (UPDATERD_TEST_POWER=1), not by `make test`. UPDATERD_POWER_CYCLES
(default 8) and UPDATERD_POWER_SEED choose the cycles and the random instants; the seed is
printed so a failure can be replayed.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import make_tar, write_config
from updaterd.release.publish import keygen, publish

pytestmark = pytest.mark.skipif(os.environ.get("UPDATERD_TEST_POWER") != "1",
                                reason="`make test-power` runs these (qemu)")
REPO = Path(__file__).resolve().parent.parent.parent
ROOTFS = REPO / "build" / "nspawn" / "rootfs"
BOOT = REPO / "build" / "power" / "boot"
CYCLES = int(os.environ.get("UPDATERD_POWER_CYCLES", "8"))
RELEASES = 6 * CYCLES + 8  # enough that the loop is still updating when the power goes
FILES = 2000
# After the random cuts, one cut at each of these steps, with updaterd stopped there: files
# written but not synced, a release renamed in before its folder's fsync, the link swapped before
# its folder's fsync (the instants C58 names), the state's temp file written before its rename.
HOLDS = ("stage.after_extract", "release.after_rename", "switch.after_rename",
         "state.after_tmp_write")


def release_tree(version: str) -> dict[str, tuple[bytes, int]]:
    """A few thousand small files; odd and even releases differ in every file."""
    variant = int(version.rsplit(".", 1)[1]) % 2
    rng = random.Random(variant)
    files = {
        "bin/hello": (f'#!/bin/sh\necho "hello {version}"\n'.encode(), 0o755),
        "share/VERSION": (f"{version}\n".encode(), 0o644),
    }
    for i in range(FILES):
        line = f"variant {variant} file {i} {rng.getrandbits(64):016x}\n".encode()
        files[f"lib/m{i // 100:02d}/f{i:04d}.txt"] = (line * rng.randint(10, 120), 0o644)
    return files


def build_image(work: Path) -> Path:
    """The guest's disk: the root file system, the host's Python, updaterd, a signed feed."""
    tree = work / "tree"
    subprocess.run(["cp", "-a", str(ROOTFS), str(tree)], check=True)
    # the host's Python at its own path (its library path is built into the binary): the one
    # the packages in /opt/updaterd/lib are installed for (the package test uses Debian's own)
    base = Path(sys.base_prefix)
    skip = ["site-packages", "test", "idlelib", "tkinter", "ensurepip", "turtledemo",
            "config-3*"]
    subprocess.run(f"tar -C / -cf - {' '.join(f'--exclude={s}' for s in skip)} "
                   f"{str(base).lstrip('/')} | tar -C {tree} -xf -", shell=True, check=True)
    lib = tree / "opt" / "updaterd" / "lib"
    pip = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--target", str(lib),
                          str(REPO)], capture_output=True, text=True, check=False)
    assert pip.returncode == 0, f"pip install --target {lib}: {pip.stdout}{pip.stderr}"
    python = base / "bin" / f"python{sys.version_info.major}.{sys.version_info.minor}"
    wrapper = tree / "usr" / "local" / "bin" / "updaterd"
    wrapper.write_text(f"#!/bin/sh\nPYTHONPATH=/opt/updaterd/lib PYTHONDONTWRITEBYTECODE=1 "
                       f'exec {python} -m updaterd "$@"\n')
    wrapper.chmod(0o755)
    power = tree / "power"
    power.mkdir()
    shutil.copy(Path(__file__).with_name("guest.py"), power / "guest.py")
    (power / "last").write_text(f"{RELEASES}\n")
    (power / "init").write_text(
        "#!/bin/sh\n# PID 1 of the guest: the file systems a program expects, then the test\n"
        "mount -t proc proc /proc; mount -t sysfs sys /sys\n"
        "mount -t tmpfs -o mode=0755 run /run; mount -t tmpfs tmp /tmp\n"
        f"PYTHONDONTWRITEBYTECODE=1 {python} /power/guest.py\n"
        "sync; echo o > /proc/sysrq-trigger; sleep 30\n")
    (power / "init").chmod(0o755)

    feed, scratch = tree / "srv" / "feed", work / "scratch"
    scratch.mkdir()
    keygen(str(scratch / "feed"))
    for n in range(1, RELEASES + 1):
        v = f"1.0.{n}"
        art = make_tar(scratch / f"hello-{v}-linux-x86_64.tar.gz", release_tree(v),
                       top=f"hello-{v}")
        publish(feed_dir=feed, key_path=scratch / "feed.key", app="hello", version=v,
                artifacts=[art], platform="linux-x86_64", delta_from=0)  # full archives
        art.unlink()
    pub = (scratch / "feed.pub").read_text().splitlines()[1]
    conf = tree / "etc" / "updaterd"
    conf.mkdir(parents=True)
    write_config(conf / "updaterd.base", {"platform": "linux-x86_64"}, {"hello": {
        "source": "directory", "path": "/srv/feed", "public_keys": [pub],
        "prefix": "/opt/hello", "health_check": ["bin/hello"], "retain": 1}})
    disk = work / "disk.img"
    subprocess.run(["mkfs.ext4", "-q", "-F", "-L", "power", "-d", str(tree), str(disk), "2G"],
                   check=True, capture_output=True)
    shutil.rmtree(tree)
    return disk


class Boot:
    """One power-on of the guest; `reports` are its JSON lines so far."""

    def __init__(self, disk: Path, logs: Path, n: int, hold: str | None = None) -> None:
        self.console, self.port = logs / f"console-{n}.log", logs / f"report-{n}.log"
        self.started = time.monotonic()
        self.proc = subprocess.Popen(
            ["qemu-system-x86_64", "-accel", "tcg", "-cpu", "max", "-m", "1024", "-smp", "2",
             "-display", "none", "-monitor", "none", "-no-reboot",
             "-kernel", str(BOOT / "vmlinuz"), "-initrd", str(BOOT / "initrd.img"),
             "-append", "root=/dev/vda rw quiet console=ttyS0 panic=1"
             + (f" updaterd.hold={hold}" if hold else ""),
             "-drive", f"file={disk},format=raw,if=virtio",
             "-serial", f"file:{self.console}", "-serial", f"file:{self.port}"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)

    def reports(self) -> list[dict[str, Any]]:
        try:
            text = self.port.read_text()
        except FileNotFoundError:
            return []
        # The serial port is read while the guest writes: its last line may be half-way.
        complete = text[: text.rfind("\n") + 1].splitlines()
        return [json.loads(line) for line in complete if line.startswith("{")]

    def wait_for(self, kind: str, timeout: float = 300) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for r in self.reports():
                if r["kind"] == kind:
                    return r
                assert r["kind"] != "error", f"the guest failed: {r}\n{self.tail()}"
            assert self.proc.poll() is None, f"qemu exited {self.proc.returncode}\n{self.tail()}"
            time.sleep(0.1)
        raise AssertionError(f"no {kind!r} from the guest in {timeout}s\n{self.tail()}")

    def tail(self) -> str:
        return "\n".join(self.console.read_text(errors="replace").splitlines()[-40:])

    def cut(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()


def test_c58_power_cut_at_a_random_instant(tmp_path: Path) -> None:
    for what, path in (("scripts/nspawn-rootfs.sh", ROOTFS), ("scripts/power-kernel.sh", BOOT)):
        assert path.is_dir(), f"{what} builds {path} (make test-power does)"
    seed = int(os.environ.get("UPDATERD_POWER_SEED", str(random.randrange(2**32))))
    rng = random.Random(seed)
    print(f"\nC58: {CYCLES} cuts at random instants (seed {seed}; UPDATERD_POWER_SEED={seed} "
          f"replays them), then {len(HOLDS)} at named steps")
    started = time.monotonic()
    disk = build_image(tmp_path)
    print(f"C58: image built in {time.monotonic() - started:.0f}s")

    plan = [None] * CYCLES + list(HOLDS)
    boot = Boot(disk, tmp_path, 0, hold=plan[0])
    step = boot.wait_for("ready")["seconds"]
    seen: Counter[str] = Counter()
    for cycle, hold in enumerate(plan):
        if hold is None:
            boot.wait_for("loop")
            # an instant anywhere in the next two updates, as C57 draws from the cycle
            delay = rng.uniform(0, 2 * step)
            time.sleep(delay)
            how = f"cut {delay:5.1f}s into the loop"
        else:
            held = boot.wait_for("held")
            how = f"cut with updaterd stopped at {hold} (to {held['to']})"
        updates = sum(r["kind"] == "updated" for r in boot.reports())
        boot.cut()
        after = plan[cycle + 1] if cycle + 1 < len(plan) else None
        boot = Boot(disk, tmp_path, cycle + 1, hold=after)
        check = boot.wait_for("check")
        ext4 = boot.reports()[0]["ext4"]
        where = f"cycle {cycle} (seed {seed}), {how}"
        assert check["ok"], f"{where}: " + "\n".join(check["problems"])
        assert any("recovery complete" in line for line in ext4), \
            f"{where}: no journal replay, so this was no unclean stop: {ext4}"
        state = ("on the new release" if check["at_cut"] == check["target"]
                 else "on the old release")
        seen[f"{state}{', journal pending' if check['pending_at_cut'] else ''}"] += 1
        print(f"C58: cycle {cycle}: {how} after {updates} updates: {state} {check['at_cut']} "
              f"(pin {check['target']}), journal "
              f"{'pending' if check['pending_at_cut'] else 'clear'}; after --once "
              f"{check['now']}, kept {check['kept']}; ext4: "
              f"{[line for line in ext4 if 'recover' in line]}")
    boot.wait_for("loop")
    boot.cut()
    print(f"C58: {len(plan)} cuts in {time.monotonic() - started:.0f}s, one update "
          f"{step:.1f}s: " + "; ".join(f"{n} {what}" for what, n in sorted(seen.items())))
