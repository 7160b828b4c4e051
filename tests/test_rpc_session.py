"""The control socket's rules in this process: the framing and JSON-RPC rules of
service/jsonrpc.py as plain functions (bytes in, calls and replies out), and the limits and
timeouts of service/rpc.py's sessions over trio's memory streams under a mock clock (as trio
tests serve_listeners), so an hour of silence takes no time. The real socket, its owner and the
peer's credentials are in tests/test_rpc.py and tests/security/test_socket_rows.py."""

from __future__ import annotations

import json
from typing import Any

import msgspec
import pytest
import trio
import trio.testing

from updaterctl.protocol import MAX_MESSAGE
from updaterd.service import jsonrpc
from updaterd.service.jsonrpc import Call, Lines, Message, RpcError
from updaterd.service.rpc import Connection, Limits, Peer, Server

# -- framing ------------------------------------------------------------------------------------


def lines_of(*chunks: bytes) -> list[bytes]:
    framer, out = Lines(), []
    for chunk in chunks:
        framer.feed(chunk)
        while (line := framer.next_line()) is not None:
            out.append(line)
    return out


def test_lines_are_framed_whatever_the_chunks() -> None:
    assert lines_of(b'{"a":1}\n{"b"', b':2}\n', b"\n  \n{") == [b'{"a":1}', b'{"b":2}']
    assert lines_of(b"x", b"y", b"\n") == [b"xy"]
    assert lines_of(b"\n\nfirst\n") == [b"first"], "a blank line first is passed over"


def test_a_line_begun_is_started_until_it_ends() -> None:
    framer = Lines()
    assert not framer.started
    framer.feed(b'{"a"')
    assert framer.next_line() is None and framer.started
    framer.feed(b":1}\n")
    assert framer.next_line() == b'{"a":1}' and not framer.started


@pytest.mark.parametrize("size,ended", [(MAX_MESSAGE, True), (MAX_MESSAGE, False)])
def test_a_line_of_the_largest_size_is_taken(size: int, ended: bool) -> None:
    framer = Lines()
    framer.feed(b"x" * size + (b"\n" if ended else b""))
    assert framer.next_line() == (b"x" * size if ended else None)


@pytest.mark.parametrize("ended", [True, False])
def test_a_line_one_byte_over_is_too_large_ended_or_not(ended: bool) -> None:
    framer = Lines()
    framer.feed(b"x" * (MAX_MESSAGE + 1) + (b"\n" if ended else b""))
    with pytest.raises(jsonrpc.MessageTooLarge):
        framer.next_line()


def test_the_lines_before_a_too_large_one_are_still_given() -> None:
    framer = Lines()
    framer.feed(b"first\n" + b"x" * (MAX_MESSAGE + 1) + b"\n")
    assert framer.next_line() == b"first"
    with pytest.raises(jsonrpc.MessageTooLarge):
        framer.next_line()


# -- the JSON-RPC rules ---------------------------------------------------------------------------


def decoded(reply: bytes | None) -> Any:
    return None if reply is None else json.loads(reply)


def test_calls_and_messages_are_values() -> None:
    import dataclasses

    with pytest.raises(dataclasses.FrozenInstanceError):
        call("status").method = "update"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        Message([], batch=False).batch = True  # type: ignore[misc]


def test_a_request_becomes_a_call() -> None:
    message = jsonrpc.parse(b'{"jsonrpc":"2.0","id":7,"method":"status","params":{"app":"a"}}')
    assert message == Message([Call("status", {"app": "a"}, 7, False, False)], batch=False)
    note = jsonrpc.parse(b'{"jsonrpc":"2.0","method":"status"}')
    assert isinstance(note, Message) and isinstance(note.items[0], Call)
    assert note.items[0].notification and note.items[0].id is None


@pytest.mark.parametrize("line,code,text", [
    (b"{", -32700, "parse error: not valid JSON"),
    (b"[" * 100_000, None, None),  # too deep: a parse error or an invalid request, never a raise
    (b"[]", -32600, "empty batch"),
    (b"[" + b",".join([b"1"] * 101) + b"]", -32600, "batch larger than 100 requests"),
])
def test_a_line_that_is_no_message_gets_one_answer(line: bytes, code: int | None,
                                                   text: str | None) -> None:
    answer = jsonrpc.parse(line)
    if isinstance(answer, Message):  # the deep one may decode as a one-item batch
        assert all(isinstance(i, bytes) for i in answer.items)
        return
    got = decoded(answer)
    assert got["id"] is None and (code is None or got["error"] == {"code": code,
                                                                   "message": text})


def test_a_batch_of_exactly_the_most_requests_is_taken() -> None:
    line = b"[" + b",".join([b'{"jsonrpc":"2.0","method":"status"}'] * 100) + b"]"
    message = jsonrpc.parse(line)
    assert isinstance(message, Message) and message.batch and len(message.items) == 100
    assert all(isinstance(c, Call) and c.batched for c in message.items)


@pytest.mark.parametrize("item,why", [
    (b"5", "invalid request: "),
    (b'{"jsonrpc":"1.0","id":1,"method":"status"}', 'jsonrpc must be "2.0"'),
    (b'{"jsonrpc":"2.0","id":true,"method":"status"}', "got `bool` - at `$.id`"),
    (b'{"jsonrpc":"2.0","id":false,"method":"status"}', "got `bool` - at `$.id`"),
    (b'{"jsonrpc":"2.0","id":1.5,"method":"status"}', "at `$.id`"),
    (b'{"jsonrpc":"2.0","id":1.0,"method":"status"}', "got `float`"),  # never coerced
    (b'{"jsonrpc":"3.0","id":1,"method":"status"}', 'jsonrpc must be "2.0"'),
    (b'{"jsonrpc":"2.0","id":1,"method":"status","extra":1}', "invalid request: "),
])
def test_an_item_that_is_no_request_is_answered_with_a_null_id(item: bytes, why: str) -> None:
    message = jsonrpc.parse(item)
    assert isinstance(message, Message) and isinstance(message.items[0], bytes)
    got = decoded(message.items[0])
    assert got["id"] is None and got["error"]["code"] == -32600
    assert why in got["error"]["message"]


def call(method: str, *, batched: bool = False, params: Any = msgspec.UNSET,
         notification: bool = False) -> Call:
    return Call(method, params, None if notification else 1, notification, batched)


def refused(c: Call, **kw: Any) -> RpcError:
    with pytest.raises(RpcError) as e:
        jsonrpc.admit(c, **{"admin": True, "admin_group": "adm", "served": {"status", "update",
                                                                               "subscribe"},
                            **kw})
    return e.value


def test_admission_in_order_method_then_right_then_stream() -> None:
    assert refused(call("nope")).code == -32601
    assert refused(call("check")).message == "method not found: check"  # no handler here
    assert refused(call("update"), admin=False).message == \
        "update needs root or the admin group 'adm'"
    assert refused(call("nope"), admin=False).code == -32601  # not found comes first
    assert refused(call("subscribe", batched=True)).message == "subscribe cannot be batched"
    for c in (call("status"), call("subscribe"), call("update"), call("status", batched=True)):
        jsonrpc.admit(c, admin=True, admin_group="adm", served={"status", "update",
                                                                "subscribe"})
    jsonrpc.admit(call("status"), admin=False, admin_group="adm", served={"status"})
    jsonrpc.admit(call("subscribe"), admin=False, admin_group="adm", served={"subscribe"})


def test_a_method_served_but_not_in_the_protocol_is_not_found() -> None:
    with pytest.raises(RpcError, match="method not found: debug"):
        jsonrpc.admit(call("debug"), admin=True, admin_group="adm", served={"debug"})


def test_params_are_typed_never_coerced() -> None:
    assert jsonrpc.params_of(call("status", params={"app": "a"})).app == "a"
    assert jsonrpc.params_of(call("status")).app is None
    with pytest.raises(RpcError, match="params must be an object") as e:
        jsonrpc.params_of(call("status", params=["a"]))
    assert e.value.code == -32602
    with pytest.raises(RpcError, match="invalid params: ") as e:
        jsonrpc.params_of(call("history", params={"app": "a", "limit": "3"}))
    assert e.value.code == -32602


def test_replies_refusals_and_the_answer_of_a_line() -> None:
    c = call("status")
    assert decoded(jsonrpc.reply(c, {"x": 1})) == {"jsonrpc": "2.0", "id": 1, "result": {"x": 1}}
    assert decoded(jsonrpc.refusal(c, RpcError(4, "no", {"d": 1}))) == \
        {"jsonrpc": "2.0", "id": 1, "error": {"code": 4, "message": "no", "data": {"d": 1}}}
    assert decoded(jsonrpc.refusal(c, None))["error"] == {"code": -32603,
                                                          "message": "internal error"}
    quiet = call("status", notification=True)
    assert jsonrpc.reply(quiet, 1) is None and jsonrpc.refusal(quiet, None) is None
    single = Message([c], batch=False)
    assert jsonrpc.answer(single, [b"1"]) == b"1" and jsonrpc.answer(single, [None]) is None
    batch = Message([c, c, c], batch=True)
    assert jsonrpc.answer(batch, [b"1", None, b"3"]) == b"[1,3]"
    assert jsonrpc.answer(batch, [None, None, None]) is None


# -- sessions: limits and time, over memory streams with a mock clock ---------------------------

LIMITS = Limits(max_clients=3, max_clients_per_uid=2, idle_timeout=60, line_timeout=5,
                send_timeout=10, max_streams_per_client={"subscribe": 1},
                max_streams={"subscribe": 2})
ROOT, USER = Peer(1, 0, 0, True), Peer(2, 1000, 1000, False)


async def status(p: Any, conn: Connection) -> str:
    return "ok"


async def subscribe(p: Any, conn: Connection) -> str:
    async def hold(task_status: trio.TaskStatus[None]) -> None:
        with conn.holding("subscribe"):
            task_status.started()
            await trio.sleep_forever()

    conn.streaming = True
    await conn.nursery.start(hold)
    return "subscribed"


def server() -> Server:
    return Server({"status": status, "subscribe": subscribe}, lambda: "adm", LIMITS)


REQUEST = b'{"jsonrpc":"2.0","id":1,"method":"status"}\n'


def run(test: Any) -> None:
    trio.run(test, clock=trio.testing.MockClock(autojump_threshold=0))


async def receive_line(stream: trio.abc.Stream) -> Any:
    data = b""
    while not data.endswith(b"\n"):
        chunk = await stream.receive_some()
        if not chunk:
            return None  # closed
        data += chunk
    return json.loads(data)


async def closed(stream: trio.abc.Stream) -> bool:
    return await stream.receive_some() == b""


def test_a_silent_client_is_dropped_at_the_idle_timeout_not_before() -> None:
    async def test() -> None:
        srv = server()
        client, end = trio.testing.memory_stream_pair()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(srv.session, end, USER)
            await trio.sleep(59.9)
            await client.send_all(REQUEST)
            assert (await receive_line(client))["result"] == "ok"
            start = trio.current_time()
            assert await closed(client)
            assert trio.current_time() - start == pytest.approx(60)
        assert srv.total == 0 and srv.clients == {1000: 0}

    run(test)


def test_a_line_begun_must_end_within_the_line_timeout() -> None:
    async def test() -> None:
        client, end = trio.testing.memory_stream_pair()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(server().session, end, USER)
            await client.send_all(b'{"jsonrpc":"2.0","id":1,"meth')
            start = trio.current_time()
            assert await closed(client)
            assert trio.current_time() - start == pytest.approx(5)

    run(test)


def test_a_subscriber_is_never_idle_but_a_line_it_begins_must_end() -> None:
    async def test() -> None:
        client, end = trio.testing.memory_stream_pair()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(server().session, end, USER)
            await client.send_all(b'{"jsonrpc":"2.0","id":1,"method":"subscribe"}\n')
            assert (await receive_line(client))["result"] == "subscribed"
            await trio.sleep(3600)
            await client.send_all(REQUEST)
            assert (await receive_line(client))["result"] == "ok", "served after an hour"
            await client.send_all(b"{")
            start = trio.current_time()
            assert await closed(client)
            assert trio.current_time() - start == pytest.approx(5)

    run(test)


def test_a_client_that_does_not_take_its_reply_is_dropped_at_the_send_timeout() -> None:
    async def test() -> None:
        srv = server()
        client, end = trio.testing.lockstep_stream_pair()  # a send waits for the reader
        async with trio.open_nursery() as nursery:
            nursery.start_soon(srv.session, end, USER)
            await client.send_all(REQUEST)
            start = trio.current_time()
            while srv.total:  # the client reads nothing: its session ends by itself
                await trio.sleep(0.5)
            assert trio.current_time() - start == pytest.approx(10, abs=0.6)

    run(test)


def test_a_message_too_large_is_answered_then_the_client_dropped() -> None:
    async def test() -> None:
        client, end = trio.testing.memory_stream_pair()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(server().session, end, USER)
            await client.send_all(REQUEST + b"x" * (MAX_MESSAGE + 1))
            assert (await receive_line(client))["result"] == "ok"
            reply = await receive_line(client)
            assert reply["error"] == {"code": -32600, "message": "message larger than 1 MiB"}
            assert await closed(client)

    run(test)


def test_clients_are_capped_per_user_and_in_all_but_root_is_always_let_in() -> None:
    async def test() -> None:
        srv = server()
        async with trio.open_nursery() as nursery:
            clients = []
            for peer in (USER, USER, Peer(3, 1001, 1001, False)):
                client, end = trio.testing.memory_stream_pair()
                nursery.start_soon(srv.session, end, peer)
                clients.append(client)
            await trio.testing.wait_all_tasks_blocked()
            assert srv.total == 3 and srv.clients == {1000: 2, 1001: 1}
            for peer in (USER, Peer(4, 1002, 1002, False)):  # a third for 1000; a 4th in all
                client, end = trio.testing.memory_stream_pair()
                nursery.start_soon(srv.session, end, peer)
                busy = await receive_line(client)
                assert busy["error"] == {"code": 2, "message": "too many clients"}, peer
                assert await closed(client)
            client, end = trio.testing.memory_stream_pair()
            nursery.start_soon(srv.session, end, ROOT)
            await client.send_all(REQUEST)
            assert (await receive_line(client))["result"] == "ok"
            nursery.cancel_scope.cancel()
        assert srv.total == 0

    run(test)


def test_streams_are_capped_per_connection_and_in_all() -> None:
    async def test() -> None:
        srv = server()
        line = b'{"jsonrpc":"2.0","id":1,"method":"subscribe"}\n'
        async with trio.open_nursery() as nursery:
            first, end = trio.testing.memory_stream_pair()
            nursery.start_soon(srv.session, end, USER)
            await first.send_all(line)
            assert (await receive_line(first))["result"] == "subscribed"
            await first.send_all(line)
            assert "this connection already holds 1" in \
                (await receive_line(first))["error"]["message"]
            second, end = trio.testing.memory_stream_pair()
            nursery.start_soon(srv.session, end, Peer(3, 1001, 1001, False))
            await second.send_all(line)
            assert (await receive_line(second))["result"] == "subscribed"
            third, end = trio.testing.memory_stream_pair()
            nursery.start_soon(srv.session, end, Peer(4, 1002, 1002, False))
            await third.send_all(line)
            assert "the daemon already serves 2" in \
                (await receive_line(third))["error"]["message"]
            root, end = trio.testing.memory_stream_pair()
            nursery.start_soon(srv.session, end, ROOT)
            await root.send_all(line)
            assert (await receive_line(root))["result"] == "subscribed", "root past the cap"
            assert srv.streams == {"subscribe": 3}
            await first.aclose()
            await trio.testing.wait_all_tasks_blocked()
            assert srv.streams == {"subscribe": 2}, "a hang-up frees its slot"
            nursery.cancel_scope.cancel()

    run(test)


def test_a_handler_that_fails_costs_its_client_one_error_and_nothing_more() -> None:
    async def boom(p: Any, conn: Connection) -> None:
        raise RuntimeError("secret detail")

    async def test() -> None:
        srv = Server({"status": status, "metrics": boom}, lambda: "adm", LIMITS)
        client, end = trio.testing.memory_stream_pair()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(srv.session, end, USER)
            await client.send_all(b'{"jsonrpc":"2.0","id":2,"method":"metrics"}\n' + REQUEST)
            assert (await receive_line(client))["error"] == {"code": -32603,
                                                             "message": "internal error"}
            assert (await receive_line(client))["result"] == "ok"
            nursery.cancel_scope.cancel()

    run(test)


def test_the_cap_per_user_holds_while_the_daemon_has_room() -> None:
    async def test() -> None:
        srv = Server({"status": status}, lambda: "adm",
                     Limits(max_clients=50, max_clients_per_uid=2, idle_timeout=60,
                            line_timeout=5))
        async with trio.open_nursery() as nursery:
            for _ in range(2):
                _, end = trio.testing.memory_stream_pair()
                nursery.start_soon(srv.session, end, USER)
            await trio.testing.wait_all_tasks_blocked()
            client, end = trio.testing.memory_stream_pair()
            nursery.start_soon(srv.session, end, USER)
            assert (await receive_line(client))["error"]["message"] == "too many clients"
            other, end = trio.testing.memory_stream_pair()  # another user still gets in
            nursery.start_soon(srv.session, end, Peer(3, 1001, 1001, False))
            await other.send_all(REQUEST)
            assert (await receive_line(other))["result"] == "ok"
            nursery.cancel_scope.cancel()

    run(test)


def test_streams_past_the_cap_by_root_keep_users_out() -> None:
    async def test() -> None:
        srv = Server({"subscribe": subscribe}, lambda: "adm",
                     Limits(max_clients=50, max_clients_per_uid=5, idle_timeout=60,
                            line_timeout=5, max_streams={"subscribe": 2}))
        line = b'{"jsonrpc":"2.0","id":1,"method":"subscribe"}\n'
        async with trio.open_nursery() as nursery:
            for _ in range(3):  # root is let in past the cap of 2: 3 held
                root, end = trio.testing.memory_stream_pair()
                nursery.start_soon(srv.session, end, ROOT)
                await root.send_all(line)
                assert (await receive_line(root))["result"] == "subscribed"
            user, end = trio.testing.memory_stream_pair()
            nursery.start_soon(srv.session, end, USER)
            await user.send_all(line)
            assert "the daemon already serves 3" in (await receive_line(user))["error"]["message"]
            nursery.cancel_scope.cancel()

    run(test)


def test_caps_of_one_let_the_first_in() -> None:
    async def test() -> None:
        srv = Server({"status": status, "subscribe": subscribe}, lambda: "adm",
                     Limits(max_clients=1, max_clients_per_uid=1, idle_timeout=60,
                            line_timeout=5, max_streams={"subscribe": 1}))
        async with trio.open_nursery() as nursery:
            first, end = trio.testing.memory_stream_pair()
            nursery.start_soon(srv.session, end, USER)
            await first.send_all(b'{"jsonrpc":"2.0","id":1,"method":"subscribe"}\n')
            assert (await receive_line(first))["result"] == "subscribed"
            second, end = trio.testing.memory_stream_pair()
            nursery.start_soon(srv.session, end, Peer(3, 1001, 1001, False))
            assert (await receive_line(second))["error"]["message"] == "too many clients"
            nursery.cancel_scope.cancel()

    run(test)


def test_clients_let_in_past_the_cap_by_root_keep_users_out() -> None:
    async def test() -> None:
        srv = Server({"status": status}, lambda: "adm",
                     Limits(max_clients=2, max_clients_per_uid=5, idle_timeout=60,
                            line_timeout=5))
        async with trio.open_nursery() as nursery:
            for _ in range(3):  # root always gets in: 3 open, the cap is 2
                _, end = trio.testing.memory_stream_pair()
                nursery.start_soon(srv.session, end, ROOT)
            await trio.testing.wait_all_tasks_blocked()
            user, end = trio.testing.memory_stream_pair()
            nursery.start_soon(srv.session, end, USER)
            assert (await receive_line(user))["error"]["message"] == "too many clients"
            nursery.cancel_scope.cancel()

    run(test)


def test_caps_lowered_while_clients_are_in_hold_for_the_next_one() -> None:
    """A reload that lowers a cap below what is open: the next client or stream is refused
    (what is open stays)."""
    import dataclasses

    async def test() -> None:
        srv = Server({"status": status, "subscribe": subscribe}, lambda: "adm",
                     Limits(max_clients=50, max_clients_per_uid=3, idle_timeout=60,
                            line_timeout=5, max_streams_per_client={"subscribe": 2}))
        line = b'{"jsonrpc":"2.0","id":1,"method":"subscribe"}\n'
        async with trio.open_nursery() as nursery:
            held, end = trio.testing.memory_stream_pair()
            nursery.start_soon(srv.session, end, USER)
            for _ in range(2):
                await held.send_all(line)
                assert (await receive_line(held))["result"] == "subscribed"
            for _ in range(2):
                _, end = trio.testing.memory_stream_pair()
                nursery.start_soon(srv.session, end, USER)
            await trio.testing.wait_all_tasks_blocked()
            srv.limits = dataclasses.replace(srv.limits, max_clients_per_uid=2,
                                             max_streams_per_client={"subscribe": 1})
            late, end = trio.testing.memory_stream_pair()
            nursery.start_soon(srv.session, end, USER)
            assert (await receive_line(late))["error"]["message"] == "too many clients"
            await held.send_all(line)
            assert "this connection already holds 2" in \
                (await receive_line(held))["error"]["message"]
            nursery.cancel_scope.cancel()

    run(test)


@pytest.mark.parametrize("cap", [{"max_streams_per_client": {"subscribe": 0}},
                                 {"max_streams": {"subscribe": 0}}])
def test_a_stream_cap_of_nought_lets_no_stream_in(cap: dict[str, Any]) -> None:
    async def test() -> None:
        srv = Server({"subscribe": subscribe}, lambda: "adm",
                     Limits(max_clients=50, max_clients_per_uid=5, idle_timeout=60,
                            line_timeout=5, **cap))
        async with trio.open_nursery() as nursery:
            user, end = trio.testing.memory_stream_pair()
            nursery.start_soon(srv.session, end, USER)
            await user.send_all(b'{"jsonrpc":"2.0","id":1,"method":"subscribe"}\n')
            assert "error" in await receive_line(user)
            nursery.cancel_scope.cancel()

    run(test)
