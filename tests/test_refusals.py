"""Row 158: a request refused for its input (an unknown app or version, a path that is not a
backup, a mistyped command) changes no state, through the real daemon and updaterctl: no
`failed` phase, no failure counted, no backoff, no error recorded. And what does fail reaches
the journal as an error."""

from __future__ import annotations

import json
from typing import Any

from tests.conftest import Daemon, Host, Nginx
from tests.helpers import Feed


def _failures(daemon: Daemon) -> dict[str, float]:
    metrics = json.loads(daemon.ctl("--json", "metrics", check=True).stdout)
    return {m["name"]: m["value"] for m in metrics
            if m["name"] in ("updaterd_failures_total", "updaterd_consecutive_failures")}


def _snapshot(daemon: Daemon, host: Host) -> tuple[Any, ...]:
    app, st = daemon.app(), host.state()
    return (app["phase"], app.get("last_error"), app.get("next_check"), _failures(daemon),
            st["consecutive_failures"], st["last_error"], st["in_progress"], st["history"],
            st["skipped"], st["blocked"], host.current())


def test_h158_refused_requests_change_no_state(running: Daemon, host: Host) -> None:
    before = _snapshot(running, host)
    assert before[0] == "idle" and before[3]["updaterd_failures_total"] == 0, before
    refused = [("rollback", "hello", "--to", "9.9.9"),  # not kept
               ("rollback", "hello", "--to", "/etc/passwd"),  # not a backup of the app
               ("rollback", "hello"),  # nothing before 1.0.0
               ("update", "hello", "--version", "9.9.9"),  # not in the feed
               ("update", "nosuch"),  # no such app
               ("skip", "hello", "not-a-version"),
               ("unskip", "hello", "1.9.9"),  # neither skipped nor blocked
               ("check", "nosuch"), ("pause", "nosuch"), ("cancel", "nosuch"),
               ("history", "hello", "--limit", "0"), ("prune", "nosuch"),
               ("prune", "hello", "--keep", "101"), ("reset-failed", "nosuch"),
               ("inhibit", "nosuch", "--why", "x", "--", "true")]
    for argv in refused:
        r = running.ctl(*argv)
        assert r.returncode != 0, (argv, r.stdout)
        assert r.stderr.strip(), f"{argv}: refused without saying why"
    after = _snapshot(running, host)
    assert after == before
    r = running.ctl("rollback", "hello", "--to", "9.9.9")  # the refusal names the next command
    assert "`updaterctl list-backups hello` lists what is" in r.stderr, r.stderr
    log = running.log.read_text()
    assert "rollback failed" not in log and "update failed" not in log, log
    assert "hello: rollback refused: version 9.9.9 is not kept" in log, log  # the app once


def test_the_journal_files_failures_as_errors_and_routine_as_info(
        host: Host, nginx: Nginx, served_feed: Feed) -> None:
    """Issue 30: `journalctl -p err` must find a failed update and a refused feed; they were
    filed at info. The daemon's stderr is made the "journal stream" (JOURNAL_STREAM names its
    device and inode, as systemd does), so each line carries the priority journald files it
    under; tests/systemd/ checks the same through a real journald."""
    log = host.base / "daemon.log"
    log.touch()
    st = log.stat()
    daemon = Daemon(host, env={"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"})
    served_feed.release("1.0.0")
    host.follow(nginx, served_feed)
    daemon.start()
    try:
        daemon.wait_for(lambda: daemon.app()["current"] == "1.0.0", what="first install")
        served_feed.release("1.1.0", healthy=False)
        assert daemon.ctl("update", "hello").returncode != 0
        sig = served_feed.folder / "manifest.json.minisig"
        text = sig.read_text().splitlines()  # one character of the signature changed
        mid = len(text[1]) // 2
        text[1] = text[1][:mid] + ("A" if text[1][mid] != "A" else "B") + text[1][mid + 1:]
        sig.write_text("\n".join(text) + "\n")
        assert daemon.ctl("check", "hello", "--force").returncode != 0
    finally:
        daemon.stop()
    lines = log.read_text().splitlines()
    by_priority: dict[str, list[str]] = {}
    for line in lines:
        assert line[:1] == "<" and line[2:3] == ">", f"a line without its priority: {line!r}"
        by_priority.setdefault(line[1], []).append(line)
    errors = "\n".join(by_priority.get("3", []))
    assert "1.1.0" in errors and "rolled back" in errors, lines
    assert "signature" in errors, lines
    routine = "\n".join(by_priority.get("6", []))
    assert "installed 1.0.0" in routine, lines
    assert not [line for line in by_priority.get("6", []) if "failed" in line], lines
