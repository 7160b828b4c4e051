"""A blocking client of updaterd's control socket, for updaterctl and any local program.

    from updaterctl import Client
    with Client() as c:
        for app in c.status().apps:
            print(app.name, app.current, app.available)

No trio, no httpx: it costs one socket and msgspec.
"""

from __future__ import annotations

import itertools
import os
import socket
from collections.abc import Iterator
from types import TracebackType
from typing import Any, TypeVar

import msgspec

from updaterctl.protocol import (
    DEFAULT_SOCKET,
    MAX_MESSAGE,
    Backup,
    CancelResult,
    CheckResult,
    ErrorCode,
    Event,
    HistoryItem,
    RollbackResult,
    StatusResult,
    UpdateResult,
)

T = TypeVar("T")


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


class _Envelope(msgspec.Struct):
    """Any line from the daemon: a reply (id + result/error) or a notification (method)."""

    jsonrpc: str = "2.0"
    id: int | str | None = None
    result: msgspec.Raw = msgspec.field(default_factory=lambda: msgspec.Raw(b"null"))
    error: dict[str, Any] | None = None
    method: str | None = None
    params: msgspec.Raw = msgspec.field(default_factory=lambda: msgspec.Raw(b"null"))


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


class Connection:
    """One connection to the daemon; calls are answered in order."""

    def __init__(self, path: str = DEFAULT_SOCKET, timeout: float | None = None) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        try:
            self.sock.connect(path)
        except PermissionError:
            self.sock.close()
            raise NotAllowedToConnect(_who_may_connect(path)) from None
        except OSError as e:
            self.sock.close()
            raise DaemonUnreachable(f"cannot reach updaterd at {path}: "
                                    f"{e.strerror or e}") from None
        self._buffer = bytearray()
        self._ids = itertools.count(1)

    def close(self) -> None:
        self.sock.close()

    def send(self, method: str, params: dict[str, Any] | None = None) -> int:
        rid = next(self._ids)
        body: dict[str, Any] = {"jsonrpc": "2.0", "id": rid, "method": method}
        if params:
            body["params"] = {k: v for k, v in params.items() if v is not None}
        try:
            self.sock.sendall(msgspec.json.encode(body) + b"\n")
        except OSError as e:
            raise DaemonUnreachable(f"lost updaterd at {self.path}: {e}") from None
        return rid

    def read(self) -> _Envelope:
        """The next line from the daemon."""
        while (end := self._buffer.find(b"\n")) < 0:
            try:
                data = self.sock.recv(65536)
            except OSError as e:
                raise DaemonUnreachable(f"lost updaterd at {self.path}: {e}") from None
            if not data:
                raise DaemonUnreachable(f"updaterd at {self.path} closed the connection")
            self._buffer += data
            if len(self._buffer) > 4 * MAX_MESSAGE:
                raise ClientError("reply too large")
        line = bytes(self._buffer[:end])
        del self._buffer[: end + 1]
        return msgspec.json.decode(line, type=_Envelope)

    def reply(self, rid: int, events: list[Event] | None = None) -> msgspec.Raw:
        """Wait for the reply to `rid`; notifications met on the way go to `events`."""
        while True:
            env = self.read()
            if env.method == "event":
                if events is not None:
                    events.append(msgspec.json.decode(env.params, type=Event))
                continue
            if env.id != rid:
                continue
            if env.error is not None:
                raise RemoteError(int(env.error.get("code", 0)), str(env.error.get("message")),
                                  env.error.get("data"))
            return env.result

    def call(self, method: str, params: dict[str, Any] | None = None,
             type: type[T] = Any) -> T:  # type: ignore[assignment]
        raw = self.reply(self.send(method, params))
        return msgspec.json.decode(raw, type=type)


class Client:
    """The methods of SPEC section 7 as typed calls, over one connection."""

    def __init__(self, path: str = DEFAULT_SOCKET, timeout: float | None = None) -> None:
        self.path, self.timeout = path, timeout
        self.conn = Connection(path, timeout)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        self.conn.close()

    def call(self, method: str, params: dict[str, Any] | None = None,
             type: type[T] = Any) -> T:  # type: ignore[assignment]
        return self.conn.call(method, params, type)

    def status(self, app: str | None = None) -> StatusResult:
        return self.call("status", {"app": app}, StatusResult)

    def check(self, app: str, force: bool = False) -> CheckResult:
        return self.call("check", {"app": app, "force": force}, CheckResult)

    def update(self, app: str, version: str | None = None) -> UpdateResult:
        return self.call("update", {"app": app, "version": version}, UpdateResult)

    def rollback(self, app: str, to: str | None = None) -> RollbackResult:
        return self.call("rollback", {"app": app, "to": to}, RollbackResult)

    def list_backups(self, app: str) -> list[Backup]:
        return self.call("list_backups", {"app": app}, list[Backup])

    def history(self, app: str, limit: int | None = None) -> list[HistoryItem]:
        return self.call("history", {"app": app, "limit": limit}, list[HistoryItem])

    def skip(self, app: str, version: str) -> None:
        self.call("skip", {"app": app, "version": version})

    def unskip(self, app: str, version: str) -> None:
        self.call("unskip", {"app": app, "version": version})

    def pause(self, app: str) -> None:
        self.call("pause", {"app": app})

    def cancel(self, app: str) -> CancelResult:
        """Stop the app's check, download or wait for its window (never past the switch)."""
        return self.call("cancel", {"app": app}, CancelResult)

    def resume(self, app: str) -> None:
        self.call("resume", {"app": app})

    def reload(self) -> None:
        self.call("reload")

    def metrics(self) -> str:
        return self.call("metrics", None, str)

    def subscribe(self, apps: list[str] | None = None) -> Iterator[Event]:
        """Events until the caller stops iterating (a connection of its own)."""
        conn = Connection(self.path, None)
        try:
            conn.reply(conn.send("subscribe", {"apps": apps}))
            while True:
                env = conn.read()
                if env.method == "event":
                    yield msgspec.json.decode(env.params, type=Event)
        finally:
            conn.close()

    def inhibit(self, app: str, who: str, why: str) -> Connection:
        """Hold an inhibitor until the returned connection is closed."""
        conn = Connection(self.path, self.timeout)
        try:
            conn.reply(conn.send("inhibit", {"app": app, "who": who, "why": why}))
        except BaseException:
            conn.close()
            raise
        return conn
