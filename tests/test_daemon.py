"""End to end: the real updaterd daemon process driven by the real updaterctl (and socat)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import msgspec
import pytest

from tests.conftest import Daemon, Host, Nginx
from tests.helpers import Feed, rpc_as, run_updaterd


def test_status_shows_daemon_and_app(running: Daemon) -> None:
    st = running.status()
    assert st["daemon"]["pid"] == running.proc.pid  # type: ignore[union-attr]
    app = running.app()
    assert app["phase"] == "idle" and app["last_check"] and app["next_check"]
    assert app["next_check"] - app["last_check"] == pytest.approx(3600, abs=5)
    human = running.ctl("status", check=True).stdout
    assert "hello" in human and "1.0.0" in human and "APP" in human


def test_status_starts_without_msgspec_and_prints_what_the_typed_client_reads(
        running: Daemon) -> None:
    """`updaterctl status` runs on the standard library (its start-up is most of its cost);
    its --json output is still exactly a StatusResult, and its text the same as before."""
    probe = ("import sys\nfrom updaterctl.cli import main\n"
             f"rc = main(['--socket', {str(running.socket)!r}, *sys.argv[1:]])\n"
             "loaded = [m for m in sys.modules if m.startswith(('msgspec', 'updaterctl.client',"
             " 'updaterctl.protocol', 'updaterctl.commands'))]\n"
             "print('LOADED', loaded, rc)\n")
    for args in (["status"], ["--json", "status", "hello"]):
        r = subprocess.run([sys.executable, "-c", probe, *args], capture_output=True,
                           text=True, check=True)
        out, _, loaded = r.stdout.rpartition("LOADED ")
        assert loaded.strip() == "[] 0", (args, loaded)
    from updaterctl.client import Client
    from updaterctl.protocol import StatusResult
    typed = msgspec.json.decode(out, type=StatusResult)
    assert [a.name for a in typed.apps] == ["hello"] and typed.apps[0].current == "1.0.0"
    with Client(str(running.socket)) as c:
        assert msgspec.to_builtins(c.status("hello")).keys() == json.loads(out).keys()
    human = running.ctl("status", check=True).stdout.splitlines()
    assert human[0].startswith(f"updaterd {typed.daemon.version}, pid {typed.daemon.pid}, up ")
    assert human[1].split() == ["APP", "CURRENT", "AVAILABLE", "PHASE", "LAST", "CHECK", "NEXT",
                                "CHECK"]
    assert human[2].split()[:4] == ["hello", "1.0.0", "-", "idle"]


def test_an_idle_daemon_loads_cryptography_at_its_first_signature(
        daemon: Daemon, host: Host, nginx: Nginx, served_feed: Feed) -> None:
    """Ed25519 (7 MiB of the idle daemon's 42) is loaded when a feed's signature is first
    checked, not at start."""
    served_feed.release("1.0.0")
    host.follow(nginx, served_feed)
    assert run_updaterd("--config", host.config, "--once").returncode == 0
    daemon.start()  # the next check is an hour after the one --once made
    maps = Path(f"/proc/{daemon.proc.pid}/maps")  # type: ignore[union-attr]
    assert daemon.app()["phase"] == "idle"
    assert "/cryptography/" not in maps.read_text()
    daemon.ctl("check", "hello", "--force", check=True)
    assert "/cryptography/" in maps.read_text()


def _imported(stderr: str) -> set[str]:
    """The modules a process imported, from PYTHONPROFILEIMPORTTIME's lines on stderr."""
    return {line.rsplit("|", 1)[1].strip() for line in stderr.splitlines()
            if line.startswith("import time:") and "|" in line}


def test_a_host_whose_feeds_are_local_never_loads_the_http_client(
        host: Host, nginx: Nginx, served_feed: Feed) -> None:
    """httpx and its stack (3 MiB of an operator's idle daemon, 11 MiB where its CLI's
    packages are installed) are loaded by the first feed on the network; a host whose feeds
    are folders updates without them."""
    served_feed.release("1.0.0")
    host.configure(source="directory", path=str(served_feed.folder),
                   public_keys=[served_feed.pub])
    r = run_updaterd("--config", host.config, "--once", env={"PYTHONPROFILEIMPORTTIME": "1"})
    assert r.returncode == 0, r.stderr[-2000:]
    assert host.current() == "1.0.0"
    loaded = _imported(r.stderr)
    assert "updaterd.install.transaction" in loaded
    assert not {"httpx", "httpcore", "h11", "updaterd.net.fetcher"} & loaded

    served_feed.release("1.1.0")
    host.follow(nginx, served_feed)
    r = run_updaterd("--config", host.config, "--once", env={"PYTHONPROFILEIMPORTTIME": "1"})
    assert r.returncode == 0, r.stderr[-2000:]
    assert {"httpx", "updaterd.net.fetcher"} <= _imported(r.stderr)
    assert host.current() == "1.1.0"


def test_check_update_list_backups_rollback_history(running: Daemon, served_feed: Feed,
                                                    nginx: Nginx) -> None:
    served_feed.release("1.1.0")
    out = running.ctl("check", "hello", check=True).stdout
    assert "1.1.0 is available" in out
    result = json.loads(running.ctl("--json", "update", "hello", check=True).stdout)
    assert (result["from"], result["to"], result["result"]) == ("1.0.0", "1.1.0", "installed")
    assert running.host.current() == "1.1.0"
    backups = json.loads(running.ctl("--json", "list-backups", "hello", check=True).stdout)
    assert [(b["version"], b["current"]) for b in backups] == [("1.0.0", False),
                                                               ("1.1.0", True)]
    assert all(b["size"] > 0 for b in backups)
    rb = json.loads(running.ctl("--json", "rollback", "hello", check=True).stdout)
    assert (rb["from"], rb["to"]) == ("1.1.0", "1.0.0")
    assert running.host.current() == "1.0.0"
    hist = json.loads(running.ctl("--json", "history", "hello", check=True).stdout)
    assert [h["action"] for h in hist] == ["installed", "installed", "rolled_back"]
    assert "rolled_back" in running.ctl("history", "hello", check=True).stdout
    r = running.ctl("rollback", "hello", "--to", "7.7.7")
    assert r.returncode == 1 and "not kept" in r.stderr


def test_rollback_refuses_a_kept_release_changed_on_disk(running: Daemon,
                                                        served_feed: Feed) -> None:
    """A kept release is re-hashed before it becomes the running app: one edited since it was
    installed is refused with what to do, and the app stays where it was."""
    served_feed.release("1.1.0")
    running.ctl("update", "hello", check=True)
    (running.host.prefix / "releases" / "1.0.0" / "share" / "VERSION").write_text("edited\n")
    r = running.ctl("rollback", "hello")
    assert r.returncode == 1, r.stdout
    assert "1.0.0 on disk is not what was installed (1 difference, first: " \
           "share/VERSION" in r.stderr, r.stderr
    assert "updaterd verify hello" in r.stderr and "--version 1.0.0" in r.stderr
    assert running.host.current() == "1.1.0"
    app = running.app()
    assert app["phase"] == "failed" and "not what was installed" in app["last_error"], app
    r = running.ctl("update", "hello", "--version", "1.0.0")
    assert r.returncode == 0, r.stderr
    assert running.host.current() == "1.0.0"
    assert (running.host.prefix / "current" / "share" / "VERSION").read_text() == "1.0.0\n"


def test_check_force_fetches_the_whole_feed(running: Daemon, served_feed: Feed,
                                            nginx: Nginx) -> None:
    uri = f"/{served_feed.folder.name}/manifest.json"
    mark = len(nginx.requests())
    running.ctl("check", "hello", check=True)
    running.ctl("check", "hello", "--force", check=True)
    statuses = [r["status"] for r in nginx.requests()[mark:] if r["uri"] == uri]
    assert statuses == [304, 200]


def test_skip_unskip_pause_resume(running: Daemon, served_feed: Feed) -> None:
    running.ctl("skip", "hello", "1.1.0", check=True)
    served_feed.release("1.1.0")
    out = json.loads(running.ctl("--json", "check", "hello", check=True).stdout)["hello"]
    assert out["available"] is None and "skipped" in out["passed_over"]["1.1.0"]
    running.ctl("unskip", "hello", "1.1.0", check=True)
    out = json.loads(running.ctl("--json", "check", "hello").stdout)["hello"]
    assert out["available"] == "1.1.0"
    running.ctl("pause", "hello", check=True)
    app = running.app()
    assert app["paused"] and app["next_check"] is None
    assert "paused" in running.ctl("status").stdout
    running.ctl("resume", "hello", check=True)
    running.wait_for(lambda: running.app()["next_check"] is not None, what="resume")


def test_e120_two_concurrent_updates_second_is_busy(running: Daemon, served_feed: Feed,
                                               host: Host, nginx: Nginx) -> None:
    served_feed.release("1.1.0")
    host.follow(nginx, served_feed, health_check=["sh", "-c", "sleep 1.5; bin/hello"])
    running.ctl("reload", check=True)
    first = subprocess.Popen([str(Path(os.sys.executable).parent / "updaterctl"), "--socket",  # type: ignore[attr-defined]
                              str(running.socket), "update", "hello"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    running.wait_for(lambda: running.app()["phase"] != "idle", what="first update")
    second = running.ctl("--json", "update", "hello")
    assert second.returncode == 1 and "busy" in second.stderr
    assert first.wait(30) == 0
    assert running.host.current() == "1.1.0"


def test_watch_streams_events(running: Daemon, served_feed: Feed) -> None:
    from tests.helpers import BIN

    watcher = subprocess.Popen([str(BIN / "updaterctl"), "--socket", str(running.socket),
                                "--json", "watch", "hello"], stdout=subprocess.PIPE, text=True)
    try:
        time.sleep(0.5)
        served_feed.release("1.1.0")
        running.ctl("update", "hello", check=True)
        events = []
        assert watcher.stdout is not None
        for line in watcher.stdout:
            events.append(json.loads(line))
            if events[-1]["kind"] == "result":
                break
    finally:
        watcher.terminate()
    phases = [e["phase"] for e in events if e["kind"] == "phase"]
    assert {"checking", "downloading", "staging", "switching", "committing"} <= set(phases)
    assert "installed 1.1.0" in events[-1]["message"]


def test_watch_goes_on_across_a_restart_of_the_daemon(running: Daemon,
                                                      served_feed: Feed) -> None:
    """Issue 38: `updaterctl watch` ended when updaterd restarted (a package upgrade,
    `systemctl restart`); it says the daemon went away and watches again when it is back."""
    from tests.helpers import BIN

    watcher = subprocess.Popen([str(BIN / "updaterctl"), "--socket", str(running.socket),
                                "watch", "hello"], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(0.5)
        assert running.stop() == 0
        time.sleep(1)
        assert watcher.poll() is None, f"watch ended with the daemon: {watcher.stderr.read()}"
        running.start().wait_ready()
        time.sleep(0.5)
        served_feed.release("1.1.0")
        running.ctl("update", "hello", check=True)
        assert watcher.stdout is not None
        for line in watcher.stdout:
            if "installed 1.1.0" in line:
                break
    finally:
        watcher.terminate()
        _, err = watcher.communicate(timeout=10)
    assert "closed the connection; waiting for it to come back (Ctrl-C stops)" in err, err
    assert "updaterd is back; watching again" in err, err


def test_watch_into_a_pipe_closed_early_ends_quietly(running: Daemon,
                                                     served_feed: Feed) -> None:
    """`updaterctl --json watch | head -1`: no broken-pipe error, exit 0."""
    from tests.helpers import BIN

    served_feed.release("1.1.0")
    shell = subprocess.Popen(
        ["bash", "-c", 'set -o pipefail; "$0" --socket "$1" --json watch hello | head -1',
         str(BIN / "updaterctl"), str(running.socket)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(0.5)
    running.ctl("update", "hello", check=True)
    out, err = shell.communicate(timeout=30)
    assert json.loads(out)["app"] == "hello"
    assert err == "" and shell.returncode == 0, (shell.returncode, err)


def test_inhibit_holds_the_switch_until_the_command_ends(running: Daemon, served_feed: Feed,
                                                         tmp_path: Path) -> None:
    from tests.helpers import BIN

    served_feed.release("1.1.0")
    marker = tmp_path / "inhibitor-done"
    holder = subprocess.Popen([str(BIN / "updaterctl"), "--socket", str(running.socket),
                               "inhibit", "hello", "--why", "backup running", "--",
                               "sh", "-c", f"sleep 2; touch {marker}"])
    running.wait_for(lambda: holder.poll() is None and time.sleep(0.3) is None, what="holder")
    started = time.monotonic()
    r = running.ctl("update", "hello", "--no-wait", check=True)
    assert "started" in r.stdout
    running.wait_for(lambda: running.app()["phase"] == "waiting_inhibitors", what="waiting")
    notes = running.app()["notes"]
    assert any("backup running" in n for n in notes)
    assert running.host.current() == "1.0.0"
    running.wait_for(lambda: running.host.current() == "1.1.0", what="switch after release")
    assert marker.exists(), "the switch happened before the inhibitor was released"
    assert time.monotonic() - started >= 1.0
    assert holder.wait(10) == 0


def test_reload_adds_apps_and_refuses_broken_config(running: Daemon, host: Host,
                                                    served_feed: Feed, nginx: Nginx) -> None:
    text = host.config.read_text()
    host.config.write_text(text + '\n[apps.other]\nsource = "directory"\npath = "/nonexistent"\n'
                           f'prefix = "{host.base}/opt/other"\nauto_update = false\n'
                           'check_interval = "1h"\njitter = "0s"\n')
    running.ctl("reload", check=True)
    assert [a["name"] for a in running.status()["apps"]] == ["hello", "other"]
    host.config.write_text(text + "\n[apps.broken]\nsource = 5\n")
    r = running.ctl("--json", "reload")
    assert r.returncode == 1 and "refused" in r.stderr
    assert "apps.broken.source" in r.stdout
    assert [a["name"] for a in running.status()["apps"]] == ["hello", "other"]
    running.signal(signal.SIGHUP)  # the same broken file through SIGHUP
    running.wait_for(lambda: "keeping the old configuration" in running.log.read_text(),
                     what="SIGHUP refusal")
    assert [a["name"] for a in running.status()["apps"]] == ["hello", "other"]


def test_c68_second_daemon_refuses_to_start(running: Daemon, host: Host) -> None:
    r = run_updaterd("--config", host.config, timeout=20)
    assert r.returncode == 1
    assert f"pid {running.proc.pid}" in r.stderr  # type: ignore[union-attr]


def test_c69_lock_released_by_kill_9_and_stale_pidfile_ignored(
        host: Host, nginx: Nginx, served_feed: Feed, tmp_path: Path) -> None:
    served_feed.release("1.0.0")
    host.follow(nginx, served_feed)
    first = Daemon(host).start()
    first.wait_for(lambda: first.app()["current"] == "1.0.0", what="install")
    first.signal(signal.SIGKILL)
    assert first.stop() == -signal.SIGKILL
    assert (host.base / "updaterd.lock").read_text().strip() == str(first.proc.pid), \
        "the lock file still names the dead holder"  # type: ignore[union-attr]
    pidfile = tmp_path / "updaterd.pid"
    pidfile.write_text(f"{first.proc.pid}\n")  # type: ignore[union-attr]
    r = run_updaterd("--config", host.config, "--daemonize", "--pidfile", pidfile, timeout=20)
    assert r.returncode == 0, r.stderr
    d = Daemon(host)
    d.wait_for(lambda: pidfile.exists() and pidfile.read_text().strip() != str(
        first.proc.pid) and d.socket.exists(), what="the new daemon")  # type: ignore[union-attr]
    pid = int(pidfile.read_text())
    try:
        assert d.status()["daemon"]["pid"] == pid
    finally:
        os.kill(pid, signal.SIGTERM)
        d.wait_for(lambda: not pidfile.exists(), what="stop")


def test_c73_sigterm_during_update_ends_on_one_complete_version(
        host: Host, nginx: Nginx, served_feed: Feed, daemon: Daemon) -> None:
    served_feed.release("1.0.0")
    host.follow(nginx, served_feed, health_check=["sh", "-c", "sleep 2; bin/hello"])
    daemon.start()
    daemon.wait_for(lambda: daemon.app()["current"] == "1.0.0", what="first install")
    served_feed.release("1.1.0")
    daemon.ctl("update", "hello", "--no-wait", check=True)
    daemon.wait_for(lambda: daemon.app()["phase"] == "health_check", what="health check")
    daemon.signal(signal.SIGTERM)
    assert daemon.proc is not None and daemon.proc.wait(20) == 0
    state = host.state()
    assert state["pending"] is None
    assert state["installed"] == host.current() == "1.1.0", "the shielded steps finished"
    assert not daemon.socket.exists()


def test_sd_notify_ready_status_watchdog_stopping(host: Host, nginx: Nginx, served_feed: Feed,
                                                  tmp_path: Path) -> None:
    served_feed.release("1.0.0")
    host.follow(nginx, served_feed)
    sock_path = tmp_path / "notify.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(str(sock_path))
    listener.settimeout(0.5)
    d = Daemon(host, env={"NOTIFY_SOCKET": str(sock_path), "WATCHDOG_USEC": "200000"})
    d.start()
    messages: list[str] = []

    def drain(seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            with contextlib.suppress(TimeoutError):
                messages.append(listener.recv(4096).decode())

    try:
        drain(1.5)
        d.signal(signal.SIGTERM)
        drain(1.0)
    finally:
        assert d.stop() == 0
        listener.close()
    assert "READY=1" in messages
    assert any(m.startswith("STATUS=") for m in messages)
    assert messages.count("WATCHDOG=1") >= 3, "a ping every half WATCHDOG_USEC"
    assert "STOPPING=1" in messages
    assert messages.index("READY=1") < messages.index("STOPPING=1")


def test_unprivileged_user_reads_status_but_may_not_roll_back(
        host: Host, nginx: Nginx, served_feed: Feed, public_dir: Path) -> None:
    served_feed.release("1.0.0")
    host.follow(nginx, served_feed)
    d = Daemon(host)
    d.socket = host.open_socket_in(public_dir, admin_group="root")
    d.start()
    try:
        st = rpc_as("nobody", "nogroup", d.socket, '{"jsonrpc":"2.0","id":1,"method":"status"}')
        assert st["result"]["apps"][0]["name"] == "hello"
        for method in ("rollback", "update", "pause", "reload"):
            params = '{"app":"hello"}' if method != "reload" else "{}"
            err = rpc_as("nobody", "nogroup", d.socket,
                         f'{{"jsonrpc":"2.0","id":2,"method":"{method}","params":{params}}}')
            assert err["error"]["code"] == 3, method
        assert oct(d.socket.stat().st_mode & 0o777) == "0o666"
    finally:
        d.stop()


def rpc_lines(sock: Path, payload: bytes, replies: int, timeout: float = 10) -> list[bytes]:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(str(sock))
        s.sendall(payload)
        buf = b""
        while buf.count(b"\n") < replies:
            chunk = s.recv(65536)
            if not chunk:
                break
            buf += chunk
    return buf.splitlines()


def test_malformed_json_gets_parse_error_and_connection_keeps_working(running: Daemon) -> None:
    lines = rpc_lines(running.socket, b'{"jsonrpc": "2.0", "id": 1, "meth\n'
                      b'{"jsonrpc":"2.0","id":2,"method":"status"}\n', 2)
    first, second = (json.loads(x) for x in lines)
    assert first["error"]["code"] == -32700 and first["id"] is None
    assert second["id"] == 2 and "daemon" in second["result"]


def test_e109_two_mib_line_refused_and_others_still_served(running: Daemon) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.connect(str(running.socket))
        s.settimeout(10)
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            s.sendall(b'{"jsonrpc":"2.0","id":1,"method":"status","params":{"x":"' +
                      b"a" * (2 << 20) + b'"}}\n')
        reply = s.recv(65536)
    assert json.loads(reply.splitlines()[0])["error"]["code"] == -32600
    assert running.ctl("status").returncode == 0


def test_200_concurrent_clients_are_all_answered(running: Daemon) -> None:
    answers: list[dict[str, Any]] = []
    lock = threading.Lock()

    def one(i: int) -> None:
        line = rpc_lines(running.socket, json.dumps(
            {"jsonrpc": "2.0", "id": i, "method": "status"}).encode() + b"\n", 1, 30)[0]
        with lock:
            answers.append(json.loads(line))

    threads = [threading.Thread(target=one, args=(i,)) for i in range(200)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(a["id"] for a in answers) == list(range(200))
    assert all("result" in a for a in answers)


def test_updaterctl_unreachable_daemon_exits_3(tmp_path: Path) -> None:
    from tests.helpers import BIN

    r = subprocess.run([str(BIN / "updaterctl"), "--socket", str(tmp_path / "none.sock"),
                        "status"], capture_output=True, text=True)
    assert r.returncode == 3
    assert f"cannot reach updaterd at {tmp_path / 'none.sock'}" in r.stderr


def test_metrics_are_prometheus_text(running: Daemon) -> None:
    text = running.ctl("metrics", check=True).stdout
    assert 'updaterd_app_info{app="hello",installed="1.0.0",available=""} 1' in text
    assert "# TYPE updaterd_checks_total counter" in text
    assert 'updaterd_phase{app="hello",phase="idle"} 1' in text


def test_daemonize_with_pidfile(host: Host, nginx: Nginx, served_feed: Feed,
                                tmp_path: Path) -> None:
    served_feed.release("1.0.0")
    host.follow(nginx, served_feed)
    pidfile = tmp_path / "updaterd.pid"
    r = run_updaterd("--config", host.config, "--daemonize", "--pidfile", pidfile, timeout=20)
    assert r.returncode == 0, r.stderr
    d = Daemon(host)
    deadline = time.monotonic() + 15
    while not (pidfile.exists() and d.socket.exists()) and time.monotonic() < deadline:
        time.sleep(0.05)
    pid = int(pidfile.read_text())
    try:
        d.wait_for(lambda: d.app()["current"] == "1.0.0", what="install under --daemonize")
    finally:
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 15
    while pidfile.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not pidfile.exists()


def dropped(sock: socket.socket) -> bool:
    """The daemon hung up: an end of file, or a reset when it closed with data unread."""
    try:
        return sock.recv(100) == b""
    except ConnectionResetError:
        return True


def test_stalled_and_idle_clients_are_dropped(host: Host, nginx: Nginx, served_feed: Feed,
                                              daemon: Daemon) -> None:
    served_feed.release("1.0.0")
    host.follow(nginx, served_feed, limits={"client_line_timeout": "500ms",
                                                 "client_idle_timeout": "1s"})
    daemon.start()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as stalled, \
            socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as idle:
        stalled.connect(str(daemon.socket))
        idle.connect(str(daemon.socket))
        stalled.sendall(b'{"jsonrpc":"2.0","id":1,"meth')  # and never finishes the line
        stalled.settimeout(5)
        idle.settimeout(5)
        started = time.monotonic()
        assert daemon.ctl("status").returncode == 0, "others are served meanwhile"
        assert dropped(stalled)
        assert time.monotonic() - started < 3
        assert dropped(idle)
    assert daemon.ctl("status").returncode == 0


def test_auto_update_off_downloads_but_waits_for_update(host: Host, nginx: Nginx,
                                                        served_feed: Feed,
                                                        daemon: Daemon) -> None:
    art = served_feed.release("1.0.0")
    host.follow(nginx, served_feed, auto_update=False)
    daemon.start()
    daemon.wait_for(lambda: daemon.app()["available"] == "1.0.0", what="check")
    cached = host.base / "cache" / "hello" / art.name
    daemon.wait_for(cached.exists, what="download without install")
    assert host.current() is None
    assert any("auto_update is off" in n for n in daemon.app()["notes"])
    uri = f"/{served_feed.folder.name}/{art.name}"
    fetched = [r for r in nginx.requests() if r["uri"] == uri]
    daemon.ctl("update", "hello", check=True)
    assert host.current() == "1.0.0"
    assert [r for r in nginx.requests() if r["uri"] == uri] == fetched, "not downloaded twice"


def test_a_socket_path_as_long_as_unix_allows_works_and_a_longer_one_is_refused(
        host: Host, feed: Feed, tmp_path: Path) -> None:
    """107 bytes is sun_path's limit; the socket is bound under a longer temp name first,
    which must not be what fails (it did, for paths of 86 bytes and more)."""
    feed.release("1.0.0")
    host.configure(source="directory", path=str(feed.folder), public_keys=[feed.pub],
                   check_interval="1h", jitter="0s")
    base = str(tmp_path / "run") + "/"
    run_dir = Path(base + "r" * (107 - len(base) - len("/updaterd.sock")))
    run_dir.mkdir(parents=True)
    d = Daemon(host)
    d.socket = host.open_socket_in(run_dir)
    assert len(str(d.socket).encode()) == 107
    d.start()
    try:
        d.wait_for(lambda: d.app()["current"] == "1.0.0", what="an install over that socket")
    finally:
        d.stop()
    longer = Path(str(run_dir) + "r")
    longer.mkdir()
    host.open_socket_in(longer)
    r = run_updaterd("--config", host.config, "check-config")
    assert r.returncode != 0 and "daemon.socket: 108 bytes; a Unix socket's path holds at " \
        "most 107" in r.stderr, r.stderr
