"""A blocking client of updaterd's control socket, for updaterctl and any local program.

    from updaterctl import Client
    with Client() as c:
        for app in c.status().apps:
            print(app.name, app.current, app.available)

No trio, no httpx: it costs one socket and msgspec.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from types import TracebackType
from typing import Any, TypeVar

import msgspec

from updaterctl import wire
from updaterctl.protocol import (
    DEFAULT_SOCKET,
    Backup,
    CancelResult,
    CheckResult,
    Event,
    HistoryItem,
    PruneResult,
    RollbackResult,
    StatusResult,
    UpdateResult,
)
from updaterctl.wire import ClientError, DaemonUnreachable, NotAllowedToConnect, RemoteError

__all__ = ["Client", "ClientError", "Connection", "DaemonUnreachable", "NotAllowedToConnect",
           "RemoteError"]

T = TypeVar("T")


class _Envelope(msgspec.Struct):
    """Any line from the daemon: a reply (id + result/error) or a notification (method)."""

    jsonrpc: str = "2.0"
    id: int | str | None = None
    result: msgspec.Raw = msgspec.field(default_factory=lambda: msgspec.Raw(b"null"))
    error: dict[str, Any] | None = None
    method: str | None = None
    params: msgspec.Raw = msgspec.field(default_factory=lambda: msgspec.Raw(b"null"))


class Connection:
    """One connection to the daemon; calls are answered in order."""

    def __init__(self, path: str = DEFAULT_SOCKET, timeout: float | None = None) -> None:
        self.path = path
        self.sock = wire.connect(path, timeout)
        self._lines = wire.LineReader(self.sock, path)
        self._ids = itertools.count(1)

    def close(self) -> None:
        self.sock.close()

    def send(self, method: str, params: dict[str, Any] | None = None) -> int:
        rid = next(self._ids)
        wire.send(self.sock, self.path, msgspec.json.encode(wire.request(rid, method, params)))
        return rid

    def read(self) -> _Envelope:
        """The next line from the daemon."""
        return msgspec.json.decode(self._lines.line(), type=_Envelope)

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
                raise RemoteError.from_error(env.error)
            return env.result

    def call(self, method: str, params: dict[str, Any] | None = None,
             type: type[T] = Any) -> T:  # type: ignore[assignment]
        raw = self.reply(self.send(method, params))
        return msgspec.json.decode(raw, type=type)


class Client:
    """The methods of updaterd(8) CONTROL SOCKET PROTOCOL as typed calls, over one connection."""

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

    def check(self, app: str, force: bool = False, fresh: bool = False) -> CheckResult:
        params: dict[str, object] = {"app": app, "force": force}
        if fresh:  # only when asked: a daemon from before it refuses the field
            params["fresh"] = True
        return self.call("check", params, CheckResult)

    def update(self, app: str, version: str | None = None) -> UpdateResult:
        return self.call("update", {"app": app, "version": version}, UpdateResult)

    def rollback(self, app: str, to: str | None = None,
                 with_data: bool = False) -> RollbackResult:
        params: dict[str, object] = {"app": app, "to": to}
        if with_data:  # only when asked: a daemon from before it refuses the field
            params["with_data"] = True
        return self.call("rollback", params, RollbackResult)

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

    def reset_failed(self, app: str | None = None) -> list[str]:
        """Clear the failure record (phase, counter, last error, backoff) of `app` or of every
        app; returns the apps cleared."""
        return self.call("reset_failed", {"app": app} if app else {}, list[str])

    def prune(self, app: str, keep: int | None = None, force: bool = False) -> PruneResult:
        """Remove kept releases beyond `keep` (default: the app's `retain`); never the current
        one, nor the rollback target unless `force`."""
        params: dict[str, object] = {"app": app, "force": force}
        if keep is not None:
            params["keep"] = keep
        return self.call("prune", params, PruneResult)

    def reload(self) -> None:
        self.call("reload")

    def metrics(self) -> str:
        return self.call("metrics", None, str)

    def subscribe(self, apps: list[str] | None = None,
                  subscribed: Callable[[], None] = lambda: None) -> Iterator[Event]:
        """Events until the caller stops iterating (a connection of its own); `subscribed`
        is called once the daemon took the subscription."""
        conn = Connection(self.path, None)
        try:
            conn.reply(conn.send("subscribe", {"apps": apps}))
            subscribed()
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
