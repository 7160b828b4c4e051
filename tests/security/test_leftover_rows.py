"""Row 175: what a process left running by a `restart` command writes to the output it
inherited is bounded while the daemon runs, and sits in a named file of the app's state
folder, never in a hidden, unlinked one (the real daemon; the leftover writes about 2 MB/s)."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from tests.conftest import Daemon, Host, Nginx
from tests.helpers import Feed

# 64 KiB about every 30 ms, for ever, from a process the restart command leaves behind
LEAVES_A_WRITER = ["sh", "-c", "(while :; do head -c 65536 /dev/zero; sleep 0.03; done) & "
                   "echo $! > \"$UPDATERD_TEST_PIDFILE\""]


def test_j175_a_process_left_by_a_restart_command_never_grows_a_hidden_file(
        host: Host, nginx: Nginx, served_feed: Feed, daemon: Daemon, tmp_path: Path) -> None:
    pidfile = tmp_path / "leftover.pid"
    served_feed.release("1.0.0")
    host.follow(nginx, served_feed, restart=LEAVES_A_WRITER,
                pass_environment=["UPDATERD_TEST_PIDFILE"])
    daemon.env["UPDATERD_TEST_PIDFILE"] = str(pidfile)
    daemon.start()
    daemon.wait_for(lambda: daemon.app()["current"] == "1.0.0", what="1.0.0")
    leftover = int(pidfile.read_text())
    try:
        out = Path(f"/proc/{leftover}/fd/1")
        target = os.readlink(out)
        assert not target.endswith("(deleted)"), target
        assert target.endswith("/hello/command-output"), target
        largest = 0
        deadline = time.monotonic() + 6  # about 12 MB written meanwhile
        while time.monotonic() < deadline:
            largest = max(largest, out.stat().st_size)
            time.sleep(0.05)
        assert largest < 6 << 20, f"the leftover's output reached {largest >> 20} MiB"
    finally:
        os.kill(leftover, signal.SIGKILL)
