"""The control socket at the level of bytes, on the standard library alone.

`updaterctl status` is run by people and by scripts in loops: its cost is Python's start-up plus
what it imports. This module connects, sends one request and reads one reply with `socket` and
`json`, so that path never loads msgspec; the typed `Client` (client.py) builds on the same
connection and errors.
"""

from __future__ import annotations

import json
import os
import socket
from enum import IntEnum
from typing import Any

DEFAULT_SOCKET = "/run/updaterd/updaterd.sock"
MAX_MESSAGE = 1 << 20


class ErrorCode(IntEnum):
    """JSON-RPC's own codes, then updaterd's (updaterd(8) CONTROL SOCKET PROTOCOL)."""

    PARSE_ERROR = -32700
    INVALID_REQUEST = -32600
    METHOD_NOT_FOUND = -32601
    INVALID_PARAMS = -32602
    INTERNAL_ERROR = -32603
    UNKNOWN_APP = 1
    BUSY = 2
    NOT_PERMITTED = 3
    NO_SUCH_VERSION = 4
    UPDATE_FAILED = 5
    CONFIG_INVALID = -32000  # JSON-RPC's implementation-defined server error: reload refused


class ClientError(Exception):
    """Base of the client's errors."""


class DaemonUnreachable(ClientError):
    """No daemon answers at the socket path."""


class NotAllowedToConnect(DaemonUnreachable):
    """The socket's mode and group keep this user out (exit status 4, not 3)."""


class RemoteError(ClientError):
    """The daemon answered with a JSON-RPC error."""

    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(message)
        self.code, self.message, self.data = code, message, data

    @property
    def not_permitted(self) -> bool:
        return self.code == ErrorCode.NOT_PERMITTED

    @classmethod
    def from_error(cls, error: dict[str, Any]) -> RemoteError:
        return cls(int(error.get("code", 0)), str(error.get("message")), error.get("data"))


def _who_may_connect(path: str) -> str:
    """Why connecting to the socket was refused, in terms an operator can act on."""
    import grp
    import stat

    try:
        st = os.stat(path)
    except OSError:
        return f"cannot connect to {path}: permission denied (a folder on the way is closed)"
    try:
        group = grp.getgrgid(st.st_gid).gr_name
    except KeyError:
        group = str(st.st_gid)
    return (f"cannot connect to {path}: permission denied; the socket is mode "
            f"{stat.S_IMODE(st.st_mode):04o}, group {group}: join group {group} (then log in "
            "again) or run as root")


def connect(path: str, timeout: float | None = None) -> socket.socket:
    """A connected socket, or the error an operator can act on."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(path)
    except PermissionError:
        sock.close()
        raise NotAllowedToConnect(_who_may_connect(path)) from None
    except OSError as e:
        sock.close()
        raise DaemonUnreachable(f"cannot reach updaterd at {path}: {e.strerror or e}") from None
    return sock


class LineReader:
    """Lines from the daemon, one JSON object each, with the size cap of the protocol."""

    def __init__(self, sock: socket.socket, path: str) -> None:
        self.sock, self.path = sock, path
        self.buffer = bytearray()

    def line(self) -> bytes:
        while (end := self.buffer.find(b"\n")) < 0:
            try:
                data = self.sock.recv(65536)
            except OSError as e:
                raise DaemonUnreachable(f"lost updaterd at {self.path}: {e}") from None
            if not data:
                raise DaemonUnreachable(f"updaterd at {self.path} closed the connection")
            self.buffer += data
            if len(self.buffer) > 4 * MAX_MESSAGE:
                raise ClientError(f"updaterd's reply is larger than {4 * MAX_MESSAGE >> 20} "
                                  "MiB; refusing to read it")
        line = bytes(self.buffer[:end])
        del self.buffer[: end + 1]
        return line


def send(sock: socket.socket, path: str, body: bytes) -> None:
    try:
        sock.sendall(body + b"\n")
    except OSError as e:
        raise DaemonUnreachable(f"lost updaterd at {path}: {e}") from None


def request(rid: int, method: str, params: dict[str, Any] | None) -> dict[str, Any]:
    """A JSON-RPC call; parameters left at None are not sent (the daemon's defaults apply)."""
    body: dict[str, Any] = {"jsonrpc": "2.0", "id": rid, "method": method}
    if params := {k: v for k, v in (params or {}).items() if v is not None}:
        body["params"] = params
    return body


def call(path: str, method: str, params: dict[str, Any] | None = None,
         timeout: float | None = None) -> Any:
    """One request on a connection of its own; the result as plain JSON values."""
    with connect(path, timeout) as sock:
        send(sock, path, json.dumps(request(1, method, params), separators=(",", ":")).encode())
        reader = LineReader(sock, path)
        while True:
            try:
                reply = json.loads(reader.line())
            except ValueError:
                raise ClientError(f"updaterd at {path} sent a reply that is not JSON") \
                    from None
            if reply.get("method") is not None or reply.get("id") != 1:
                continue  # a notification
            if reply.get("error") is not None:
                raise RemoteError.from_error(reply["error"])
            return reply.get("result")
