"""The socket server in-process: framing and JSON-RPC edge cases, and fuzzing that shows no
input line makes the server raise (hypothesis)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.helpers import as_nobody
from updaterctl.protocol import StatusParams
from updaterd.service.jsonrpc import RpcError
from updaterd.service.rpc import Connection, Limits, Peer, Server


async def status(p: StatusParams, conn: Connection) -> dict[str, Any]:
    return {"app": p.app}


async def boom(p: Any, conn: Connection) -> None:
    raise RuntimeError("secret detail")


async def denied(p: Any, conn: Connection) -> None:
    raise RpcError(4, "no such version")


LIMITS = Limits(max_clients=10, max_clients_per_uid=5, idle_timeout=1, line_timeout=1)


def server() -> Server:
    return Server({"status": status, "metrics": boom, "update": denied}, lambda: "nogroup",
                  LIMITS)


class FakeConn:
    def __init__(self, admin: bool = True) -> None:
        self.peer = Peer(1, 0 if admin else 1000, 0, admin)


def call(line: bytes, admin: bool = True) -> Any:
    async def go() -> bytes | None:
        return await server().handle_line(line, FakeConn(admin))  # type: ignore[arg-type]

    out = trio.run(go)
    return None if out is None else json.loads(out)


def test_e111_deep_nesting_is_a_parse_error_not_a_crash() -> None:
    assert call(b"[" * 100_000)["error"]["code"] in (-32700, -32600)


def test_e112_invalid_utf8_and_nul() -> None:
    for line in (b"\xff\xfe", b'{"a":"\x00"}', b"hello"):
        out = call(line)
        assert out["error"]["code"] in (-32700, -32600) and out["id"] is None


def test_e113_e119_invalid_requests_get_null_id() -> None:
    for line in (b'{"jsonrpc":"2.0","method":1}', b'{"method":"status","id":1}',
                 b'{"jsonrpc":"1.0","method":"status","id":1}',
                 b'{"jsonrpc":"2.0","method":"status","id":{"a":1}}',
                 b'{"jsonrpc":"2.0","method":"status","id":[1]}'):
        out = call(line)
        assert out["error"]["code"] == -32600 and out["id"] is None, line


def test_e114_e115_e116_method_params_internal() -> None:
    assert call(b'{"jsonrpc":"2.0","id":1,"method":"nope"}')["error"]["code"] == -32601
    bad = call(b'{"jsonrpc":"2.0","id":2,"method":"status","params":{"app":3}}')
    assert bad["error"]["code"] == -32602 and "Traceback" not in bad["error"]["message"]
    internal = call(b'{"jsonrpc":"2.0","id":3,"method":"metrics"}')
    assert internal["error"] == {"code": -32603, "message": "internal error"}


def test_e117_notification_gets_no_reply() -> None:
    assert call(b'{"jsonrpc":"2.0","method":"status"}') is None


def test_e118_batches() -> None:
    assert call(b"[]")["error"]["code"] == -32600
    assert [r["error"]["code"] for r in call(b"[1]")] == [-32600]
    assert len(call(b"[1,2,3]")) == 3
    assert call(b'[{"jsonrpc":"2.0","method":"status"},{"jsonrpc":"2.0","method":"status"}]') \
        is None
    mixed = call(b'[{"jsonrpc":"2.0","id":1,"method":"status","params":{"app":"a"}},'
                 b'{"jsonrpc":"2.0","method":"status"}, 5]')
    assert [r.get("result") for r in mixed] == [{"app": "a"}, None]
    assert call(b"[" + b",".join([b"1"] * 101) + b"]")["error"]["code"] == -32600


def test_e104_authorization_before_action() -> None:
    out = call(b'{"jsonrpc":"2.0","id":1,"method":"update","params":{"app":"x"}}', admin=False)
    assert out["error"]["code"] == 3
    out = call(b'{"jsonrpc":"2.0","id":1,"method":"update","params":{"app":"x"}}', admin=True)
    assert out["error"]["code"] == 4
    assert "result" in call(b'{"jsonrpc":"2.0","id":1,"method":"status"}', admin=False)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_e121_fuzzed_bytes_never_raise(line: bytes) -> None:
    call(line.replace(b"\n", b" "))


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(), children,
                                                                      max_size=4),
    max_leaves=20)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(["jsonrpc", "id", "method", "params", "x"]),
                       json_values, max_size=5))
def test_e121_fuzzed_requests_always_get_a_json_answer(obj: dict[str, Any]) -> None:
    out = call(json.dumps(obj).encode())
    if out is not None:
        assert out["jsonrpc"] == "2.0" and ("result" in out) != ("error" in out)


@pytest.mark.parametrize("line", [b'{"jsonrpc":"2.0","id":true,"method":"status"}'])
def test_boolean_id_rejected(line: bytes) -> None:
    assert call(line)["error"]["code"] == -32600


# -- who is admin: the process's own groups, as the kernel reports them (G137) ----------------

def test_root_is_admin_whatever_its_groups() -> None:
    from updaterd.service.rpc import is_admin

    assert is_admin(0, 12345, (), "no-such-group-here")


def test_admin_by_primary_or_supplementary_group_only() -> None:
    import grp

    from updaterd.service.rpc import is_admin

    gid = grp.getgrnam("daemon").gr_gid
    assert is_admin(1000, gid, (), "daemon")
    assert is_admin(1000, 4242, (7, gid, 9), "daemon")
    assert not is_admin(1000, 4242, (7, 9), "daemon")
    assert not is_admin(1000, gid + 1, (gid - 1, gid + 2), "daemon")
    assert not is_admin(1000, gid, (gid,), "no-such-group-here")
    assert not is_admin(1, 0, (0,), "no-such-group-here")


def test_every_changing_method_needs_admin_and_every_reading_one_does_not() -> None:
    from updaterctl.protocol import READ_METHODS

    async def ok(p: Any, conn: Connection) -> str:
        return "done"

    names = ["status", "history", "list_backups", "metrics", "update", "rollback", "check",
             "skip", "pause", "reload", "cancel", "inhibit", "subscribe"]
    srv = Server(dict.fromkeys(names, ok), lambda: "nogroup", LIMITS)

    async def go(method: str, admin: bool) -> Any:
        line = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method}).encode()
        out = await srv.handle_line(line, FakeConn(admin))  # type: ignore[arg-type]
        return json.loads(out or b"null")

    for method in names:
        reply = trio.run(go, method, False)
        if method in READ_METHODS:
            assert "error" not in reply or reply["error"]["code"] != 3, method
        else:
            assert reply["error"]["code"] == 3, method
            assert f"{method} needs root or the admin group 'nogroup'" in \
                reply["error"]["message"]
        assert "error" not in trio.run(go, method, True) or \
            trio.run(go, method, True)["error"]["code"] != 3


# -- the peer's groups, as the kernel reports them, however many ----------------------------------

def _groups_of_a_peer_with(groups: list[int], folder: Path) -> tuple[int, ...]:
    import socket
    import subprocess

    from updaterd.service.rpc import peer_groups

    path = folder / "s"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.settimeout(20)
    server.bind(str(path))
    path.chmod(0o777)
    server.listen(1)
    peer = subprocess.Popen(
        ["setpriv", "--reuid=65534", "--regid=65534",
         f"--groups={','.join(map(str, groups))}" if groups else "--clear-groups",
         "socat", "-u", "OPEN:/dev/null", f"UNIX-CONNECT:{path}"])
    try:
        conn, _ = server.accept()
        with conn:
            return peer_groups(conn)  # type: ignore[arg-type]
    finally:
        peer.kill()
        peer.wait()
        server.close()


@pytest.mark.parametrize("count", [0, 1, 3, 64, 65, 200, 256])
def test_peer_groups_reads_every_group_of_the_peer(count: int, public_dir: Path) -> None:
    """More than 64 groups once read as none: the retry asked Python for more than the 1024
    bytes its getsockopt allows."""
    groups = list(range(10_000, 10_000 + count))
    assert sorted(_groups_of_a_peer_with(groups, public_dir)) == groups


def test_a_peer_in_more_groups_than_can_be_read_shows_none(public_dir: Path) -> None:
    assert _groups_of_a_peer_with(list(range(10_000, 10_300)), public_dir) == ()


def test_the_socket_folder_is_made_0755(tmp_path: Path) -> None:
    import stat as st

    from updaterd.service.rpc import create_socket

    async def make() -> None:
        create_socket(tmp_path / "run" / "u.sock", 0o660, "no-such-group-here").close()

    trio.run(make)
    assert st.S_IMODE((tmp_path / "run").stat().st_mode) == 0o755


def test_a_stream_cannot_be_batched_but_can_be_called_alone() -> None:
    async def ok(p: Any, conn: Connection) -> str:
        return "streaming"

    srv = Server({"subscribe": ok}, lambda: "nogroup", LIMITS)
    conn = FakeConn(admin=False)
    conn.streams = {}  # type: ignore[attr-defined]
    line = b'{"jsonrpc":"2.0","id":1,"method":"subscribe"}'

    async def go(payload: bytes) -> Any:
        return json.loads(await srv.handle_line(payload, conn) or b"null")  # type: ignore[arg-type]

    assert trio.run(go, line)["result"] == "streaming"
    batch = trio.run(go, b"[" + line + b"]")
    assert batch[0]["error"]["message"] == "subscribe cannot be batched"


# -- the socket's group and owner, also for an updaterd run by an ordinary user ----------------

def test_the_socket_takes_the_admin_group_when_it_exists(tmp_path: Path) -> None:
    import grp

    from updaterd.service.rpc import set_socket_access

    f = tmp_path / "sock"
    f.write_text("")
    set_socket_access(f, 0o660, "daemon")
    st = f.stat()
    assert (st.st_gid, oct(st.st_mode & 0o777)) == (grp.getgrnam("daemon").gr_gid, "0o660")
    g = tmp_path / "sock2"
    g.write_text("")
    set_socket_access(g, 0o600, "no-such-group-here")
    assert (g.stat().st_gid, oct(g.stat().st_mode & 0o777)) == (0, "0o600")


def test_an_ordinary_users_socket_keeps_its_owner(public_dir: Path) -> None:
    """The owner is never changed (-1): chown to root would fail for an ordinary user."""
    from updaterd.service.rpc import set_socket_access

    f = public_dir / "sock"
    f.write_text("")
    os.chown(f, 65534, 65534)

    def both() -> str:
        set_socket_access(f, 0o660, "nogroup")
        set_socket_access(f, 0o640, "no-such-group-here")  # the group is left alone
        return "done"

    assert as_nobody(both) == "done"
    assert f.stat().st_uid == 65534
def test_a_known_method_without_a_handler_is_not_found() -> None:
    srv = Server({"status": status}, lambda: "nogroup", LIMITS)

    async def go() -> Any:
        line = b'{"jsonrpc":"2.0","id":1,"method":"update","params":{"app":"x"}}'
        return json.loads(await srv.handle_line(line, FakeConn(True)) or b"null")  # type: ignore[arg-type]

    assert trio.run(go)["error"] == {"code": -32601, "message": "method not found: update"}


def test_params_are_not_coerced() -> None:
    async def history(p: Any, conn: Connection) -> int:
        return int(p.limit)

    srv = Server({"history": history}, lambda: "nogroup", LIMITS)

    async def go(params: str) -> Any:
        line = ('{"jsonrpc":"2.0","id":1,"method":"history","params":' + params + "}").encode()
        return json.loads(await srv.handle_line(line, FakeConn(True)) or b"null")  # type: ignore[arg-type]

    assert trio.run(go, '{"app":"x","limit":5}')["result"] == 5
    assert trio.run(go, '{"app":"x","limit":"5"}')["error"]["code"] == -32602


def test_the_socket_folder_is_made_with_its_parents(tmp_path: Path) -> None:
    from updaterd.service.rpc import create_socket

    async def make() -> None:
        create_socket(tmp_path / "run" / "updaterd" / "u.sock", 0o660, "nogroup").close()

    trio.run(make)
    assert (tmp_path / "run" / "updaterd" / "u.sock").is_socket()


def test_an_ordinary_users_daemon_never_replaces_roots_socket(public_dir: Path) -> None:
    import socket

    from updaterd.service.rpc import create_socket

    folder = public_dir / "run"
    folder.mkdir()
    os.chown(folder, 65534, 65534)
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(folder / "u.sock"))
    stale.close()  # root's socket, nobody listening

    def make() -> str:
        async def bind() -> None:
            create_socket(folder / "u.sock", 0o660, "nogroup").close()

        trio.run(bind)
        return "replaced"

    assert as_nobody(make, real=True) == \
        f"!UpdaterError: {folder / 'u.sock'} belongs to uid 0; refusing to replace it"
    assert (folder / "u.sock").stat().st_uid == 0
