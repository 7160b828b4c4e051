"""One operation on one app (a check, an update, a rollback), from its start to its end.

Every way out of an operation goes through here: a result, an UpdaterError, a cancellation, or
a bug. Each ends the same way, whoever started it (the scheduler or `updaterctl`): the outcome
recorded in the app's state (failure counter, last error, last success; history for a failed
update), one `result` or `error` event with a typed outcome, and the phase left `idle` or
`failed`, never `checking`. The daemon logs the event and counts it in the metrics; the
scheduler's retry backoff reads the failure counter (catalogue G142).

A request refused for its input (a version that is not there or not allowed, a path that is
not a backup: `PolicyError`) is not a failure: nothing was changed, so nothing is recorded as
failed, no failure is counted, no backoff starts, and the phase stays what it was (H158).
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Literal

import trio

from updaterctl.vocabulary import Outcome, Phase
from updaterd import logtext
from updaterd.errors import OperationCancelled, PolicyError, UpdaterError
from updaterd.host import outcome
from updaterd.install.apprun import AppRun
from updaterd.reports import Event

log = logging.getLogger("updaterd.operation")
Kind = Literal["check", "update", "rollback"]


class Operation:
    """The owner of one operation's outcome; `step` tracks where it is, for failure reports."""

    def __init__(self, run: AppRun, kind: Kind) -> None:
        self.run = run
        self.kind = kind
        self.version: str | None = None  # the version being installed, once chosen
        self.before = run.state.installed
        self.ended = False

    @property
    def step(self) -> Phase:
        """The last phase the operation reached (kept by AppRun.phase)."""
        return self.run.step

    def _emit(self, kind: Literal["result", "error"], outcome: Outcome, message: str,
              version: str | None) -> None:
        self.run.emit(Event(app=self.run.name, kind=kind, outcome=outcome,
                            message=logtext.clean(message),
                            version=version, step=self.step if kind == "error" else None,
                            at=time.time()))

    def _save(self) -> None:
        try:
            self.run.save()
        except (UpdaterError, OSError) as e:  # a full disk must not hide the outcome itself
            log.error("%s: cannot record the outcome: %s", self.run.name, e)

    def began(self) -> None:
        outcome.began(self.run.state, self.kind)
        self._save()

    def succeeded(self, result: Outcome, message: str = "", version: str | None = None) -> None:
        outcome.succeeded(self.run.state)
        outcome.ended(self.run.state)
        self._save()
        self.ended = True
        if message:
            self._emit("result", result, message, version)
        self.run.phase("idle", version=version)

    def failed(self, error: BaseException) -> str:
        """Record a failure; returns the message recorded as the app's last error."""
        text = str(error) if isinstance(error, UpdaterError) else \
            f"internal error ({type(error).__name__}: {error}); see the log"
        message = f"{self.version}: {text}" if self.version else text
        outcome.failed(self.run.state, message, self.kind)
        outcome.ended(self.run.state)
        if self.kind == "update" and self.version is not None:
            self.run.remember("failed", self.version, self.before, text)
        self._save()
        self.ended = True
        self._emit("error", "failed", f"{self.kind} failed at {self.step}: {message}",
                   self.version)
        self.run.phase("failed", version=self.version)
        return message

    def refused(self, error: PolicyError) -> None:
        """The request was refused for its input, before anything changed (H158)."""
        self.ended = True
        outcome.ended(self.run.state)
        self._save()
        log.info("%s: %s refused: %s", self.run.name, self.kind,
                 str(error).removeprefix(f"{self.run.name}: "))
        if self.step != "idle":  # a check ran first (update --version): it ended well
            self.run.phase("idle")

    def cancelled(self, why: str) -> None:
        self.ended = True
        what = f"{self.kind} of {self.version}" if self.version else self.kind
        if not self.run.hooks.stopping():  # an operator's cancel: nothing to resume
            outcome.ended(self.run.state)
        if self.version is not None:  # a check stopped at shutdown is no news for history
            self.run.remember("cancelled", self.version, self.before, why)
        self._save()
        self._emit("result", "cancelled", f"{what} cancelled at {self.step}: {why}",
                   self.version)
        self.run.phase("idle", version=self.version)


@asynccontextmanager
async def operation(run: AppRun, kind: Kind) -> AsyncIterator[Operation]:
    """Run the body as one operation: however it ends, the outcome is recorded once."""
    op = Operation(run, kind)
    run.step = "idle"
    op.began()
    try:
        yield op
    except trio.Cancelled:
        if not op.ended:
            op.cancelled("cancelled by the operator or at shutdown")
        raise
    except OperationCancelled as e:
        if not op.ended:
            op.cancelled(str(e))
        raise
    except PolicyError as e:
        if not op.ended:
            op.refused(e)
        raise
    except Exception as e:
        if not op.ended:
            op.failed(e)
            if not isinstance(e, UpdaterError):
                log.exception("%s: unexpected error in %s", run.name, kind)
        raise
