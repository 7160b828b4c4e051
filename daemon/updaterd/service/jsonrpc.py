"""The control socket's rules without I/O, as h11 is HTTP's: bytes in, the requests to run and
the replies out. `rpc.py` only moves bytes, keeps time and calls the handlers.

A message is one line of at most MAX_MESSAGE bytes (`Lines` frames them); a line holds a
JSON-RPC 2.0 request or a batch of at most MAX_BATCH (`parse` turns it into `Call`s and the
answers already decided: not JSON, not a request, a bad id); a call is admitted (`admit`: a
method this daemon has, the right to call it, a stream never batched) and its params typed
(`params_of`) before its handler runs; `reply`, `refusal` and `answer` encode what goes back.
Nothing here raises past its caller but `RpcError`, whatever the bytes.
"""

from __future__ import annotations

from collections.abc import Container
from dataclasses import dataclass
from typing import Any

import msgspec

from updaterctl.protocol import (
    MAX_MESSAGE,
    PARAMS,
    READ_METHODS,
    ErrorCode,
    ErrorObject,
    Request,
    Response,
)

MAX_BATCH = 100
STREAMS = frozenset({"subscribe", "inhibit"})  # methods that hold something until hang-up


class RpcError(Exception):
    """An error answer: a code from `ErrorCode`, a message, optional data."""

    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(message)
        self.code, self.message, self.data = int(code), message, data


class MessageTooLarge(Exception):
    """A line longer than MAX_MESSAGE: answered once (`TOO_LARGE`), then the client is
    dropped (what follows cannot be framed)."""


def error(rid: Any, code: int, message: str, data: Any = None) -> bytes:
    """An error reply, encoded."""
    return msgspec.json.encode(Response(id=rid, error=ErrorObject(int(code), message, data)))


TOO_LARGE = error(None, ErrorCode.INVALID_REQUEST, "message larger than 1 MiB")
TOO_MANY_CLIENTS = error(None, ErrorCode.BUSY, "too many clients")


class Lines:
    """Frames what a client sends into its lines; blank lines are passed over."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes | bytearray) -> None:
        self._buffer += data

    @property
    def started(self) -> bool:
        """A line has begun and not ended: it must end within the line timeout."""
        return bool(self._buffer)

    def next_line(self) -> bytes | None:
        """The next complete line (None: none yet); MessageTooLarge when the next one, ended
        or not, is longer than MAX_MESSAGE."""
        while (end := self._buffer.find(b"\n")) >= 0:
            line = bytes(self._buffer[:end])
            del self._buffer[: end + 1]
            if len(line) > MAX_MESSAGE:
                raise MessageTooLarge
            if line.strip():
                return line
        if len(self._buffer) > MAX_MESSAGE:
            raise MessageTooLarge
        return None


@dataclass(frozen=True)
class Call:
    """One request of a line, to admit and run."""

    method: str
    params: Any  # as sent: an object, a list (refused by params_of), or UNSET
    id: Any  # None for a notification
    notification: bool
    batched: bool


@dataclass(frozen=True)
class Message:
    """What one line asks, in order: a call to run, or the answer already decided for it (an
    item that is no request). `batch`: the answers go back as one array."""

    items: list[Call | bytes]
    batch: bool


def parse(line: bytes) -> Message | bytes:
    """The calls of one line, or the one answer the whole line gets (not JSON, an empty or
    an oversized batch)."""
    try:
        decoded = msgspec.json.decode(line)
    except (msgspec.DecodeError, RecursionError):
        return error(None, ErrorCode.PARSE_ERROR, "parse error: not valid JSON")
    if not isinstance(decoded, list):
        return Message([_request(decoded, batched=False)], batch=False)
    if not decoded:
        return error(None, ErrorCode.INVALID_REQUEST, "empty batch")
    if len(decoded) > MAX_BATCH:
        return error(None, ErrorCode.INVALID_REQUEST, f"batch larger than {MAX_BATCH} requests")
    return Message([_request(item, batched=True) for item in decoded], batch=True)


def _request(item: Any, *, batched: bool) -> Call | bytes:
    try:
        req = msgspec.convert(item, Request, strict=True)
    except msgspec.ValidationError as e:
        return error(None, ErrorCode.INVALID_REQUEST, f"invalid request: {e}")
    if req.jsonrpc != "2.0":
        return error(None, ErrorCode.INVALID_REQUEST, 'invalid request: jsonrpc must be "2.0"')
    if isinstance(req.id, msgspec.UnsetType):  # a notification: it gets no answer
        return Call(req.method, req.params, None, True, batched)
    return Call(req.method, req.params, req.id, False, batched)  # strict: never a bool id


def admit(call: Call, *, admin: bool, admin_group: str, served: Container[str]) -> None:
    """Whether `call` may run here: a method of the protocol this daemon `served`, a caller
    with the right to it (root or `admin_group` for every method that changes something), and
    a stream (subscribe, inhibit) alone on its line. RpcError says why not."""
    if call.method not in served or call.method not in PARAMS:
        raise RpcError(ErrorCode.METHOD_NOT_FOUND, f"method not found: {call.method}")
    if call.method not in READ_METHODS and not admin:
        raise RpcError(ErrorCode.NOT_PERMITTED,
                       f"{call.method} needs root or the admin group {admin_group!r}")
    if call.method in STREAMS and call.batched:
        raise RpcError(ErrorCode.INVALID_REQUEST, f"{call.method} cannot be batched")


def params_of(call: Call) -> Any:
    """The call's params as its method's type, never coerced (`"3"` is no number)."""
    raw = {} if isinstance(call.params, msgspec.UnsetType) else call.params
    if isinstance(raw, list):
        raise RpcError(ErrorCode.INVALID_PARAMS, "params must be an object (named)")
    try:
        return msgspec.convert(raw, PARAMS[call.method], strict=True)
    except msgspec.ValidationError as e:
        raise RpcError(ErrorCode.INVALID_PARAMS, f"invalid params: {e}") from None


def reply(call: Call, result: Any) -> bytes | None:
    """The answer to a call that ran (a notification gets none)."""
    return None if call.notification else msgspec.json.encode(Response(id=call.id,
                                                                       result=result))


def refusal(call: Call, e: RpcError | None) -> bytes | None:
    """The answer to a call that failed: its RpcError, or (None) an internal error whose
    detail stays in the daemon's log. A notification gets none."""
    if call.notification:
        return None
    if e is None:
        return error(call.id, ErrorCode.INTERNAL_ERROR, "internal error")
    return error(call.id, e.code, e.message, e.data)


def answer(message: Message, answers: list[bytes | None]) -> bytes | None:
    """What goes back for the whole line (None: only notifications)."""
    if not message.batch:
        (only,) = answers
        return only
    kept = [a for a in answers if a is not None]
    return b"[" + b",".join(kept) + b"]" if kept else None
