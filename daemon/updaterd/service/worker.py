"""One app's worker: the one owner of its operations. A check, an update, a rollback or a
cancel, whether the scheduler or a client asks, goes through here: the app's lock (one
operation at a time, and a client is told `busy` at once instead of waiting), the cancel scope
`cancel` reaches, and the take-over of an update that waits for its window. What it is doing
(phase, progress, counters) is kept in step with the engine's events for `status` and metrics.
"""

from __future__ import annotations

import contextlib
import logging
import random
import time
from collections.abc import AsyncIterator, Iterator

import trio

from updaterctl.protocol import PAST_SWITCH, CancelResult, Phase, clock
from updaterd.engine.gate import WaitingGate
from updaterd.errors import Busy, CancelledByOperator, TakeOverFailed, UpdaterError
from updaterd.host import outcome
from updaterd.host.config import AppConfig, watch_seconds
from updaterd.host.state import AppState
from updaterd.reports import Checked, Event, RolledBack, Updated
from updaterd.service.scheduler import Schedule
from updaterd.service.view import Counters, DaemonView
from updaterd.sources import watch
from updaterd.units import parse_duration

log = logging.getLogger("updaterd")
MAX_RESUMES = 3  # starts in a row that resume a cut operation at once
OFF_RECHECK = 60.0  # seconds: how soon a reload that turns the watch on is seen


class AppWorker:
    """One app: its lock (operations are serialised), its schedule and what it is doing now."""

    def __init__(self, name: str, daemon: DaemonView, rng: random.Random) -> None:
        self.name = name
        self.daemon = daemon
        self.lock = trio.Lock()
        self.schedule = Schedule(self, rng=rng)
        self.phase: Phase = "idle"
        self.message = ""
        self.progress: tuple[int, int] | None = None
        self.counters = Counters()
        self.scope = trio.CancelScope()
        self.busy_since = 0.0  # when the running operation left idle
        self.failed_step: str | None = None  # where the last failed operation stopped
        self.op_scope: trio.CancelScope | None = None  # the running operation, for `cancel`
        self.take_over = trio.Event()  # set: an update waiting for its window goes on now
        self.phase_version: str | None = None  # the version of the last phase with one
        self.rng = rng
        self.seen = watch.Seen()  # what the looks between checks remember
        self.looking = False  # the operation under the lock is a look's check

    @contextlib.contextmanager
    def running(self) -> Iterator[trio.CancelScope]:
        """The scope of one operation (the scheduler's or a client's); `cancel` cancels it.
        The steps past the switch are shielded inside it, so they finish either way."""
        with trio.CancelScope() as scope:
            self.op_scope = scope
            try:
                yield scope
            finally:
                self.op_scope = None

    def config(self) -> AppConfig:
        return self.daemon.config.apps[self.name]

    # -- what clients ask: one operation at a time, `busy` at once, cancel reaches it -------

    @contextlib.asynccontextmanager
    async def exclusive(self) -> AsyncIterator[trio.CancelScope]:
        """An operation for a client: never waits behind another one (Busy at once, with the
        phase and since when), and runs in a scope `cancel` can reach."""
        if self.lock.locked() and self.looking:  # a look's check: a second or so
            async with self.lock:
                pass
        if self.lock.locked():
            since = self.busy_since or time.time()
            raise Busy(f"{self.name} is busy: {self.phase} for {clock(time.time() - since)} "
                       f"(since {time.strftime('%H:%M:%S', time.localtime(since))}); "
                       f"`updaterctl cancel {self.name}` stops it", self.phase, since)
        async with self.lock:
            with self.running() as scope:
                yield scope

    async def check(self, force: bool, fresh: bool = False) -> Checked:
        async with self.exclusive():
            return await self.daemon.engine.check(self.name, force=force, fresh=fresh)
        raise CancelledByOperator(self.name)  # reached only when `cancel` stopped it

    async def update(self, version: str | None, now: bool) -> Updated:
        """Install the available (or `version`) now; with `now`, an update that waits for
        its window is taken over instead (it is the same one)."""
        if now and version is None and self.lock.locked() and self.phase == "waiting_window":
            return await self._take_over()
        async with self.exclusive() as scope:
            result = await self.daemon.engine.update(self.name, version, self.gate(now))
        if scope.cancelled_caught:
            raise CancelledByOperator(self.name)
        return result

    def gate(self, ignore_window: bool = False) -> WaitingGate:
        """The one gate an update of this app passes before its switch: the window (which
        `update --now` opens, or takes a waiting update over), then the inhibitors."""
        self.take_over = trio.Event()
        return WaitingGate(self.daemon.engine.window(self.name), ignore_window=ignore_window,
                           take_over=self.take_over, waiting=self._waiting_window,
                           inhibitors=self._wait_inhibitors)

    def _phase(self, phase: Phase, message: str, version: str | None = None) -> None:
        """A phase the worker itself is in (waiting, or idle again), told as the engine's are."""
        self.daemon.on_event(Event(app=self.name, kind="phase", phase=phase, message=message,
                                   version=version, at=time.time()))

    def _waiting_window(self, text: str) -> None:
        self._phase("waiting_window", text)

    async def _wait_inhibitors(self) -> None:
        """Wait while local programs hold inhibitors for the app, at most `max_inhibit`."""
        held = self.daemon.inhibitors.held
        if not held.get(self.name):
            return
        with trio.move_on_after(parse_duration(self.config().max_inhibit)) as scope:
            while holds := held.get(self.name):
                who = ", ".join(f"{h.who} ({h.why})" for h in holds)
                self._phase("waiting_inhibitors", f"waiting for inhibitors: {who}")
                await self.daemon.inhibitors.released()
        if scope.cancelled_caught:
            log.warning("%s: inhibitors still held after max_inhibit; going ahead", self.name)

    async def _take_over(self) -> Updated:
        before, version = self.state().installed, self.phase_version
        self.take_over.set()
        async with self.lock:  # the waiting update ends, one way or the other
            pass
        st = self.state()
        if version is not None and st.installed == version:
            return Updated(from_version=before, to_version=version, result="installed",
                           reason="the update that waited for its window, taken over")
        raise TakeOverFailed(
            f"{self.name}: the update that waited for its window did not install {version}: "
            f"{st.last_error or 'see `updaterctl history ' + self.name + '`'}", st.last_error)

    async def rollback(self, to: str | None, with_data: bool = False) -> RolledBack:
        async with self.exclusive():
            return await self.daemon.engine.rollback(self.name, to, with_data)
        raise CancelledByOperator(self.name)  # reached only when `cancel` stopped it

    async def prune(self, keep: int | None, force: bool) -> tuple[list[str], list[str]]:
        """Remove kept releases (`updaterctl prune`), between operations: never under one."""
        async with self.exclusive():
            return await self.daemon.engine.prune(self.name, keep, force)
        raise CancelledByOperator(self.name)  # reached only when `cancel` stopped it

    def reset_failed(self) -> None:
        """`updaterctl reset-failed`: the failure record goes (the counter its backoff reads,
        the last error), and a `failed` phase becomes `idle`; the next check comes at its
        interval."""
        self.daemon.engine.edit_state(self.name, lambda st, _limit: outcome.failure_cleared(st))
        self.failed_step = None
        if self.phase == "failed":
            self._phase("idle", "the failure record was cleared by the operator")
        self.schedule.poke()

    def cancel(self) -> CancelResult:
        """Stop a check, a download or a wait for the window, at once; never what is past
        the switch (it finishes or rolls back)."""
        phase = self.phase
        if self.op_scope is not None and phase not in PAST_SWITCH:
            self.op_scope.cancel()
            return CancelResult(cancelled=True, phase=phase,
                                message=f"{self.name}: cancelled while {phase}; nothing changed")
        if self.op_scope is not None:
            return CancelResult(cancelled=False, phase=phase,
                                message=f"{self.name} is past its switch ({phase}): it "
                                        "finishes or rolls back, and cannot be cancelled")
        if phase == "waiting_window":
            self.schedule.wake_in = None  # the scheduler's wait for the window, not an op
            self.schedule.poke()
            self._phase("idle", "the wait for the window was cancelled; the next check finds "
                                "the version again")
            return CancelResult(cancelled=True, phase=phase,
                                message=f"{self.name}: the wait for the window was cancelled")
        return CancelResult(cancelled=False, phase=phase,
                            message=f"{self.name} is {phase}: nothing to cancel")

    def state(self) -> AppState:
        return self.daemon.engine.load_state(self.name)

    async def run_cycle(self) -> float | None:
        """Check and update; outside the maintenance window only download, and come back when
        it opens (without holding the lock, so `updaterctl update --now` is not kept waiting)."""
        engine = self.daemon.engine
        async with self.lock:
            with self.running():
                if not self.config().auto_update:
                    await engine.prefetch(self.name)
                    return None
                window = engine.window(self.name)
                if window.wait() <= 0:
                    leaving = self.state().installed in self.state().recalled
                    await engine.update(self.name, gate=self.gate())
                    st = self.state()
                    if leaving and st.available not in (None, st.installed):
                        # back from a recalled release, with the fix already published: it
                        # is taken as a look's new release is, not at the next check
                        return self._within_jitter(st.available)
                    return None
                check = await engine.prefetch(self.name)
                if check.available is None:
                    return None
                self._phase("waiting_window",
                            f"{check.available} waits for the window ({window.opens_in()})",
                            check.available)
                return window.wait() + 1
        return None  # cancelled (`updaterctl cancel`): the next check comes as scheduled

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        with self.scope:
            task_status.started()
            async with self.lock:
                try:
                    await self.daemon.engine.recover(self.name)
                except UpdaterError as e:
                    log.error("%s: recovery failed: %s", self.name, e)
                self._resume_what_was_cut()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self.schedule.run)
                nursery.start_soon(self._watch)

    async def _watch(self) -> None:
        """Look at the feed every `watch_interval` between checks (updaterd.toml(5), J180): a recall
        moves the host back at once (through the usual gate: the scheduler's cycle), a yank
        or a halt is recorded at once by a check, and a new release is taken at a check
        drawn within `jitter`, so that publishing never starts a download herd. The first
        look is drawn within one interval, so hosts started together do not look together."""
        first = True
        while True:
            every = watch_seconds(self.config())
            if every is None:  # off (or GitHub): see again after a reload
                await trio.sleep(OFF_RECHECK)
                continue
            await trio.sleep(self.rng.uniform(0, every) if first else every)
            first = False
            if watch_seconds(self.config()) is not None:
                await self.look()

    async def look(self) -> None:
        """One look, and what it calls for. Skipped while an operation runs (it fetches the
        feed itself) or while the app is paused."""
        st = self.state()
        if self.lock.locked() or st.paused:
            return
        try:
            why = await self.daemon.engine.look(self.name, self.seen)
        except UpdaterError as e:  # the scheduled check reports a feed it cannot reach
            log.debug("%s: a look at the feed failed: %s", self.name, e)
            return
        if why is None or self.lock.locked():
            return
        before = (self.phase, self.message, self.phase_version)
        log.info("%s: %s since the last check; checking now", self.name, why)
        was_available = st.available
        try:
            async with self.lock:
                self.looking = True
                try:
                    with self.running() as scope:
                        checked = await self.daemon.engine.check(self.name)
                finally:
                    self.looking = False
        except UpdaterError:  # the operation has logged and recorded it
            return
        if scope.cancelled_caught:  # `updaterctl cancel`: the next look or check sees it
            return
        st = self.state()
        if before[0] == "waiting_window" and st.available == before[2]:
            self._phase("waiting_window", before[1], before[2])  # still waiting for it
        if checked.current is not None and checked.current in st.recalled:
            self.schedule.wake_in = 0.0  # the usual cycle moves it back (gate, inhibitors)
            self.schedule.poke()
        elif checked.available is not None and checked.available != was_available:
            draw = self._within_jitter(checked.available)
            waking = self.schedule.wake_in
            self.schedule.wake_in = draw if waking is None else min(waking, draw)
            self.schedule.poke()

    def _within_jitter(self, version: str | None) -> float:
        """When a release found between checks is taken: a check drawn within `jitter`, so
        that a fleet does not download it all at once."""
        draw = self.rng.uniform(0, parse_duration(self.config().jitter))
        log.info("%s: %s waits for a check in %s (jitter: a fleet does not download it all "
                 "at once)", self.name, version, clock(draw))
        return draw

    def _resume_what_was_cut(self) -> None:
        """An operation the last run left in progress (a stop, a crash, a power cut) goes on
        at once instead of at the next scheduled check, hours away; not when the same one was
        cut MAX_RESUMES starts in a row (it may be what brings the daemon down)."""
        st = self.state()
        if st.in_progress is None:
            return
        cut = st.in_progress
        cuts = 0

        def count(s: AppState, _limit: int) -> None:
            nonlocal cuts
            cuts = outcome.found_cut(s)

        self.daemon.engine.edit_state(self.name, count)
        if cuts > MAX_RESUMES:
            log.warning("%s: the last %s was cut at %d starts in a row; it waits for the next "
                        "scheduled check", self.name, cut, cuts)
            return
        log.info("%s: the last %s was cut (a stop, a crash or a power cut); checking now",
                 self.name, cut)
        self.schedule.wake_in = 0.0

    def observe(self, event: Event) -> None:
        """Keep what `status` and `metrics` show in step with the engine's events."""
        if event.kind == "phase":
            if self.phase in ("idle", "failed") and event.phase not in ("idle", "failed"):
                self.busy_since = time.time()
            self.phase, self.message = event.phase, event.message
            if event.version is not None:
                self.phase_version = event.version  # the version the operation is about
            if event.phase == "checking":
                self.counters.checks += 1
            if event.phase != "downloading":
                self.progress = None
        elif event.kind == "progress" and event.done is not None and event.total is not None:
            c = self.counters
            more = event.done - c._last_done if event.done >= c._last_done else event.done
            c.downloaded_bytes += more
            if event.plan == "delta":
                c.delta_bytes += more
            c._last_done = event.done if event.done < event.total else 0
            self.progress = (event.done, event.total)
        elif event.kind == "notice" and event.plan == "full":
            why = event.reason or "failed"
            self.counters.delta_fallbacks[why] = self.counters.delta_fallbacks.get(why, 0) + 1
        elif event.kind == "error" and event.outcome == "failed":
            self.counters.failures += 1
            self.failed_step = event.step
        elif event.kind == "result" and event.outcome == "rolled_back":
            self.counters.rollbacks += 1
