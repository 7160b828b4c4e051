"""The wire protocol shared by updaterd and its clients: JSON-RPC 2.0 envelopes, the params and
results of every method, events, and error codes.

Kept free of trio and httpx so that any local program can import it cheaply. Framing: one JSON
object (or batch array) per line, UTF-8, at most MAX_MESSAGE bytes.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from msgspec import UNSET, Meta, Struct, UnsetType

from updaterctl.vocabulary import (
    PAST_SWITCH,
    Outcome,
    Phase,
    UpdateOutcome,
    clock,
    describe_rollback,
    describe_update,
)
from updaterctl.wire import DEFAULT_SOCKET, MAX_MESSAGE, ErrorCode

# re-exported: the protocol in one place
__all__ = ["DEFAULT_SOCKET", "MAX_MESSAGE", "PAST_SWITCH", "ErrorCode", "Outcome", "Phase",
           "UpdateOutcome", "clock"]

MAX_WHO, MAX_WHY = 128, 512  # an inhibitor's label and reason, as they reach the log

RequestId = int | str | None


# -- envelopes ---------------------------------------------------------------------------------

class Request(Struct, forbid_unknown_fields=True):
    """A call; without an `id` it is a notification and gets no reply."""

    jsonrpc: str
    method: str
    params: dict[str, Any] | list[Any] | UnsetType = UNSET
    id: int | str | UnsetType | None = UNSET


class ErrorObject(Struct, omit_defaults=True):
    code: int
    message: str
    data: Any = None


class Response(Struct, kw_only=True):
    """A reply; exactly one of `result` and `error` is set (UNSET fields are not encoded)."""

    jsonrpc: str = "2.0"
    id: RequestId
    result: Any = UNSET
    error: ErrorObject | UnsetType = UNSET


# -- events ------------------------------------------------------------------------------------

class Event(Struct, kw_only=True):
    """One thing that happened to an app: a phase change, progress, a result, or a notice."""

    app: str
    kind: Literal["phase", "progress", "result", "error", "notice"]
    phase: Phase = "idle"
    message: str = ""
    version: str | None = None
    done: int | None = None
    total: int | None = None
    at: float = 0.0
    # result and error events: how the operation ended, and (on failure) at which step
    outcome: Outcome | None = None
    step: str | None = None
    # progress: what is being fetched, the full artifact or a delta; a notice with "full":
    # a delta was given up and the full artifact is fetched instead, `reason` says why in one
    # word (no-base, mismatch, costly, shared, failed)
    plan: Literal["full", "delta"] | None = None
    reason: str | None = None


class Notification(Struct, kw_only=True):
    jsonrpc: str = "2.0"
    method: str = "event"
    params: Event


# -- params ------------------------------------------------------------------------------------

class NoParams(Struct, forbid_unknown_fields=True):
    pass


class StatusParams(Struct, forbid_unknown_fields=True):
    app: str | None = None


class AppParams(Struct, forbid_unknown_fields=True):
    app: str


class CheckParams(Struct, forbid_unknown_fields=True):
    app: str
    force: bool = False
    fresh: bool = False  # every cache on the way revalidates the feed's files with the origin


class UpdateParams(Struct, forbid_unknown_fields=True):
    app: str
    version: str | None = None
    now: bool = False  # ignore the maintenance window


class RollbackParams(Struct, forbid_unknown_fields=True):
    app: str
    to: str | None = None
    with_data: bool = False  # the data snapshot of the target replaces shared/ too


class HistoryParams(Struct, forbid_unknown_fields=True):
    app: str
    limit: int | None = None


class VersionParams(Struct, forbid_unknown_fields=True):
    app: str
    version: str


class ResetParams(Struct, forbid_unknown_fields=True):
    app: str | None = None  # every app when None


class PruneParams(Struct, forbid_unknown_fields=True):
    app: str
    keep: Annotated[int, Meta(ge=0, le=100)] | None = None  # default: the app's `retain`
    force: bool = False  # the rollback target may go too


class SubscribeParams(Struct, forbid_unknown_fields=True):
    apps: list[str] | None = None


class InhibitParams(Struct, forbid_unknown_fields=True):
    app: str
    who: Annotated[str, Meta(max_length=MAX_WHO)]  # a label for status and the log
    why: Annotated[str, Meta(max_length=MAX_WHY)]


# -- results -----------------------------------------------------------------------------------

class DaemonInfo(Struct, kw_only=True):
    version: str
    pid: int
    started_at: float
    config: str


class Progress(Struct, kw_only=True):
    done: int
    total: int


class AppStatus(Struct, kw_only=True):
    name: str
    current: str | None
    available: str | None
    phase: Phase
    progress: Progress | None = None
    last_check: float | None = None
    next_check: float | None = None
    last_error: str | None = None
    paused: bool = False
    auto_update: bool = True
    blocked: list[str] = []
    skipped: list[str] = []
    notes: list[str] = []  # why an available version is not being installed, for people
    yanked: str | None = None  # the publisher yanked the version running now, and why


class StatusResult(Struct, kw_only=True):
    daemon: DaemonInfo
    apps: list[AppStatus]


class CheckResult(Struct, kw_only=True):
    current: str | None
    available: str | None
    checked_at: float
    passed_over: dict[str, str] = {}


class UpdateResult(Struct, kw_only=True):
    from_version: str | None = msgspec.field(name="from")
    to_version: str | None = msgspec.field(name="to")
    result: UpdateOutcome
    reason: str = ""

    def describe(self, app: str) -> str:
        """One line for a person: what an update did (`vocabulary.describe_update`)."""
        return describe_update(app, self.from_version, self.to_version, self.result,
                               self.reason)


class RollbackResult(Struct, kw_only=True):
    from_version: str | None = msgspec.field(name="from")
    to_version: str | None = msgspec.field(name="to")
    forward: bool = False  # `rollback --to` a kept version newer than the current one
    with_data: bool = False  # its data snapshot was put back too

    def describe(self, app: str) -> str:
        """One line for a person (`vocabulary.describe_rollback`)."""
        return describe_rollback(app, self.from_version, self.to_version, self.forward,
                                 self.with_data)


class Backup(Struct, kw_only=True):
    version: str
    path: str
    installed_at: float | None
    size: int
    current: bool
    data_snapshot: int | None = None  # bytes of the data kept with it (`data_snapshots`)


class HistoryItem(Struct, kw_only=True):
    at: float
    action: str
    version: str
    from_version: str | None = msgspec.field(default=None, name="from")
    reason: str = ""


class Ok(Struct):
    ok: bool = True


class PruneResult(Struct, kw_only=True):
    """What `prune` removed, and the versions still kept (oldest first)."""

    removed: list[str]
    kept: list[str]


class CancelResult(Struct, kw_only=True):
    """What `cancel` did: `cancelled` false when nothing ran, or when the operation was past
    its switch (it then finishes or rolls back); `message` says which, for people."""

    cancelled: bool
    phase: Phase
    message: str


class InhibitResult(Struct):
    inhibited: bool = True


class SubscribeResult(Struct):
    subscribed: bool = True


class Metric(Struct, kw_only=True):
    """One sample of `updaterctl --json metrics` (the Prometheus text, parsed)."""

    name: str
    labels: dict[str, str] = {}
    value: float


class CheckOutcome(Struct, kw_only=True):
    """`updaterctl --json check`, per app: a CheckResult's fields, or `error` alone."""

    current: str | None = None
    available: str | None = None
    checked_at: float | None = None
    passed_over: dict[str, str] = {}
    error: ErrorObject | None = None


# What `updaterctl --json COMMAND` prints on success (on failure: an ErrorObject); the schema
# version changes whenever one of these shapes changes in a way a script would notice.
JSON_SCHEMA_VERSION = 1
CLI_RESULTS: dict[str, Any] = {
    "status": StatusResult, "check": dict[str, CheckOutcome],
    "update": UpdateResult, "rollback": RollbackResult, "list-backups": list[Backup],
    "history": list[HistoryItem], "cancel": CancelResult, "metrics": list[Metric],
    "watch": Event, "skip": Ok, "unskip": Ok, "pause": Ok, "resume": Ok, "reload": Ok,
    "reset-failed": list[str], "prune": PruneResult, "error": ErrorObject,
}

# Which params each method takes; the daemon and the client both read this table.
PARAMS: dict[str, type[Struct]] = {
    "status": StatusParams, "check": CheckParams, "update": UpdateParams,
    "rollback": RollbackParams, "list_backups": AppParams, "history": HistoryParams,
    "skip": VersionParams, "unskip": VersionParams, "pause": AppParams, "resume": AppParams,
    "subscribe": SubscribeParams, "inhibit": InhibitParams, "reload": NoParams,
    "metrics": NoParams, "cancel": AppParams, "reset_failed": ResetParams,
    "prune": PruneParams,
}
# Methods anyone who can connect may call; the rest need root or the admin group.
READ_METHODS = frozenset({"status", "list_backups", "history", "subscribe", "metrics"})
