"""What each control-socket method does, over the engine and the daemon's workers.

Authorization and framing happen in rpc.py; here every method gets typed params and returns a
protocol Struct, or raises RpcError with one of the codes of updaterd(8) CONTROL SOCKET PROTOCOL.
"""

from __future__ import annotations

import os
import stat
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from typing import TYPE_CHECKING

import msgspec
import trio

from updaterctl._version import __version__
from updaterctl.protocol import (
    AppParams,
    AppStatus,
    Backup,
    CancelResult,
    CheckParams,
    CheckResult,
    DaemonInfo,
    ErrorCode,
    HistoryItem,
    HistoryParams,
    InhibitParams,
    InhibitResult,
    NoParams,
    Notification,
    Ok,
    Progress,
    PruneParams,
    PruneResult,
    ResetParams,
    RollbackParams,
    RollbackResult,
    StatusParams,
    StatusResult,
    SubscribeParams,
    SubscribeResult,
    UpdateParams,
    UpdateResult,
    VersionParams,
    clock,
)
from updaterd import fdtree, versions
from updaterd.errors import (
    Busy,
    CancelledByOperator,
    ConfigError,
    NoSuchVersion,
    PolicyError,
    TakeOverFailed,
    UnknownApp,
    UpdaterError,
)
from updaterd.host import outcome
from updaterd.host.state import AppState
from updaterd.service import answers, metrics, rpc
from updaterd.service.jsonrpc import RpcError
from updaterd.service.rpc import Connection, Handler

if TYPE_CHECKING:
    from updaterd.service.view import DaemonView, WorkerView


def _tree_size(path: str) -> int:
    """Bytes under a folder (a kept release the app may write in: walked by descriptor), or
    of a single file."""
    if os.path.isfile(path):
        return os.lstat(path).st_size
    with suppress(OSError, UpdaterError):
        return sum(e.st.st_size for e in fdtree.walk(Path(path), contents=False)
                   if stat.S_ISREG(e.st.st_mode))
    return 0


class ControlApi:
    """The methods of the control socket."""

    def __init__(self, daemon: DaemonView) -> None:
        self.daemon = daemon

    def handlers(self) -> dict[str, Handler]:
        return {
            "status": self.status, "check": self.check, "update": self.update,
            "rollback": self.rollback, "list_backups": self.list_backups,
            "history": self.history, "skip": self.skip, "unskip": self.unskip,
            "pause": self.pause, "resume": self.resume, "subscribe": self.subscribe,
            "inhibit": self.inhibit, "reload": self.reload, "metrics": self.metrics,
            "cancel": self.cancel, "reset_failed": self.reset_failed, "prune": self.prune,
        }

    def _worker(self, app: str) -> WorkerView:
        worker = self.daemon.workers.get(app)
        if worker is None:
            raise RpcError(ErrorCode.UNKNOWN_APP, f"unknown app: {app}")
        return worker

    @asynccontextmanager
    async def _engine_errors(self, worker: WorkerView) -> AsyncIterator[None]:
        """The worker's and the engine's errors as the codes of the protocol (updaterd(8),
        CONTROL SOCKET PROTOCOL)."""
        try:
            yield
        except UnknownApp as e:
            raise RpcError(ErrorCode.UNKNOWN_APP, str(e)) from None
        except (NoSuchVersion, PolicyError) as e:
            raise RpcError(ErrorCode.NO_SUCH_VERSION, str(e)) from None
        except Busy as e:
            raise RpcError(ErrorCode.BUSY, str(e), {"phase": e.phase, "since": e.since}) \
                from None
        except CancelledByOperator as e:
            raise RpcError(ErrorCode.UPDATE_FAILED, str(e),
                           {"phase": worker.phase, "reason": "cancelled"}) from None
        except TakeOverFailed as e:
            raise RpcError(ErrorCode.UPDATE_FAILED, str(e),
                           {"phase": worker.phase, "reason": e.reason}) from None
        except UpdaterError as e:
            # What the operation recorded (with the version it was installing), app named.
            last = worker.state().last_error
            reason = last if last and str(e) in last else str(e)
            raise RpcError(ErrorCode.UPDATE_FAILED, f"{worker.name}: {reason}",
                           {"phase": worker.phase, "step": worker.failed_step,
                            "reason": reason}) from None

    # -- read ----------------------------------------------------------------------------

    async def status(self, p: StatusParams, conn: Connection) -> StatusResult:
        names = [p.app] if p.app else list(self.daemon.workers)
        apps = [self.app_status(self._worker(n)) for n in names]
        d = self.daemon
        return StatusResult(daemon=DaemonInfo(version=__version__, pid=os.getpid(),
                                              started_at=d.started_at, config=d.config_path),
                            apps=apps)

    def app_status(self, w: WorkerView) -> AppStatus:
        st = w.state()
        cfg = w.config()
        name, notes = w.name, []
        yanked = st.yanked.get(st.installed) if st.installed else None
        if yanked is not None:
            then = f"{st.available} installs at the next check" if st.available else \
                f"`updaterctl update {name} --version V` moves to another release"
            notes.append(f"{st.installed}, running now, was yanked by the publisher: "
                         f"{yanked}; {then}")
        recalled = st.recalled.get(st.installed) if st.installed else None
        if recalled is not None:  # still on it: auto_update off, or nothing to go back to
            then = f"`updaterctl update {name}` goes back" if not cfg.auto_update else \
                f"no kept release can take its place; `updaterctl list-backups {name}`"
            notes.append(f"{st.installed}, running now, is recalled by its rollout: "
                         f"{recalled}; {then}")
        if st.paused:
            notes.append(f"paused: `updaterctl resume {name}` to go on")
        if st.available and not cfg.auto_update:
            notes.append(f"{st.available} is available; auto_update is off: "
                         f"`updaterctl update {name}` installs it")
        elif st.available and not st.paused and w.phase in ("idle", "failed") \
                and w.schedule.next_check is not None:
            notes.append(self._when_it_installs(name, st.available, w.schedule.next_check))
        notes += [f"{v}: {why}" for v, why in st.passed_over.items()]
        if w.phase in ("waiting_inhibitors", "waiting_window"):
            notes.append(w.message)
        rolled_back = {h.from_version: h for h in st.history if h.action == "rolled_back"}
        # a block or a skip is said while it keeps a version from this host: once the host runs
        # something newer it could never be offered again, and the note would be noise (J181)
        for v in [v for v in st.blocked if self._still_matters(v, st.installed)]:
            h = rolled_back.get(v)
            why = f"rolled back from {v} to {h.version or 'nothing'}: {h.reason}" if h \
                else f"{v} is blocked after a failed update"
            notes.append(f"{why}; `updaterctl unskip {name} {v}` allows it again")
        notes += [f"{v} is skipped: `updaterctl unskip {name} {v}` allows it again"
                  for v in st.skipped if self._still_matters(v, st.installed)]
        last = next((h for h in reversed(st.history) if h.action == "installed"), None)
        if last is not None and last.version == st.installed and last.reason:
            notes.append(f"{last.version} was installed {last.reason}")  # a delta: what it saved
        return AppStatus(
            name=w.name, current=st.installed, available=st.available, phase=w.phase,
            progress=Progress(done=w.progress[0], total=w.progress[1]) if w.progress else None,
            last_check=st.last_check, next_check=w.schedule.next_check,
            last_error=st.last_error, paused=st.paused, auto_update=cfg.auto_update,
            blocked=st.blocked, skipped=st.skipped, notes=notes, yanked=yanked)

    @staticmethod
    def _still_matters(version: str, installed: str | None) -> bool:
        """Whether a version blocked or skipped could be offered to this host at all: not when
        what runs is newer (a version that cannot be ordered always matters)."""
        return installed is None or not versions.is_newer(installed, version)

    def _when_it_installs(self, name: str, version: str, next_check: float) -> str:
        """When an available version installs by itself: at the next check, or when the
        maintenance window opens if that is later (the check then only downloads)."""
        check_in = max(next_check - time.time(), 0)
        try:
            window_in = self.daemon.engine.window(name).wait()
        except PolicyError as e:
            return f"{version} never installs by itself: {e}"
        if window_in > check_in:
            spec = self.daemon.config.apps[name].window
            return (f"{version} installs when the window opens, in {clock(window_in)} "
                    f"({spec}); `updaterctl update {name} --now` installs it now")
        return (f"{version} installs at the next check, in {clock(check_in)}; "
                f"`updaterctl update {name}` installs it now")

    async def list_backups(self, p: AppParams, conn: Connection) -> list[Backup]:
        """Releases kept on disk (releases mode) or backup copies (inplace), with sizes."""
        st = self._worker(p.app).state()
        installed_at: dict[str, float] = {}
        for h in st.history:
            if h.action == "installed":
                installed_at[h.version] = h.at
        backups = []
        data = await trio.to_thread.run_sync(self.daemon.engine.data_snapshots, p.app)
        for k, current in await self.daemon.engine.kept(p.app):
            size = await trio.to_thread.run_sync(_tree_size, str(k.path))
            backups.append(Backup(version=k.version, path=str(k.path),
                                  installed_at=k.installed_at or installed_at.get(k.version),
                                  size=size, current=current,
                                  data_snapshot=data.get(k.version)))
        return backups

    async def history(self, p: HistoryParams, conn: Connection) -> list[HistoryItem]:
        if p.limit is not None and p.limit < 1:
            raise RpcError(ErrorCode.INVALID_PARAMS, f"limit must be 1 or more, not {p.limit}")
        st = self._worker(p.app).state()
        entries = st.history[-p.limit:] if p.limit else st.history
        return [msgspec.convert(e, HistoryItem, from_attributes=True) for e in entries]

    async def metrics(self, p: NoParams, conn: Connection) -> str:
        return metrics.render(self.daemon)

    async def subscribe(self, p: SubscribeParams, conn: Connection) -> SubscribeResult:
        for app in p.apps or []:
            self._worker(app)
        apps = frozenset(p.apps) if p.apps else None

        async def forward(task_status: trio.TaskStatus[None]) -> None:
            with conn.holding("subscribe"), self.daemon.bus.subscribe(apps) as sub:
                task_status.started()
                while True:
                    event = await sub.next()
                    await conn.send(msgspec.json.encode(Notification(params=event)))

        conn.streaming = True
        await conn.nursery.start(forward)
        return SubscribeResult()

    # -- change ---------------------------------------------------------------------------

    async def check(self, p: CheckParams, conn: Connection) -> CheckResult:
        w = self._worker(p.app)
        async with self._engine_errors(w):
            return answers.checked(await w.check(p.force, p.fresh))

    async def update(self, p: UpdateParams, conn: Connection) -> UpdateResult:
        w = self._worker(p.app)
        installed = w.state().installed
        if p.version is not None and installed is not None and \
                _is_downgrade(p.version, installed):
            self._require_downgrade_right(conn, f"update to the older {p.version}")
        async with self._engine_errors(w):
            result = await w.update(p.version, p.now)
        if result.result == "rolled_back":
            raise RpcError(ErrorCode.UPDATE_FAILED,
                           f"{p.app}: {result.to_version} was rolled back to "
                           f"{result.from_version or 'nothing'}: {result.reason}",
                           {"phase": "health_check", "reason": result.reason,
                            "from": result.from_version, "to": result.to_version})
        return answers.updated(result)

    def _require_downgrade_right(self, conn: Connection, what: str) -> None:
        """With `downgrade_group` set, going back needs root or that group too."""
        group = self.daemon.config.daemon.downgrade_group
        peer = conn.peer
        if group is not None and not rpc.is_admin(peer.uid, peer.gid, peer.groups, group):
            raise RpcError(ErrorCode.NOT_PERMITTED, f"{what} needs root or the downgrade group "
                                                    f"{group!r}")

    async def rollback(self, p: RollbackParams, conn: Connection) -> RollbackResult:
        w = self._worker(p.app)
        self._require_downgrade_right(conn, "rollback")
        async with self._engine_errors(w):
            return answers.rolled_back(await w.rollback(p.to, p.with_data))

    async def _edit_state(self, app: str, edit: Callable[[AppState, int], None]) -> Ok:
        """Apply an operator's edit to the stored state (see `outcome`), saved at once."""
        w = self._worker(app)
        self.daemon.engine.edit_state(app, edit)
        w.schedule.poke()
        return Ok()

    async def skip(self, p: VersionParams, conn: Connection) -> Ok:
        self._worker(p.app)
        try:
            versions.parse(p.version)
        except ValueError:
            raise RpcError(ErrorCode.NO_SUCH_VERSION, f"{p.version!r} is not a version "
                                                      "(such as 1.2.3)") from None
        return await self._edit_state(
            p.app, lambda st, limit: outcome.skipped(st, p.version, limit))

    async def unskip(self, p: VersionParams, conn: Connection) -> Ok:
        st = self._worker(p.app).state()
        if p.version not in st.skipped and p.version not in st.blocked:
            raise RpcError(ErrorCode.NO_SUCH_VERSION,
                           f"{p.app} {p.version} is neither skipped nor blocked")
        return await self._edit_state(
            p.app, lambda st, limit: outcome.unskipped(st, p.version, limit))

    async def reset_failed(self, p: ResetParams, conn: Connection) -> list[str]:
        """Clear the failure record of one app, or of every app."""
        names = [p.app] if p.app is not None else list(self.daemon.workers)
        workers = [self._worker(name) for name in names]  # an unknown app: nothing changes
        for w in workers:
            w.reset_failed()
        return names

    async def prune(self, p: PruneParams, conn: Connection) -> PruneResult:
        w = self._worker(p.app)
        async with self._engine_errors(w):
            removed, kept = await w.prune(p.keep, p.force)
        return PruneResult(removed=removed, kept=kept)

    async def pause(self, p: AppParams, conn: Connection) -> Ok:
        return await self._edit_state(p.app, lambda st, _limit: outcome.paused(st, True))

    async def resume(self, p: AppParams, conn: Connection) -> Ok:
        return await self._edit_state(p.app, lambda st, _limit: outcome.paused(st, False))

    async def inhibit(self, p: InhibitParams, conn: Connection) -> InhibitResult:
        self._worker(p.app)

        async def hold(task_status: trio.TaskStatus[None]) -> None:
            with conn.holding("inhibit"), \
                    self.daemon.inhibitors.hold(p.app, p.who, p.why, conn.peer.uid,
                                                conn.peer.pid):
                task_status.started()
                await trio.sleep_forever()

        conn.streaming = True
        await conn.nursery.start(hold)
        return InhibitResult()

    async def cancel(self, p: AppParams, conn: Connection) -> CancelResult:
        """Stop a check, a download or a wait for the window, at once; never what is past
        the switch (it finishes or rolls back)."""
        return self._worker(p.app).cancel()

    async def reload(self, p: NoParams, conn: Connection) -> Ok:
        try:
            await self.daemon.reload()
        except ConfigError as e:
            raise RpcError(ErrorCode.CONFIG_INVALID, "configuration refused; the old one is kept",
                           e.problems) from None
        return Ok()



def _is_downgrade(version: str, installed: str) -> bool:
    """True when `version` is older than `installed`, or when the two cannot be ordered."""
    try:
        return versions.key(version) < versions.key(installed)
    except ValueError:
        return version != installed
