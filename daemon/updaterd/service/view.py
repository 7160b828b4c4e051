"""What the control socket and the metrics see of the running daemon.

`service.Daemon` and its `AppWorker`s satisfy these protocols; `api` and `metrics` are written
against them, so that neither needs the service (which builds on both).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from updaterctl.protocol import CancelResult, Phase
    from updaterd.engine.engine import Engine
    from updaterd.host.config import AppConfig, Config
    from updaterd.host.state import AppState
    from updaterd.reports import Checked, Event, RolledBack, Updated
    from updaterd.service.events import EventBus
    from updaterd.service.inhibitors import Inhibitors
    from updaterd.service.scheduler import Schedule


@dataclass
class Counters:
    checks: int = 0
    failures: int = 0
    rollbacks: int = 0
    downloaded_bytes: int = 0
    delta_bytes: int = 0  # of downloaded_bytes, those of delta descriptors and packs
    # deltas given up for the full artifact, by reason (reports.FALLBACK_REASONS)
    delta_fallbacks: dict[str, int] = field(default_factory=dict)
    _last_done: int = 0


class WorkerView(Protocol):
    """One app's worker: what it is doing, its schedule, its counters, and the operations
    clients ask of it (each one at a time: `Busy` at once when another runs)."""

    @property
    def name(self) -> str: ...
    @property
    def phase(self) -> Phase: ...
    @property
    def message(self) -> str: ...
    @property
    def progress(self) -> tuple[int, int] | None: ...
    @property
    def counters(self) -> Counters: ...
    @property
    def busy_since(self) -> float: ...
    @property
    def failed_step(self) -> str | None: ...
    @property
    def schedule(self) -> Schedule: ...

    def state(self) -> AppState: ...
    def config(self) -> AppConfig: ...
    async def check(self, force: bool, fresh: bool = False) -> Checked: ...
    async def update(self, version: str | None, now: bool) -> Updated: ...
    async def rollback(self, to: str | None, with_data: bool = False) -> RolledBack: ...
    def cancel(self) -> CancelResult: ...
    async def prune(self, keep: int | None, force: bool) -> tuple[list[str], list[str]]: ...
    def reset_failed(self) -> None: ...


class DaemonView(Protocol):
    """The daemon as a whole: its configuration, engine, event bus, inhibitors and workers."""

    @property
    def config(self) -> Config: ...
    @property
    def config_path(self) -> str: ...
    @property
    def started_at(self) -> float: ...
    @property
    def engine(self) -> Engine: ...
    @property
    def bus(self) -> EventBus: ...
    @property
    def inhibitors(self) -> Inhibitors: ...
    @property
    def workers(self) -> Mapping[str, WorkerView]: ...

    async def reload(self) -> None:
        """Read the configuration again; ConfigError leaves the old one in place."""
        ...

    def on_event(self, event: Event) -> None: ...
