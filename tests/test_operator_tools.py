"""`updaterctl reset-failed` and `updaterctl prune` through the real daemon: an
operator clears a failure they have seen, and drops kept releases by hand."""

from __future__ import annotations

import json
import os

import msgspec

from tests.conftest import Daemon, Host, Nginx
from tests.helpers import Feed
from updaterctl.protocol import CLI_RESULTS


def test_reset_failed_clears_the_failure_its_count_and_backoff(
        running: Daemon, served_feed: Feed, host: Host) -> None:
    art = served_feed.release("1.1.0")
    (served_feed.folder / art.name).unlink()  # the update fails at its download
    assert running.ctl("update", "hello").returncode == 1
    app = running.app()
    assert app["phase"] == "failed" and app["last_error"]
    assert host.state()["consecutive_failures"] == 1
    r = running.ctl("reset-failed", "hello", check=True)
    assert "hello: failure record cleared" in r.stdout
    app = running.app()
    assert (app["phase"], app.get("last_error")) == ("idle", None)
    st = host.state()
    assert (st["consecutive_failures"], st["last_error"]) == (0, None)
    assert host.current() == "1.0.0" and st["history"], "nothing else changed"
    out = running.ctl("--json", "reset-failed", check=True).stdout
    assert json.loads(out) == ["hello"]
    msgspec.json.decode(out, type=CLI_RESULTS["reset-failed"])  # as --json-schema says
    r = running.ctl("reset-failed", "nosuch")
    assert r.returncode == 1 and "unknown app: nosuch" in r.stderr


def test_prune_keeps_the_current_release_and_the_rollback_target_unless_forced(
        host: Host, nginx: Nginx, served_feed: Feed, daemon: Daemon) -> None:
    served_feed.release("1.0.0")
    host.follow(nginx, served_feed, retain=5)
    daemon.start()
    daemon.wait_for(lambda: daemon.app()["current"] == "1.0.0", what="1.0.0")
    for version in ("1.1.0", "1.2.0", "1.3.0"):
        served_feed.release(version)
        daemon.ctl("update", "hello", check=True)
    r = daemon.ctl("prune", "hello", "--keep", "0", check=True)
    assert r.stdout.strip() == "hello: removed 1.0.0, 1.1.0; kept 1.2.0, 1.3.0"
    out = daemon.ctl("--json", "prune", "hello", "--keep", "0", check=True).stdout
    assert json.loads(out) == {"removed": [], "kept": ["1.2.0", "1.3.0"]}
    msgspec.json.decode(out, type=CLI_RESULTS["prune"])  # the shape --json-schema gives
    r = daemon.ctl("prune", "hello", "--keep", "0", "--force", check=True)
    assert r.stdout.strip() == "hello: removed 1.2.0; kept 1.3.0"
    assert sorted(p.name for p in (host.prefix / "releases").iterdir()) == ["1.3.0"]
    assert host.current() == "1.3.0"
    assert not (host.state_dir / "hello" / "trees" / "1.0.0.json").exists()
    assert daemon.ctl("prune", "hello", "--keep", "-1").returncode == 2
    assert daemon.ctl("rollback", "hello").returncode == 1  # nothing left to go back to


def _on_a_terminal(daemon: Daemon, *argv: str, columns: int = 60,
                   env: dict[str, str] | None = None) -> str:
    """What `updaterctl ARGV` prints on a terminal of `columns` columns (a real pty)."""
    import fcntl
    import pty
    import struct
    import subprocess
    import termios

    from tests.helpers import BIN

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
    full_env = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "COLUMNS")}
    full_env.update(TERM="xterm", **(env or {}))
    proc = subprocess.Popen([str(BIN / "updaterctl"), "--socket", str(daemon.socket), *argv],
                            stdin=slave, stdout=slave, stderr=slave, env=full_env)
    os.close(slave)
    out = b""
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        out += chunk
    proc.wait(30)
    os.close(master)
    return out.decode().replace("\r\n", "\n")


def test_status_on_a_terminal_has_colour_and_fits_its_width_and_a_pipe_gets_plain_lines(
        running: Daemon, served_feed: Feed) -> None:
    """Issue 30: no colour on a terminal and no fitting to its width; NO_COLOR and pipes get
    plain lines (scripts read them), as long as they are."""
    import re

    art = served_feed.release("1.1.0")
    (served_feed.folder / art.name).unlink()
    assert running.ctl("update", "hello").returncode == 1  # failed: a long error line
    shown = _on_a_terminal(running, "status")
    assert "\x1b[31mfailed" in shown and "\x1b[31m  hello: error: " in shown, shown
    visible = re.sub(r"\x1b\[[0-9;]*m", "", shown)
    assert max(len(line) for line in visible.splitlines()) <= 60, visible
    plain = _on_a_terminal(running, "status", env={"NO_COLOR": "1"})
    assert "\x1b" not in plain and max(len(line) for line in plain.splitlines()) <= 60
    piped = running.ctl("status", check=True).stdout
    assert "\x1b" not in piped
    error_line = next(line for line in piped.splitlines() if "hello: error:" in line)
    assert len(error_line) > 60 and "404" in error_line  # one line, whole


def test_status_takes_several_apps_and_names_an_unknown_one(running: Daemon) -> None:
    out = json.loads(running.ctl("--json", "status", "hello", "hello", check=True).stdout)
    assert [a["name"] for a in out["apps"]] == ["hello"]
    r = running.ctl("status", "hello", "nosuch", "other")
    assert r.returncode == 1 and "unknown app: nosuch, other" in r.stderr
