"""The engine's reports in the wire's types: the one place that knows both, so that the engine
speaks its own (`reports.py`) and only the control socket speaks the wire."""

from __future__ import annotations

from updaterctl.protocol import CheckResult, Event, RollbackResult, UpdateResult
from updaterd import reports


def event(e: reports.Event) -> Event:
    return Event(app=e.app, kind=e.kind, phase=e.phase, message=e.message, version=e.version,
                 done=e.done, total=e.total, at=e.at, outcome=e.outcome, step=e.step,
                 plan=e.plan, reason=e.reason)


def checked(c: reports.Checked) -> CheckResult:
    return CheckResult(current=c.current, available=c.available, checked_at=c.checked_at,
                       passed_over=c.passed_over)


def updated(u: reports.Updated) -> UpdateResult:
    return UpdateResult(from_version=u.from_version, to_version=u.to_version, result=u.result,
                        reason=u.reason)


def rolled_back(r: reports.RolledBack) -> RollbackResult:
    return RollbackResult(from_version=r.from_version, to_version=r.to_version,
                          forward=r.forward, with_data=r.with_data)
