"""The control socket: JSON-RPC 2.0 over a Unix stream socket, one message per line.

This module is the socket's trio edge: the socket itself, who is on the other end
(SO_PEERCRED, SO_PEERGROUPS), the limits on clients and time, and the handlers run; the
framing and the JSON-RPC rules are `jsonrpc.py`'s (no I/O), what the methods do is `api.py`'s.
A malformed, oversized, slow or flooding client gets an error or is dropped; the daemon and
its other clients carry on.
"""

from __future__ import annotations

import contextlib
import errno
import grp
import logging
import os
import socket
import stat
import struct
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio

from updaterctl.protocol import ErrorCode
from updaterd import fsutil
from updaterd.errors import UpdaterError
from updaterd.host.config import Limits as ConfigLimits
from updaterd.service import jsonrpc
from updaterd.service.jsonrpc import RpcError
from updaterd.units import parse_duration

log = logging.getLogger("updaterd.rpc")


@dataclass(frozen=True)
class Peer:
    """Who is on the other end, as the kernel says (never as the client says)."""

    pid: int
    uid: int
    gid: int
    admin: bool
    groups: tuple[int, ...] = ()  # the process's own supplementary groups (SO_PEERGROUPS)


@dataclass(frozen=True)
class Limits:
    """Bounds on clients (from the `[limits]` table)."""

    max_clients: int
    max_clients_per_uid: int
    idle_timeout: float  # no complete request for this long: dropped
    line_timeout: float  # a started line must be finished within this
    send_timeout: float = 10.0  # a reply or event the client does not take: dropped (H154)
    max_streams_per_client: dict[str, int] = field(default_factory=dict)  # subscribe, inhibit
    max_streams: dict[str, int] = field(default_factory=dict)

    @classmethod
    def from_config(cls, limits: ConfigLimits) -> Limits:
        return cls(limits.max_clients, limits.max_clients_per_uid,
                   parse_duration(limits.client_idle_timeout),
                   parse_duration(limits.client_line_timeout),
                   parse_duration(limits.client_send_timeout),
                   {"subscribe": limits.max_subscriptions_per_client,
                    "inhibit": limits.max_inhibitors_per_client},
                   {"subscribe": limits.max_subscriptions, "inhibit": limits.max_inhibitors})


class Connection:
    """One client: its identity and a lock so that replies and events never interleave."""

    def __init__(self, stream: trio.abc.Stream, peer: Peer,
                 totals: dict[str, int] | None = None, send_timeout: float = 10.0) -> None:
        self.stream = stream
        self.send_timeout = send_timeout
        self.peer = peer
        self.totals = totals if totals is not None else {}  # the server's, for every client
        self.send_lock = trio.Lock()
        self.streaming = False  # set by subscribe/inhibit: then the connection stays open
        self.nursery: trio.Nursery  # tasks that live as long as the connection (set by Server)
        self.streams: dict[str, int] = {}  # method -> how many this connection holds

    async def send(self, payload: bytes) -> None:
        """Send one line; a client that does not take it within `send_timeout` is dropped
        (its connection closed, its slots freed: H154), so it can hold nothing for ever."""
        async with self.send_lock:
            with trio.move_on_after(self.send_timeout) as scope:
                await self.stream.send_all(payload + b"\n")
            if scope.cancelled_caught:
                log.info("dropping client pid %d uid %d: it took no reply for %.0fs",
                         self.peer.pid, self.peer.uid, self.send_timeout)
                await self.stream.aclose()
                raise trio.ClosedResourceError("the client does not read its replies")

    @contextlib.contextmanager
    def holding(self, method: str) -> Iterator[None]:
        """Count one subscription or inhibitor, here and server-wide, while it lives."""
        for counts in (self.streams, self.totals):
            counts[method] = counts.get(method, 0) + 1
        try:
            yield
        finally:
            for counts in (self.streams, self.totals):
                counts[method] -= 1


# A handler gets the typed params and the connection, and returns a msgspec-encodable result.
Handler = Callable[[Any, Connection], Awaitable[Any]]


def peer_credentials(sock: trio.socket.SocketType) -> tuple[int, int, int]:
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, uid, gid = struct.unpack("3i", raw)
    return pid, uid, gid


SO_PEERGROUPS = getattr(socket, "SO_PEERGROUPS", 59)  # Linux 4.13+


# Python's getsockopt reads at most 1024 bytes: 256 groups. A peer in more groups than that
# counts by its primary group only (it fails closed: never admin by a group it cannot show).
_MAX_GROUPS_BYTES = 1024


def peer_groups(sock: trio.socket.SocketType) -> tuple[int, ...]:
    """The supplementary groups the connecting process had when it connected: what the
    kernel says, not what the user database says (G137)."""
    size = 64 * 4
    while True:
        try:
            raw = sock.getsockopt(socket.SOL_SOCKET, SO_PEERGROUPS, size)
        except OSError as e:
            if e.errno == errno.ERANGE and size < _MAX_GROUPS_BYTES:
                size = _MAX_GROUPS_BYTES
                continue
            return ()
        return struct.unpack(f"{len(raw) // 4}I", raw[: len(raw) // 4 * 4])


def is_admin(uid: int, gid: int, groups: tuple[int, ...], group_name: str) -> bool:
    """Root, or a process whose own primary or supplementary groups hold `group_name`.

    The process's groups, not /etc/group: a process that dropped the group is not admin, and
    one that was given it (systemd's SupplementaryGroups=, setpriv) is."""
    if uid == 0:
        return True
    try:
        wanted = grp.getgrnam(group_name).gr_gid
    except KeyError:
        return False
    return gid == wanted or wanted in groups


def set_socket_access(path: Path, mode: int, group: str) -> None:
    """The socket's group (the admin group, when it exists) and mode: who may connect."""
    try:
        gid = grp.getgrnam(group).gr_gid
    except KeyError:
        log.warning("admin group %r does not exist; only root may change things", group)
        gid = -1
    if gid != -1:
        os.chown(path, -1, gid)
    os.chmod(path, mode)


def create_socket(path: Path, mode: int, group: str) -> trio.socket.SocketType:
    """Bind the control socket safely: private until chmod, stale files replaced only if ours."""
    parent = path.parent
    parent.mkdir(parents=True, exist_ok=True, mode=0o755)
    pst = os.stat(parent)
    if pst.st_mode & stat.S_IWOTH:
        raise UpdaterError(f"{parent} is world-writable; refusing to put the socket there")
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        st = None
    if st is not None:
        if not stat.S_ISSOCK(st.st_mode):
            raise UpdaterError(f"{path} exists and is not a socket; refusing to replace it")
        if st.st_uid != os.getuid():
            raise UpdaterError(f"{path} belongs to uid {st.st_uid}; refusing to replace it")
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(str(path))
        except OSError:
            os.unlink(path)  # stale: nobody listens
        else:
            raise UpdaterError(f"another process is listening on {path}")
        finally:
            probe.close()
    # Bound under a temp name, made ready, then renamed into place: the path never exists
    # without a listener behind it, and never with wider permissions than socket_mode.
    tmp = fsutil.temp_name(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o177)
    dir_fd = os.open(parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        # The temp name is longer than the path: near sun_path's 108 bytes, bind through the
        # folder's descriptor (/proc/self/fd/N/NAME, resolved by the kernel) instead.
        short = f"/proc/self/fd/{dir_fd}/{tmp.name}"
        too_long = len(str(tmp).encode()) > 107 and os.path.isdir(f"/proc/self/fd/{dir_fd}")
        sock.bind(short if too_long else str(tmp))
    finally:
        os.close(dir_fd)
        os.umask(old)
    set_socket_access(tmp, mode, group)
    sock.listen(socket.SOMAXCONN)  # a burst of clients waits for accept, never refused
    os.replace(tmp, path)
    return trio.socket.from_stdlib_socket(sock)


class Server:
    """The trio edge of the control socket: accepts clients, moves their bytes through
    `jsonrpc` and runs the handlers it admits, within the limits on clients and time."""

    def __init__(self, handlers: dict[str, Handler], admin_group: Callable[[], str],
                 limits: Limits) -> None:
        self.handlers = handlers
        self.admin_group = admin_group
        self.limits = limits
        self.clients: dict[int, int] = {}  # uid -> open connections
        self.total = 0
        self.streams: dict[str, int] = {}  # subscribe/inhibit -> how many are held in all

    async def serve(self, sock: trio.socket.SocketType, *,
                    task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED) -> None:
        """Serve clients until cancelled (trio's accept loop: a lack of descriptors or memory
        pauses it briefly, it never ends it)."""
        await trio.serve_listeners(self._client, [trio.SocketListener(sock)],
                                   task_status=task_status)

    async def _client(self, stream: trio.SocketStream) -> None:
        """Who the kernel says the client is, then its session (serve_listeners closes the
        stream of a client that leaves earlier)."""
        try:
            pid, uid, gid = peer_credentials(stream.socket)
            groups = peer_groups(stream.socket)
        except OSError:
            return
        peer = Peer(pid, uid, gid, is_admin(uid, gid, groups, self.admin_group()), groups)
        await self.session(stream, peer)

    async def session(self, stream: trio.abc.Stream, peer: Peer) -> None:
        """One client on any stream: admitted within the limits on clients, served until it
        hangs up, goes silent or misbehaves; its stream is closed when it ends."""
        async with stream:
            await self._serve(stream, peer)

    async def _serve(self, stream: trio.abc.Stream, peer: Peer) -> None:
        if peer.uid != 0 and (self.total >= self.limits.max_clients
                              or self.clients.get(peer.uid, 0) >= self.limits.max_clients_per_uid):
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                await stream.send_all(jsonrpc.TOO_MANY_CLIENTS + b"\n")
            return
        self.total += 1
        self.clients[peer.uid] = self.clients.get(peer.uid, 0) + 1
        try:
            async with trio.open_nursery() as nursery:
                conn = Connection(stream, peer, self.streams, self.limits.send_timeout)
                conn.nursery = nursery
                await self._read_loop(conn)
                nursery.cancel_scope.cancel()
        except* (trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # the client went away; nothing to answer
        except* Exception:
            # One client's trouble must never take the server down with it.
            log.exception("client pid %d uid %d: unexpected error; connection dropped",
                          peer.pid, peer.uid)
        finally:
            self.total -= 1
            self.clients[peer.uid] -= 1

    async def _read_loop(self, conn: Connection) -> None:
        lines = jsonrpc.Lines()
        while True:
            timeout = self.limits.line_timeout if lines.started else self.limits.idle_timeout
            if conn.streaming and not lines.started:
                timeout = float("inf")
            with trio.move_on_after(timeout) as scope:
                data = await conn.stream.receive_some(65536)
            if scope.cancelled_caught:
                log.debug("dropping a client silent for %.0fs", timeout)
                return
            if not data:
                return
            lines.feed(data)
            try:
                while (line := lines.next_line()) is not None:
                    reply = await self.handle_line(line, conn)
                    if reply is not None:
                        await conn.send(reply)
            except jsonrpc.MessageTooLarge:
                await conn.send(jsonrpc.TOO_LARGE)
                return

    async def handle_line(self, line: bytes, conn: Connection) -> bytes | None:
        """The reply to one line (None when it held only notifications)."""
        message = jsonrpc.parse(line)
        if isinstance(message, bytes):
            return message
        answers = [item if isinstance(item, bytes) else await self._run(item, conn)
                   for item in message.items]
        return jsonrpc.answer(message, answers)

    async def _run(self, call: jsonrpc.Call, conn: Connection) -> bytes | None:
        try:
            jsonrpc.admit(call, admin=conn.peer.admin, admin_group=self.admin_group(),
                          served=self.handlers)
            if call.method in jsonrpc.STREAMS:
                self._require_stream_room(call.method, conn)
            result = await self.handlers[call.method](jsonrpc.params_of(call), conn)
        except RpcError as e:
            return jsonrpc.refusal(call, e)
        except Exception:
            log.exception("internal error in %s", call.method)
            return jsonrpc.refusal(call, None)
        return jsonrpc.reply(call, result)

    def _require_stream_room(self, method: str, conn: Connection) -> None:
        """subscribe and inhibit hold a task and a buffer until the client hangs up: capped
        per connection and in all (G136), so a flood costs the daemon a bounded amount."""
        mine = conn.streams.get(method, 0)
        per_client = self.limits.max_streams_per_client.get(method)
        if per_client is not None and mine >= per_client:
            raise RpcError(ErrorCode.BUSY, f"{method}: this connection already holds "
                                           f"{mine}, the most one connection may")
        total = self.streams.get(method, 0)
        overall = self.limits.max_streams.get(method)
        if overall is not None and total >= overall and conn.peer.uid != 0:
            raise RpcError(ErrorCode.BUSY, f"{method}: the daemon already serves {total}, "
                                           "the most it takes; try again later")
