"""The wire protocol shared by updaterd and its clients: result Structs, events, error codes.

Kept free of trio and httpx so that any local program can import it cheaply.
"""

from __future__ import annotations

from enum import IntEnum
from typing import Literal

import msgspec
from msgspec import Struct

DEFAULT_SOCKET = "/run/updaterd/updaterd.sock"

Phase = Literal["idle", "checking", "downloading", "verifying", "staging", "switching",
                "restarting", "health_check", "committing", "rolling_back"]
Outcome = Literal["installed", "up_to_date", "rolled_back", "failed"]


class ErrorCode(IntEnum):
    """JSON-RPC's own codes, then updaterd's (SPEC section 7)."""

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


class Event(Struct, kw_only=True, omit_defaults=True):
    """One thing that happened to an app: a phase change, progress, or a result."""

    app: str
    kind: Literal["phase", "progress", "result", "error"]
    phase: Phase = "idle"
    message: str = ""
    version: str | None = None
    done: int | None = None
    total: int | None = None
    at: float = 0.0


class CheckResult(Struct, kw_only=True):
    current: str | None
    available: str | None
    checked_at: float
    passed_over: dict[str, str] = {}


class UpdateResult(Struct, kw_only=True):
    from_version: str | None = msgspec.field(name="from")
    to_version: str | None = msgspec.field(name="to")
    result: Outcome
    reason: str = ""


class RollbackResult(Struct, kw_only=True):
    from_version: str | None = msgspec.field(name="from")
    to_version: str | None = msgspec.field(name="to")
