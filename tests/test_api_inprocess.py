"""The control-socket methods in-process against a fake worker: params, one call to the app's
worker, then a result, or the worker's error as its code (updaterd(8), CONTROL SOCKET
PROTOCOL). The real
worker's locking, take-over and cancel are the daemon tests' (test_daemon, test_operations,
test_maintenance_window); here only what `api` adds."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, cast

import pytest
import trio

from updaterctl.protocol import (
    AppParams,
    CancelResult,
    CheckParams,
    CheckResult,
    ErrorCode,
    Event,
    Phase,
    RollbackParams,
    RollbackResult,
    UpdateParams,
    UpdateResult,
)
from updaterd.engine.engine import Engine
from updaterd.errors import Busy, CancelledByOperator, TakeOverFailed, UpdaterError
from updaterd.host.config import AppConfig, Config, DaemonConfig
from updaterd.host.state import AppState
from updaterd.reports import Checked, RolledBack, Updated
from updaterd.service.api import ControlApi
from updaterd.service.events import EventBus
from updaterd.service.inhibitors import Inhibitors
from updaterd.service.jsonrpc import RpcError
from updaterd.service.rpc import Connection, Peer
from updaterd.service.scheduler import Schedule
from updaterd.service.view import Counters, DaemonView, WorkerView


@dataclass
class FakeWorker:
    """A worker whose answers the test sets: a result, or an error to raise."""

    name: str = "demo"
    phase: Phase = "idle"
    message: str = ""
    progress: tuple[int, int] | None = None
    counters: Counters = field(default_factory=Counters)
    busy_since: float = 0.0
    failed_step: str | None = None
    phase_version: str | None = None
    answer: Any = None
    calls: list[tuple[str, Any]] = field(default_factory=list)
    app_state: AppState = field(default_factory=AppState)

    @property
    def schedule(self) -> Schedule:
        raise AssertionError("not used by these methods")

    def state(self) -> AppState:
        return self.app_state

    def config(self) -> AppConfig:
        return AppConfig(source="directory", path="/srv/feed", prefix="/opt/demo")

    def _give(self, call: str, *args: Any) -> Any:
        self.calls.append((call, args))
        if isinstance(self.answer, BaseException):
            raise self.answer
        return self.answer

    async def check(self, force: bool, fresh: bool = False) -> Checked:
        return cast(Checked, self._give("check", force))

    async def update(self, version: str | None, now: bool) -> Updated:
        return cast(Updated, self._give("update", version, now))

    async def rollback(self, to: str | None, with_data: bool = False) -> RolledBack:
        return cast(RolledBack, self._give("rollback", to, with_data))

    def cancel(self) -> CancelResult:
        return cast(CancelResult, self._give("cancel"))


@dataclass
class FakeDaemon:
    workers: Mapping[str, WorkerView]
    config: Config = field(default_factory=Config)
    config_path: str = "/etc/updaterd/updaterd.toml"
    started_at: float = field(default_factory=time.time)
    bus: EventBus = field(default_factory=EventBus)
    inhibitors: Inhibitors = field(default_factory=Inhibitors)

    @property
    def engine(self) -> Engine:
        raise AssertionError("the methods under test go through the worker, not the engine")

    async def reload(self) -> None:
        return None

    def on_event(self, event: Event) -> None:
        return None


@dataclass
class FakeConnection:
    peer: Peer


def _api(worker: FakeWorker, downgrade_group: str | None = None) -> ControlApi:
    daemon = FakeDaemon(workers={worker.name: worker},
                        config=Config(daemon=DaemonConfig(downgrade_group=downgrade_group)))
    return ControlApi(cast(DaemonView, daemon))


def _call(api: ControlApi, method: str, params: Any, uid: int = 0) -> Any:
    conn = cast(Connection, FakeConnection(Peer(pid=1, uid=uid, gid=uid, admin=True)))
    handler = api.handlers()[method]
    return trio.run(handler, params, conn)


def _error(api: ControlApi, method: str, params: Any, uid: int = 0) -> RpcError:
    with pytest.raises(RpcError) as e:
        _call(api, method, params, uid)
    return e.value


def test_each_operation_is_one_call_to_the_apps_worker() -> None:
    w = FakeWorker()
    api = _api(w)
    w.answer = Checked(current="1.0.0", available="1.1.0", checked_at=1.0)
    assert _call(api, "check", CheckParams(app="demo", force=True)) == \
        CheckResult(current="1.0.0", available="1.1.0", checked_at=1.0)  # the wire's type
    w.answer = Updated(from_version="1.0.0", to_version="1.1.0", result="installed")
    assert _call(api, "update", UpdateParams(app="demo", now=True)) == \
        UpdateResult(from_version="1.0.0", to_version="1.1.0", result="installed")
    w.answer = RolledBack(from_version="1.1.0", to_version="1.0.0")
    assert _call(api, "rollback", RollbackParams(app="demo", to="1.0.0")) == \
        RollbackResult(from_version="1.1.0", to_version="1.0.0")
    w.answer = RolledBack(from_version="1.1.0", to_version="1.0.0", with_data=True)
    assert _call(api, "rollback", RollbackParams(app="demo", with_data=True)) == \
        RollbackResult(from_version="1.1.0", to_version="1.0.0", with_data=True)
    w.answer = CancelResult(cancelled=True, phase="downloading", message="m")
    assert _call(api, "cancel", AppParams(app="demo")).cancelled
    assert w.calls == [("check", (True,)), ("update", (None, True)),
                       ("rollback", ("1.0.0", False)), ("rollback", (None, True)),
                       ("cancel", ())]


def test_an_unknown_app_is_error_1_and_no_worker_is_asked() -> None:
    w = FakeWorker()
    e = _error(_api(w), "update", UpdateParams(app="other"))
    assert e.code == ErrorCode.UNKNOWN_APP and e.message == "unknown app: other"
    assert w.calls == []


def test_a_busy_worker_is_error_2_with_its_phase_and_since() -> None:
    w = FakeWorker(answer=Busy("demo is busy: downloading for 3s", "downloading", 12.0))
    e = _error(_api(w), "check", CheckParams(app="demo"))
    assert (e.code, e.message, e.data) == (ErrorCode.BUSY, "demo is busy: downloading for 3s",
                                           {"phase": "downloading", "since": 12.0})


def test_a_cancelled_or_failed_operation_is_error_5_saying_why() -> None:
    w = FakeWorker(phase="idle", answer=CancelledByOperator("demo"))
    e = _error(_api(w), "rollback", RollbackParams(app="demo"))
    assert (e.code, e.message, e.data) == (ErrorCode.UPDATE_FAILED,
                                           "demo: cancelled by the operator",
                                           {"phase": "idle", "reason": "cancelled"})
    w.answer = TakeOverFailed("demo: the update that waited did not install 1.1.0: x", "x")
    e = _error(_api(w), "update", UpdateParams(app="demo", now=True))
    assert e.code == ErrorCode.UPDATE_FAILED and e.data == {"phase": "idle", "reason": "x"}
    # a failure the operation recorded: the recorded text, with the version it was installing
    w.answer = UpdaterError("disk full")
    w.failed_step, w.phase = "staging", "failed"
    w.app_state = AppState(last_error="1.1.0: disk full")
    e = _error(_api(w), "update", UpdateParams(app="demo"))
    assert (e.code, e.message, e.data) == (ErrorCode.UPDATE_FAILED, "demo: 1.1.0: disk full",
                                           {"phase": "failed", "step": "staging",
                                            "reason": "1.1.0: disk full"})


def test_a_rolled_back_update_is_error_5_with_both_versions() -> None:
    w = FakeWorker(answer=Updated(from_version="1.0.0", to_version="1.1.0",
                                  result="rolled_back", reason="health check: exit 1"))
    e = _error(_api(w), "update", UpdateParams(app="demo"))
    assert e.code == ErrorCode.UPDATE_FAILED
    assert e.message == "demo: 1.1.0 was rolled back to 1.0.0: health check: exit 1"
    assert e.data == {"phase": "health_check", "reason": "health check: exit 1",
                      "from": "1.0.0", "to": "1.1.0"}


def test_going_back_needs_the_downgrade_group_before_the_worker_is_asked() -> None:
    w = FakeWorker(app_state=AppState(installed="2.0.0"))
    api = _api(w, downgrade_group="nonexistent-group-for-tests")
    for method, params in (("update", UpdateParams(app="demo", version="1.0.0")),
                           ("rollback", RollbackParams(app="demo"))):
        e = _error(api, method, params, uid=65534)
        assert e.code == ErrorCode.NOT_PERMITTED, e.message
    assert w.calls == []
    w.answer = Updated(from_version="2.0.0", to_version="2.1.0", result="installed")
    assert _call(api, "update", UpdateParams(app="demo", version="2.1.0"), uid=65534)


@dataclass
class StatusWorker(FakeWorker):
    """A worker whose status is read: no check is scheduled."""

    @property
    def schedule(self) -> Schedule:
        return cast(Schedule, type("NoCheck", (), {"next_check": None})())


def _notes(state: AppState, auto_update: bool = True) -> list[str]:
    worker = StatusWorker(app_state=state)
    if not auto_update:
        worker.config = lambda: AppConfig(  # type: ignore[method-assign]
            source="directory", path="/srv/feed", prefix="/opt/demo", auto_update=False)
    return ControlApi(cast(DaemonView, FakeDaemon(workers={"demo": worker}))) \
        .app_status(cast(WorkerView, worker)).notes


def test_j181_a_block_or_skip_is_noted_while_it_matters_and_gone_once_the_host_moved_on() -> None:
    from updaterd.host.state import HistoryEntry

    back = HistoryEntry(at=1.0, action="rolled_back", version="1.0.0", from_version="1.1.0",
                        reason="recalled by its rollout: bad")
    on_old = AppState(installed="1.0.0", blocked=["1.1.0"], skipped=["1.2.0"], history=[back])
    assert _notes(on_old) == [
        "rolled back from 1.1.0 to 1.0.0: recalled by its rollout: bad; `updaterctl unskip "
        "demo 1.1.0` allows it again",
        "1.2.0 is skipped: `updaterctl unskip demo 1.2.0` allows it again"]
    moved_on = AppState(installed="1.3.0", blocked=["1.1.0", "2.0.0", "nightly"],
                        skipped=["1.2.0"], history=[back])
    assert _notes(moved_on) == [
        "2.0.0 is blocked after a failed update; `updaterctl unskip demo 2.0.0` allows it again",
        "nightly is blocked after a failed update; `updaterctl unskip demo nightly` allows it "
        "again"]


def test_j181_a_host_still_on_a_recalled_release_says_so_and_what_moves_it() -> None:
    st = AppState(installed="1.1.0", recalled={"1.1.0": "eats data", "0.9.0": "old"})
    assert _notes(st) == ["1.1.0, running now, is recalled by its rollout: eats data; no kept "
                          "release can take its place; `updaterctl list-backups demo`"]
    assert _notes(st, auto_update=False) == [
        "1.1.0, running now, is recalled by its rollout: eats data; `updaterctl update demo` "
        "goes back"]
    assert _notes(AppState(installed="1.0.0", recalled={"1.1.0": "eats data"})) == []
