"""The daemon: one nursery holding the control socket, one worker per app, the watchdog and
the signal handling; sd_notify for systemd (READY, STATUS, WATCHDOG, RELOADING, STOPPING).

SIGTERM cancels everything; the steps of a transaction past its switch are shielded, so they
finish (or roll back) before the process exits. SIGHUP reloads the configuration; an invalid
one is refused and the old one kept.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path

import sdnotify
import trio

from updaterd import failpoints
from updaterd.engine.engine import Engine
from updaterd.errors import ConfigError, UpdaterError
from updaterd.host import configfile
from updaterd.host.config import Config
from updaterd.install import health, selfupdate
from updaterd.reports import Event
from updaterd.service import answers, metrics, metrics_http, rpc
from updaterd.service.api import ControlApi
from updaterd.service.events import EventBus
from updaterd.service.inhibitors import Inhibitors
from updaterd.service.worker import AppWorker

log = logging.getLogger("updaterd")


def _priority(event: Event) -> int:
    """The journal's priority of an event, by what it means: an operation that failed, or an
    update that had to be rolled back, is an error (`journalctl -p err` finds it); the rest
    is routine."""
    failed = event.kind == "error" or (event.kind == "result" and event.outcome == "rolled_back")
    return logging.ERROR if failed else logging.INFO


class Notifier:
    """sd_notify when NOTIFY_SOCKET is set; silent otherwise.

    The socket is non-blocking: when its queue is full (systemd busy, or a notify socket nobody
    reads; Linux queues 10 datagrams by default) a message is dropped, never waited for, so the
    daemon keeps serving (catalogue G141). The next STATUS= says the truth again.
    """

    def __init__(self) -> None:
        self._n: sdnotify.SystemdNotifier | None = None
        self.dropped = 0
        if not os.environ.get("NOTIFY_SOCKET"):
            return
        try:
            self._n = sdnotify.SystemdNotifier(debug=True)
            self._n.socket.setblocking(False)
        except OSError as e:
            log.warning("cannot reach the notify socket %s: %s", os.environ["NOTIFY_SOCKET"],
                        e.strerror or e)
            self._n = None

    def send(self, text: str) -> None:
        if self._n is None:
            return
        try:
            self._n.notify(text)
        except OSError as e:  # BlockingIOError: the queue is full
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 1000 == 0:
                log.warning("notify socket: %s; %d messages to systemd dropped so far",
                            e.strerror or e, self.dropped)


class Daemon:
    """Everything the running daemon holds, and how it starts, reloads and stops."""

    def __init__(self, config: Config, config_path: str) -> None:
        self.config = config
        self.config_path = config_path
        self.started_at = time.time()
        self.notifier = Notifier()
        # One generator for every app's jitter: a Random holds 2.5 KiB of state, a quarter of
        # what each app added to the idle daemon when each had its own.
        self.rng = random.Random()
        self.bus = EventBus()
        self.inhibitors = Inhibitors()
        self.stopping = False  # SIGTERM or SIGINT came: what dies by a signal now died with us
        self.engine = Engine(config, self.on_event, hand_over=self.hand_over,
                             stopping=lambda: self.stopping)
        self.workers: dict[str, AppWorker] = {}
        self.api = ControlApi(self)
        self._nursery: trio.Nursery | None = None
        self._sock: trio.socket.SocketType | None = None
        self._status = ""
        self.handover: Path | None = None  # set: re-execute into the updaterd of this prefix
        self.listen_fd: int | None = None  # the listening socket, kept open for the new daemon

    # -- events ---------------------------------------------------------------------------

    def on_event(self, event: Event) -> None:
        worker = self.workers.get(event.app)
        if worker is not None:
            worker.observe(event)
        if event.kind in ("phase", "result", "error") and event.message:
            log.log(_priority(event), "%s: %s", event.app, event.message)
        self.bus.publish(answers.event(event))
        if event.kind != "progress":
            self._notify_status()

    def _notify_status(self) -> None:
        busy = [f"{w.name}: {w.phase}" for w in self.workers.values() if w.phase != "idle"]
        text = ", ".join(busy) if busy else f"idle, {len(self.workers)} apps"
        if text != self._status:
            self._status = text
            self.notifier.send(f"STATUS={text}")

    def hand_over(self, prefix: Path) -> None:
        """updaterd itself was switched: stop serving and, once out of trio, re-execute into
        the new version (`serve` does), keeping the listening socket open for it."""
        if self.handover is not None or self._nursery is None or self._sock is None:
            return
        self.handover = prefix
        self.listen_fd = os.dup(self._sock.fileno())
        self._nursery.start_soon(self._stop_for_handover)

    async def _stop_for_handover(self) -> None:
        await trio.sleep(0.2)  # the answer to `updaterctl update` reaches its client first
        log.info("handing over to the updaterd in %s", self.handover)
        self.notifier.send(f"RELOADING=1\nMONOTONIC_USEC={time.monotonic_ns() // 1000}\n"
                           "STATUS=handing over to the new version")
        assert self._nursery is not None
        self._nursery.cancel_scope.cancel()

    # -- lifecycle ------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        server = rpc.Server(self.api.handlers(), lambda: self.config.daemon.admin_group,
                            rpc.Limits.from_config(self.config.limits))
        sock_path = Path(self.config.daemon.socket)
        handed = selfupdate.adopt_listener(sock_path)
        if handed is not None:
            sock = trio.socket.from_stdlib_socket(handed)
            log.info("serving the socket handed over by the previous updaterd")
        else:
            sock = rpc.create_socket(sock_path, int(self.config.daemon.socket_mode, 8),
                                     self.config.daemon.admin_group)
        self._sock = sock
        try:
            # the signals are ours before any work starts: a worker's first step may finish a
            # journaled rollback, and a SIGTERM before the receiver is open would end the daemon
            # in the middle of it (Python's default action) instead of letting it finish
            with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT,
                                           signal.SIGHUP) as signals:
                async with trio.open_nursery() as nursery:
                    self._nursery = nursery
                    await nursery.start(server.serve, sock)
                    if self.config.daemon.metrics_listen is not None:
                        await nursery.start(metrics_http.serve,
                                            self.config.daemon.metrics_listen,
                                            lambda: metrics.render(self))
                    for name in self.config.apps:
                        await self._start_worker(name)
                    self.notifier.send("READY=1")
                    self._notify_status()
                    log.info("ready: %d apps, socket %s", len(self.workers), sock_path)
                    nursery.start_soon(self._watchdog)
                    nursery.start_soon(health.tend_outputs_forever)
                    task_status.started()
                    await self._signals(nursery, signals)
        finally:
            with contextlib.suppress(OSError):
                if self.handover is None and sock_path.is_socket():
                    sock_path.unlink()

    async def _start_worker(self, name: str) -> None:
        assert self._nursery is not None
        worker = AppWorker(name, self, self.rng)
        self.workers[name] = worker
        await self._nursery.start(worker.run)

    async def _signals(self, nursery: trio.Nursery, signals: AsyncIterator[int]) -> None:
        """SIGHUP reloads; SIGTERM and SIGINT stop (those that came during the start too)."""
        async for signum in signals:
            if signum == signal.SIGHUP:
                self.notifier.send(f"RELOADING=1\nMONOTONIC_USEC={time.monotonic_ns() // 1000}")
                with contextlib.suppress(ConfigError):  # reload() logged why
                    await self.reload()
                self.notifier.send("READY=1")
                continue
            log.info("stopping (signal %d)", signum)
            self.stopping = True
            self.notifier.send("STOPPING=1")
            nursery.cancel_scope.cancel()
            return

    async def _watchdog(self) -> None:
        usec = os.environ.get("WATCHDOG_USEC")
        if not usec or not usec.isdigit():
            return
        interval = int(usec) / 2e6
        while True:
            failpoints.hit("watchdog.ping")
            self.notifier.send("WATCHDOG=1")
            await trio.sleep(interval)

    async def reload(self) -> None:
        """Re-read the configuration file; raises ConfigError (old config kept) when invalid,
        after logging each problem, whether SIGHUP or `updaterctl reload` asked."""
        try:
            new = configfile.load(self.config_path)
        except ConfigError as e:
            for line in e.problems:
                log.error("reload refused: %s", line)
            log.error("keeping the old configuration")
            raise
        old = self.config
        if new.daemon.socket != old.daemon.socket or new.daemon.lock_file != old.daemon.lock_file:
            log.warning("socket and lock_file changes take effect at the next start")
        elif (new.daemon.socket_mode, new.daemon.admin_group) != \
                (old.daemon.socket_mode, old.daemon.admin_group):
            rpc.set_socket_access(Path(new.daemon.socket), int(new.daemon.socket_mode, 8),
                                  new.daemon.admin_group)
            log.info("socket %s is now mode %s, group %s", new.daemon.socket,
                     new.daemon.socket_mode, new.daemon.admin_group)
        self.config = new
        self.engine.reconfigure(new)
        for name in list(self.workers):
            if name not in new.apps:
                self.workers.pop(name).scope.cancel()
                log.info("%s: removed from the configuration", name)
        for name in new.apps:
            if name in self.workers:
                self.workers[name].schedule.poke()
            else:
                await self._start_worker(name)
                log.info("%s: added", name)
        log.info("configuration reloaded from %s", self.config_path)


def serve(config: Config, config_path: str) -> None:
    """Run the daemon until SIGTERM (the caller holds the process lock), or until it hands
    over to a new version of itself: then this process becomes that version."""
    daemon = Daemon(config, str(Path(config_path).absolute()))
    trio.run(daemon.run)
    if daemon.handover is not None:
        try:
            selfupdate.reexec(daemon.handover, daemon.listen_fd)
        except OSError as e:
            raise UpdaterError(f"cannot re-execute {selfupdate.exec_path(daemon.handover)}: "
                               f"{e.strerror or e}") from None
