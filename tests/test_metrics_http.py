"""The metrics listener (service/metrics_http.py) at its edges, in this process: a request of
exactly its cap and one past it, which answers carry `Allow`, and the 17th connection (and the
5th from one address) closed at once. Real TCP on 127.0.0.x; the daemon's own listener is in
tests/test_metrics_listen.py."""

from __future__ import annotations

import contextlib
import errno
import functools
from collections.abc import Awaitable, Callable

import h11
import pytest
import trio
import trio.testing

from tests.servers.nginx import free_port
from updaterd.service import metrics_http
from updaterd.service.metrics_http import MAX_CONNECTIONS, MAX_PER_PEER, MAX_REQUEST


def answer_to(request: bytes) -> bytes:
    """What `_answer` sends back for `request` (b"" when it closes without a word)."""

    async def go() -> bytes:
        client, server = trio.testing.memory_stream_pair()
        await client.send_all(request)
        await client.send_eof()
        async def serve_one() -> None:  # as the listener's handler does
            async with server:
                with contextlib.suppress(h11.ProtocolError):
                    await metrics_http._answer(server, lambda: "up 1\n")  # type: ignore

        async with trio.open_nursery() as nursery:
            nursery.start_soon(serve_one)
            got = b""
            with trio.move_on_after(10):
                while chunk := await client.receive_some(65536):
                    got += chunk
            nursery.cancel_scope.cancel()
        return got

    return trio.run(go)


def head_of(size: int, path: bytes = b"/metrics", method: bytes = b"GET") -> bytes:
    """A request head of exactly `size` bytes (its padding in one header)."""
    start = method + b" " + path + b" HTTP/1.1\r\nHost: x\r\nX-Pad: "
    end = b"\r\n\r\n"
    return start + b"a" * (size - len(start) - len(end)) + end


def test_a_request_of_exactly_the_cap_is_answered_and_a_longer_one_is_not() -> None:
    assert MAX_REQUEST == 8192
    assert answer_to(head_of(8192)).startswith(b"HTTP/1.1 200 ")
    assert answer_to(head_of(8193)) == b""
    assert answer_to(head_of(4 * 8192)) == b""


def test_only_a_405_carries_allow() -> None:
    ok = answer_to(head_of(100))
    not_found = answer_to(head_of(100, path=b"/other"))
    refused = answer_to(head_of(100, method=b"POST"))
    head = answer_to(head_of(100, method=b"HEAD"))
    assert ok.startswith(b"HTTP/1.1 200 ") and b"up 1\n" in ok
    assert not_found.startswith(b"HTTP/1.1 404 ") and b"allow:" not in not_found.lower()
    assert refused.startswith(b"HTTP/1.1 405 ") and b"allow: get, head\r\n" in refused.lower()
    assert b"allow:" not in ok.lower()
    assert head.startswith(b"HTTP/1.1 200 ") and head.endswith(b"\r\n\r\n")  # no body
    assert answer_to(b"") == b"" and answer_to(b"garbage\r\n\r\n") == b""
    assert answer_to(head_of(100, path=b"/metrics?x=1")).startswith(b"HTTP/1.1 200 ")
    assert answer_to(head_of(100, path=b"/a")).startswith(b"HTTP/1.1 404 ")  # sorts before


async def _connect(port: int, source: str) -> trio.socket.SocketType:
    sock = trio.socket.socket()
    await sock.bind((source, 0))
    await sock.connect(("127.0.0.1", port))
    return sock


async def _closed_at_once(sock: trio.socket.SocketType) -> bool:
    """Whether the listener closes `sock` within a second (a served one waits for its
    request for REQUEST_TIMEOUT, 5 s)."""
    with trio.move_on_after(1):
        try:
            return await sock.recv(1) == b""
        except ConnectionResetError:
            return True
    return False


def with_listener(body: Callable[[int], Awaitable[None]]) -> None:
    port = free_port()

    async def go() -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(functools.partial(metrics_http.serve, f"127.0.0.1:{port}",
                                                  lambda: "up 1\n"))
            await body(port)
            nursery.cancel_scope.cancel()

    trio.run(go)


def test_the_17th_connection_is_closed_at_once_and_the_5th_from_one_address() -> None:
    assert MAX_CONNECTIONS == 16 and MAX_PER_PEER == 4

    async def body(port: int) -> None:
        held = [await _connect(port, f"127.0.0.{2 + i // 4}") for i in range(16)]
        await trio.sleep(0.2)
        for s in held:
            assert not await _closed_at_once(s) if s is held[-1] else True
        seventeenth = await _connect(port, "127.0.0.9")
        assert await _closed_at_once(seventeenth)
        for s in held:
            s.close()
        await trio.sleep(0.2)
        same_peer = [await _connect(port, "127.0.0.10") for _ in range(5)]
        await trio.sleep(0.2)
        assert await _closed_at_once(same_peer[-1])
        assert not await _closed_at_once(same_peer[0])
        other = await _connect(port, "127.0.0.11")
        assert not await _closed_at_once(other)
        again = await _connect(port, "127.0.0.2")  # its four were closed: its slots are free
        assert not await _closed_at_once(again)
        for s in [*same_peer, other, seventeenth, again]:
            s.close()

    with_listener(body)


def _timed(job: Callable[[], Awaitable[None]]) -> float:
    """How long `job` takes on trio's clock that jumps ahead whenever everything waits."""
    clock = trio.testing.MockClock(autojump_threshold=0)

    async def go() -> float:
        await job()
        return trio.current_time()

    return trio.run(go, clock=clock)


def test_a_silent_client_is_let_go_after_5_s_and_one_that_never_reads_after_10_s() -> None:
    assert (metrics_http.REQUEST_TIMEOUT, metrics_http.SEND_TIMEOUT) == (5.0, 10.0)

    async def silent() -> None:
        _client, server = trio.testing.memory_stream_pair()
        await metrics_http._answer(server, lambda: "up 1\n")  # type: ignore[arg-type]

    assert _timed(silent) == 5.0

    async def never_reads() -> None:
        client, server = trio.testing.lockstep_stream_pair()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(client.send_all, head_of(100))
            await metrics_http._answer(server, lambda: "up 1\n" * 10)  # type: ignore[arg-type]

    assert _timed(never_reads) == 10.0


def test_a_taken_address_is_logged_and_tried_again_every_30_s(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO")
    tries: list[float] = []
    real = trio.open_tcp_listeners

    async def taken_twice(port: int, *, host: str | None = None) -> list[trio.SocketListener]:
        tries.append(trio.current_time())
        if len(tries) < 3:
            raise OSError(errno.EADDRINUSE, "Address already in use")
        return await real(0, host="127.0.0.1")

    monkeypatch.setattr(trio, "open_tcp_listeners", taken_twice)

    async def serve() -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(metrics_http.serve, "127.0.0.1:9", lambda: "up 1\n")
            while len(tries) < 3:
                await trio.sleep(1)
            await trio.sleep(1)
            nursery.cancel_scope.cancel()

    _timed(serve)
    assert tries == [0.0, 30.0, 60.0]
    assert caplog.messages.count("metrics_listen 127.0.0.1:9: Address already in use; the "
                                 "metrics are not served there (trying again in 30s)") == 2
    assert "metrics on http://127.0.0.1:9/metrics" in caplog.messages


def test_a_connection_whose_peer_cannot_be_named_counts_as_one_peer() -> None:
    class Gone:
        def getpeername(self) -> tuple[str, int]:
            raise OSError(errno.ENOTCONN, "Transport endpoint is not connected")

    stream = type("Stream", (), {"socket": Gone()})()
    assert metrics_http._peer(stream) == ""  # type: ignore[arg-type]
