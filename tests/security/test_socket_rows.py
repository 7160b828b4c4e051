"""Rows E101-E103, E107 and E110 of the catalogue: how the control socket is created, who may
go back, and a crowd of slow clients from other users. Other users are real: `setpriv` runs the
clients under other uids against the real daemon."""

from __future__ import annotations

import json
import os
import re
import socket
import stat
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import trio

from tests.conftest import Daemon, Host, Nginx
from tests.helpers import Feed, rpc_as, run_updaterd
from updaterd.errors import UpdaterError
from updaterd.service import rpc


def _create(path: Path, check: Any = None) -> None:
    """rpc.create_socket as the daemon calls it (a trio socket, closed in trio); `check` runs
    while it listens."""

    async def main() -> None:
        sock = rpc.create_socket(path, 0o660, "root")
        try:
            if check is not None:
                check()
        finally:
            sock.close()

    trio.run(main)


def _call(method: str, **params: Any) -> str:
    return json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params})


# -- E101-E103: creating the socket ------------------------------------------------------------

def test_e101_socket_is_never_wider_than_its_mode(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Bound under a temp name while the umask keeps it 0600, chmod to the mode, then renamed:
    the path itself never exists with other permissions, nor without a listener."""
    path = tmp_path / "run" / "updaterd.sock"
    seen: list[tuple[str, str, bool]] = []
    real_chmod, real_replace = os.chmod, os.replace

    def chmod(p: Any, mode: int, *a: Any, **k: Any) -> None:
        seen.append(("chmod", oct(stat.S_IMODE(os.lstat(p).st_mode)), path.exists()))
        real_chmod(p, mode, *a, **k)

    def replace(src: Any, dst: Any, *a: Any, **k: Any) -> None:
        seen.append(("replace", oct(stat.S_IMODE(os.lstat(src).st_mode)), path.exists()))
        real_replace(src, dst, *a, **k)

    def listening() -> None:
        assert seen == [("chmod", "0o600", False), ("replace", "0o660", False)]
        st = os.lstat(path)
        assert stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o660
        assert st.st_gid == 0
        probe = socket.socket(socket.AF_UNIX)
        probe.connect(str(path))  # listening already when it appeared
        probe.close()

    monkeypatch.setattr(os, "chmod", chmod)
    monkeypatch.setattr(os, "replace", replace)
    _create(path, listening)


def test_e102_what_is_at_the_socket_path(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    path = run / "updaterd.sock"
    path.write_text("not a socket")
    with pytest.raises(UpdaterError, match="exists and is not a socket"):
        _create(path)
    path.unlink()
    path.symlink_to(tmp_path / "elsewhere.sock")
    with pytest.raises(UpdaterError, match="not a socket"):
        _create(path)
    path.unlink()
    live = socket.socket(socket.AF_UNIX)
    live.bind(str(path))
    live.listen(1)
    with pytest.raises(UpdaterError, match="another process is listening"):
        _create(path)
    live.close()  # now stale, and ours: replaced
    _create(path)
    path.unlink()
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(path))
    stale.close()
    os.chown(path, 65534, 65534)  # stale, but somebody else's
    with pytest.raises(UpdaterError, match="belongs to uid 65534"):
        _create(path)
    assert path.exists(), "a foreign file is never removed"


def test_e103_world_writable_socket_folder_refuses_to_start(host: Host, public_dir: Path,
                                                           nginx: Nginx,
                                                           served_feed: Feed) -> None:
    served_feed.release("1.0.0")
    host.follow(nginx, served_feed)
    public_dir.chmod(0o777)
    host.open_socket_in(public_dir)
    r = run_updaterd("--config", host.config, timeout=30)
    assert r.returncode == 2  # refused with the configuration, naming the fix (G145)
    assert f"socket folder {public_dir}: {public_dir} is writable by group and others" \
        in r.stderr and f"chmod go-w {public_dir}" in r.stderr
    assert not (public_dir / "updaterd.sock").exists()


# -- E107: going back needs a stricter group ----------------------------------------------------

def test_e107_rollback_and_downgrade_need_the_downgrade_group(host: Host, nginx: Nginx,
                                                              served_feed: Feed,
                                                              public_dir: Path) -> None:
    served_feed.release("1.0.0")
    served_feed.release("1.1.0")
    host.follow(nginx, served_feed)
    assert run_updaterd("--config", host.config, "update", "hello", "--version",
                        "1.0.0").returncode == 0
    assert run_updaterd("--config", host.config, "--once").returncode == 0
    assert host.current() == "1.1.0"
    d = Daemon(host)
    d.socket = host.open_socket_in(public_dir, admin_group="users", downgrade_group="staff")
    d.start()
    try:
        users = 100  # an admin (primary group `users`), not in `staff`
        sock = d.socket
        ok = rpc_as(65534, users, sock, _call("check", app="hello"))
        assert "result" in ok, ok
        err = rpc_as(65534, users, sock, _call("rollback", app="hello"))
        assert err["error"]["code"] == 3
        assert "rollback needs root or the downgrade group 'staff'" in err["error"]["message"]
        err = rpc_as(65534, users, sock, _call("update", app="hello", version="1.0.0"))
        assert err["error"]["code"] == 3 and "older 1.0.0" in err["error"]["message"]
        assert host.current() == "1.1.0"
        staff = 50  # in both groups' terms: primary group staff is a downgrade member
        err = rpc_as(65534, staff, sock, _call("rollback", app="hello"))
        assert err["error"]["code"] == 3 and "admin group" in err["error"]["message"]
        d.ctl("rollback", "hello", check=True)  # root may
        assert host.current() == "1.0.0"
    finally:
        d.stop()


# -- E110: a crowd of slow clients ---------------------------------------------------------------

SLOWLORIS = r"""
import socket, sys, time
path, count, hold = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
held, refused = [], 0
for _ in range(count):
    s = socket.socket(socket.AF_UNIX)
    try:
        s.connect(path)
        s.sendall(b'{"jsonrpc":"2.0","id":1,"me')  # a line that never ends
        held.append(s)
    except OSError:
        refused += 1
time.sleep(hold)
alive = 0  # neither answered nor closed by the daemon
for s in held:
    s.setblocking(False)
    try:
        s.recv(4096)
    except BlockingIOError:
        alive += 1
    except OSError:
        pass
print(len(held), refused, alive)
"""


def test_e110_thousand_slow_clients_do_not_starve_root(host: Host, nginx: Nginx,
                                                      served_feed: Feed,
                                                      public_dir: Path) -> None:
    """1000 connections from 10 other users that send half a line and stall: the caps turn
    most away at once, the rest are dropped at the line timeout, and root is served in <1 s."""
    served_feed.release("1.0.0")
    host.follow(nginx, served_feed, limits={"client_line_timeout": "3s",
                                            "client_idle_timeout": "5s"})
    d = Daemon(host)
    d.socket = host.open_socket_in(public_dir)
    d.start()
    crowd = [subprocess.Popen(["setpriv", f"--reuid={20001 + i}", f"--regid={20001 + i}",
                               "--clear-groups", "/usr/bin/python3", "-c", SLOWLORIS,
                               str(d.socket), "100", "6"], stdout=subprocess.PIPE, text=True)
             for i in range(10)]
    try:
        time.sleep(1.5)  # the crowd is connected and stalled
        worst = 0.0
        for _ in range(5):
            started = time.monotonic()
            assert d.ctl("status").returncode == 0
            worst = max(worst, time.monotonic() - started)
        results = [tuple(map(int, p.communicate(timeout=60)[0].split())) for p in crowd]
        assert d.proc is not None and d.proc.poll() is None, "the daemon is still running"
    finally:
        for p in crowd:
            p.kill()
        d.stop()
    held = sum(r[0] for r in results)
    still_open = sum(r[2] for r in results)
    assert held + sum(r[1] for r in results) == 1000
    assert still_open == 0, "every stalled client was dropped by the line timeout"
    assert worst < 1.0, f"root waited {worst:.2f}s"
    log = d.log.read_text()
    assert "Traceback" not in log
    print(f"\nE110: 1000 slow clients from 10 uids; root's status took at most "
          f"{worst * 1000:.0f} ms")


# -- E105, E106, E108, F126: what a client can and cannot say -----------------------------------

def test_e105_e106_identity_comes_from_the_kernel_only(host: Host, nginx: Nginx,
                                                       served_feed: Feed,
                                                       public_dir: Path) -> None:
    """Claims of identity in the request change nothing; a client that hangs up right after
    sending a change gets no action either (it was refused at its first line)."""
    served_feed.release("1.0.0")
    host.follow(nginx, served_feed)
    assert run_updaterd("--config", host.config, "--once").returncode == 0
    d = Daemon(host)
    d.socket = host.open_socket_in(public_dir, admin_group="root")
    d.start()
    try:
        for params in ({"app": "hello", "uid": 0}, {"app": "hello", "user": "root"}):
            err = rpc_as(65534, 65534, d.socket, json.dumps(
                {"jsonrpc": "2.0", "id": 1, "method": "pause", "params": params}))
            assert err["error"]["code"] in (-32602, 3), err
        err = rpc_as(65534, 65534, d.socket, _call("inhibit", app="hello", who="root",
                                                     why="uid 0 asks"))
        assert err["error"]["code"] == 3, "`who` is a label, not an identity"
        subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                        "socat", "-u", "-", f"UNIX-CONNECT:{d.socket}"],
                       input=_call("pause", app="hello") + "\n", text=True, timeout=20)
        time.sleep(0.3)
        assert not d.app()["paused"]
    finally:
        d.stop()


def test_e108_no_method_takes_a_path_url_command_or_key() -> None:
    """The request parameters, field by field: `rollback --to` is the one that may be a path,
    and the daemon accepts only a path inside the app's backups (tests/test_inplace.py)."""
    import msgspec

    from updaterctl.protocol import PARAMS

    suspicious = re.compile(r"path|url|command|cmd|key|exec|file|dir|socket|config|prefix")
    found = {(method, f.name) for method, struct in PARAMS.items()
             for f in msgspec.structs.fields(struct) if suspicious.search(f.name)}
    assert found == set(), found
    fields = {f.name for f in msgspec.structs.fields(PARAMS["rollback"])}
    assert fields == {"app", "to", "with_data"}  # with_data: a bool, never a path
    assert msgspec.structs.fields(PARAMS["rollback"])[2].type is bool


def test_f126_no_method_changes_the_source_or_the_keys(running: Daemon) -> None:
    """There is no set_config: the source and the keys change only in the root-owned file,
    and `reload` takes no parameters to point it elsewhere."""
    lines = {"set_config": '{"jsonrpc":"2.0","id":1,"method":"set_config","params":'
                           '{"app":"hello","url":"https://evil.example/m.json"}}',
             "reload": '{"jsonrpc":"2.0","id":1,"method":"reload","params":'
                       '{"path":"/tmp/evil.toml"}}'}
    for method, line in lines.items():
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(10)
            s.connect(str(running.socket))
            s.sendall(line.encode() + b"\n")
            reply = json.loads(s.makefile().readline())
        code = reply["error"]["code"]
        assert code == (-32601 if method == "set_config" else -32602), reply
