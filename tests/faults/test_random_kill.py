"""catalogue C57: kill -9 at a random instant of a whole update, again and again.

As OSTree's destructive test does: measure one update cycle, then for each trial publish a new
version, start `updaterd --once`, kill it with SIGKILL after a delay drawn from [0, 1.1 x the
cycle], and check that the app is on one complete version whose files match their recorded
BLAKE3 tree; the next run must leave state and disk in agreement with no leftovers. At the end
every kept release is re-hashed with `updaterd verify`.

`make test` runs UPDATERD_KILL_TRIALS (default 12) trials; `make test-long` runs 50.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import time
from collections import Counter

import pytest

from tests.conftest import Host, Nginx
from tests.helpers import BIN, Feed, make_tar, release_files, run_updaterd
from tests.test_failpoints import assert_consistent, release_is_complete
from updaterd.trust import treehash

TRIALS = int(os.environ.get("UPDATERD_KILL_TRIALS", "12"))


def _publish(feed: Feed, version: str, parts: int = 150, deltas: bool = False) -> None:
    """A release with enough files that extraction, fsync and hashing take a while. With
    `deltas`, most files stay the same from one version to the next (two change) and the feed
    carries packs, so that the updates build their releases from the kept ones."""
    files = release_files(version)
    same = random.Random(0) if deltas else None
    for i in range(parts):
        data = same.randbytes(4096) if same else os.urandom(4096)
        files[f"lib/part{i:03d}.dat"] = (data, 0o644)
    files["lib/big.dat"] = (same.randbytes(3 << 20) if same else os.urandom(3 << 20), 0o644)
    if same:
        files["lib/part007.dat"] = (os.urandom(4096), 0o644)
    art = make_tar(feed.work / f"hello-{version}-linux-x86_64.tar.gz", files,
                   top=f"hello-{version}")
    feed.publish(version, [art], delta_from=2 if deltas else 0)


def _once(host: Host) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if k != "UPDATERD_FAILPOINTS"}
    return subprocess.Popen([str(BIN / "updaterd"), "--config", str(host.config), "--once"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)


def _intact(host: Host, version: str) -> bool:
    rec = treehash.load(host.state_dir / "hello", version)
    assert rec is not None, f"{version} is current but has no recorded tree"
    return treehash.differences(host.prefix / "releases" / version, rec) == []


@pytest.mark.parametrize("deltas", [False, True], ids=["full", "delta"])
def test_c57_random_instant_kill(host: Host, nginx: Nginx, served_feed: Feed,
                                 deltas: bool) -> None:
    host.follow(nginx, served_feed, retain=2,
                restart=["sh", "-c", f'echo "$UPDATERD_VERSION" >> {host.base / "restarts"}'])
    _publish(served_feed, "1.0.0", deltas=deltas)
    assert run_updaterd("--config", host.config, "--once").returncode == 0
    _publish(served_feed, "1.1.0", deltas=deltas)
    started = time.monotonic()
    assert _once(host).wait(60) == 0
    cycle = time.monotonic() - started
    assert_consistent(host, "1.1.0")

    seed = int(os.environ.get("UPDATERD_KILL_SEED", str(random.randrange(2**32))))
    rng = random.Random(seed)
    seen: Counter[str] = Counter()
    previous = "1.1.0"
    for trial in range(TRIALS):
        version = f"1.{trial + 2}.0"
        _publish(served_feed, version, deltas=deltas)
        proc = _once(host)
        time.sleep(rng.uniform(0, 1.1 * cycle))
        killed = proc.poll() is None
        if killed:
            proc.send_signal(signal.SIGKILL)
        rc = proc.wait(60)
        at_crash = host.current()
        where = f"trial {trial} (seed {seed}): {version}, at the kill on {at_crash}"
        assert at_crash in (previous, version), where
        assert release_is_complete(host, at_crash), where
        assert _intact(host, at_crash), where
        pending = host.state().get("pending") is not None
        seen["finished before the kill" if not killed else
             f"killed, on the {'new' if at_crash == version else 'old'} version"
             f"{', journal pending' if pending else ''}"] += 1
        if not killed:
            assert rc == 0, where
        r = run_updaterd("--config", host.config, "--once")
        assert r.returncode == 0, f"{where}: {r.stderr}"
        assert_consistent(host, version)
        assert _intact(host, version), where
        previous = version
    r = run_updaterd("--config", host.config, "verify", "hello")
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.count(": intact") == len(list((host.prefix / "releases").iterdir()))
    packs = [q for q in nginx.requests() if q["uri"].endswith(".delta")
             and f"/{served_feed.folder.name}/" in q["uri"]]
    assert bool(packs) == deltas, "the delta trials build their releases from packs"
    print(f"\nC57 ({'delta' if deltas else 'full'}): {TRIALS} trials, cycle {cycle:.2f}s, "
          f"seed {seed}: " +
          "; ".join(f"{n} {what}" for what, n in sorted(seen.items())))


def test_c57_kill_while_an_old_release_is_removed(host: Host, nginx: Nginx,
                                                  served_feed: Feed) -> None:
    """The random kill above found it: `retain` deleting 1.0.0 in place, killed half-way, left
    a release with files missing that `verify` reported and `list-backups` offered. Killed the
    moment 1.0.0 is seen to change, it must be whole or gone, and the next run clean."""
    host.follow(nginx, served_feed, retain=0)
    for version in ("1.0.0", "1.1.0"):
        _publish(served_feed, version, parts=3000)
        assert run_updaterd("--config", host.config, "--once").returncode == 0
    _publish(served_feed, "1.2.0", parts=10)
    old = host.prefix / "releases" / "1.0.0"
    whole = len(os.listdir(old / "lib"))
    proc = _once(host)
    while proc.poll() is None:
        try:
            if len(os.listdir(old / "lib")) == whole:
                continue
        except FileNotFoundError:
            pass
        proc.send_signal(signal.SIGKILL)
        break
    proc.wait(60)
    if old.exists():
        assert _intact(host, "1.0.0"), "1.0.0 was left half removed"
    r = run_updaterd("--config", host.config, "--once")
    assert r.returncode == 0, r.stderr
    assert_consistent(host, "1.2.0")
    r = run_updaterd("--config", host.config, "verify", "hello")
    assert r.returncode == 0, r.stdout + r.stderr
