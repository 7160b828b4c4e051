"""`[daemon] metrics_listen`: the metrics on plain HTTP `GET /metrics`, for a Prometheus to
scrape. Nothing else is served there, and nothing is changed through it.

HTTP is parsed by h11 (httpx's own HTTP/1.1 engine, already installed with it). Every peer is a
stranger: its request must arrive whole within a few seconds and a few KiB, connections are few
at once and fewer still from one address (J174: one peer never takes every slot), and one
answer closes the connection, so a slow or noisy client holds nothing for long.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable

import h11
import trio

from updaterd.host.config import parse_listen

log = logging.getLogger("updaterd.metrics")

MAX_REQUEST = 8 * 1024  # a scrape's request is a few hundred bytes
REQUEST_TIMEOUT = 5.0  # the whole request, from the connection on
SEND_TIMEOUT = 10.0
MAX_CONNECTIONS = 16
MAX_PER_PEER = 4  # from one address: a flood from one peer leaves 12 slots to the others
RETRY_BIND = 30  # seconds between tries when the address is taken
CONTENT_TYPE = b"text/plain; version=0.0.4; charset=utf-8"


async def serve(listen: str, render: Callable[[], str], *,
                task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
    """Serve `render()` at `GET /metrics` on `listen` until cancelled.

    The first bind is tried before `started()`: when the address is free, the daemon says it is
    ready (READY=1, the "ready" log line) only once a scrape can be answered. A taken address
    does not hold the start: updates go on and the bind is tried again every RETRY_BIND s.
    """
    host, port = parse_listen(listen)
    listeners = None
    while listeners is None:
        try:
            listeners = await trio.open_tcp_listeners(port, host=host)
        except OSError as e:
            log.error("metrics_listen %s: %s; the metrics are not served there (trying again "
                      "in %ds)", listen, e.strerror or e, RETRY_BIND)
            task_status.started()
            task_status = trio.TASK_STATUS_IGNORED
            await trio.sleep(RETRY_BIND)
    task_status.started()
    slots = trio.Semaphore(MAX_CONNECTIONS)
    per_peer: dict[str, int] = {}
    log.info("metrics on http://%s/metrics", listen)

    async def handle(stream: trio.SocketStream) -> None:
        peer = _peer(stream)
        # full, or this peer holds its share: closed at once instead of waiting
        if slots.value == 0 or per_peer.get(peer, 0) >= MAX_PER_PEER:
            await stream.aclose()
            return
        per_peer[peer] = per_peer.get(peer, 0) + 1
        try:
            async with slots, stream:
                with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError,
                                         h11.ProtocolError):
                    await _answer(stream, render)
        finally:
            per_peer[peer] -= 1
            if not per_peer[peer]:
                del per_peer[peer]

    await trio.serve_listeners(handle, listeners)


def _peer(stream: trio.SocketStream) -> str:
    """The address a connection comes from (its port left out: one peer, many ports)."""
    try:
        return str(stream.socket.getpeername()[0])
    except OSError:
        return ""


async def _answer(stream: trio.SocketStream, render: Callable[[], str]) -> None:
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_REQUEST)
    request: h11.Request | None = None
    received = 0
    with trio.move_on_after(REQUEST_TIMEOUT):
        while request is None:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                data = await stream.receive_some(MAX_REQUEST)
                received += len(data)
                if not data or received > MAX_REQUEST:  # the whole request within the cap
                    return
                conn.receive_data(data)
            elif isinstance(event, h11.Request):
                request = event
            else:
                return
    if request is None:
        return  # too slow: closed without a word
    if request.target.split(b"?", 1)[0] != b"/metrics":
        status, body, kind = 404, b"not found: only /metrics is served here\n", b"text/plain"
    elif request.method not in (b"GET", b"HEAD"):
        status, body, kind = 405, b"only GET /metrics\n", b"text/plain"
    else:
        status, body, kind = 200, render().encode(), CONTENT_TYPE
    headers = [(b"content-type", kind), (b"content-length", str(len(body)).encode()),
               (b"connection", b"close")]
    if status == 405:
        headers.append((b"allow", b"GET, HEAD"))
    out = conn.send(h11.Response(status_code=status, headers=headers)) or b""
    if request.method != b"HEAD":
        out += conn.send(h11.Data(data=body)) or b""
    out += conn.send(h11.EndOfMessage()) or b""
    with trio.move_on_after(SEND_TIMEOUT):
        await stream.send_all(out)
