"""The scheduler under trio's MockClock: interval, jitter, exponential backoff that resets on
success, no early check after a restart, pause. No real sleeping."""

from __future__ import annotations

import random

import trio
import trio.testing

from updaterd.errors import DownloadError
from updaterd.host.config import AppConfig
from updaterd.host.state import AppState
from updaterd.service.scheduler import Schedule

BASE = 1_800_000_000.0  # wall time at trio time 0


class FakeApp:
    """A Cycle whose checks are recorded (in trio time) and may fail on demand."""

    name = "demo"

    def __init__(self, cfg: AppConfig, state: AppState, fail: list[bool] | None = None) -> None:
        self.cfg, self.st = cfg, state
        self.fail = list(fail or [])
        self.runs: list[float] = []

    def config(self) -> AppConfig:
        return self.cfg

    def state(self) -> AppState:
        return self.st

    async def run_cycle(self) -> float | None:
        now = trio.current_time()
        self.runs.append(now)
        self.st.last_check = BASE + now
        if self.fail and self.fail.pop(0):
            self.st.consecutive_failures += 1
            raise DownloadError("simulated failure")
        self.st.consecutive_failures = 0
        return None


def cfg(**kw: object) -> AppConfig:
    return AppConfig(source="directory", path="/f", prefix="/p", **kw)  # type: ignore[arg-type]


def run_for(app: FakeApp, seconds: float, seed: int = 1) -> Schedule:
    schedule = Schedule(app, rng=random.Random(seed), wall=lambda: BASE + trio.current_time())

    async def main() -> None:
        with trio.move_on_after(seconds):
            await schedule.run()

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    return schedule


def test_first_check_at_once_then_every_interval() -> None:
    app = FakeApp(cfg(check_interval="1h", jitter="0s"), AppState())
    run_for(app, 3 * 3600 + 1)
    assert app.runs == [0, 3600, 7200, 10800]


def test_jitter_spreads_checks_within_bounds() -> None:
    app = FakeApp(cfg(check_interval="1h", jitter="10m"), AppState(last_check=BASE))
    run_for(app, 10 * 4200)
    gaps = [b - a for a, b in zip(app.runs, app.runs[1:], strict=False)]
    assert all(3600 <= g <= 4200 for g in gaps)
    assert len({round(g) for g in gaps}) > 3, "jitter is drawn anew for every check"
    assert 3600 <= app.runs[0] <= 4200


def test_restart_does_not_check_early() -> None:
    app = FakeApp(cfg(check_interval="1h", jitter="0s"), AppState(last_check=BASE - 3000))
    run_for(app, 700)
    assert app.runs == [600]


def test_failures_back_off_exponentially_capped_and_reset_on_success() -> None:
    app = FakeApp(cfg(check_interval="30m", jitter="0s"), AppState(),
                  fail=[True, True, True, True, True, True, False, False])
    run_for(app, 4 * 3600)
    gaps = [b - a for a, b in zip(app.runs, app.runs[1:], strict=False)]
    assert gaps[:7] == [60, 120, 240, 480, 960, 1800, 1800]  # capped at the interval
    assert app.st.consecutive_failures == 0


def test_paused_app_is_not_checked_until_resumed() -> None:
    app = FakeApp(cfg(check_interval="1h", jitter="0s"), AppState(paused=True))
    schedule = Schedule(app, rng=random.Random(1), wall=lambda: BASE + trio.current_time())

    async def main() -> None:
        async with trio.open_nursery() as n:
            n.start_soon(schedule.run)
            await trio.sleep(5000)
            assert app.runs == [] and schedule.next_check is None
            app.st.paused = False
            schedule.poke()
            await trio.sleep(1)
            n.cancel_scope.cancel()

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    assert app.runs == [5000]


def test_rate_limit_pushes_the_next_check_past_the_reset() -> None:
    app = FakeApp(cfg(check_interval="10m", jitter="0s"),
                  AppState(last_check=BASE, rate_limited_until=BASE + 5000))
    run_for(app, 5001)
    assert app.runs == [5000]


def test_an_unexpected_error_does_not_stop_the_schedule() -> None:
    class Broken(FakeApp):
        async def run_cycle(self) -> float | None:
            self.runs.append(trio.current_time())
            self.st.last_check = BASE + trio.current_time()
            if len(self.runs) == 1:
                raise OSError(28, "No space left on device")
            return None

    app = Broken(cfg(check_interval="1h", jitter="0s"), AppState())
    run_for(app, 3601)
    assert app.runs == [0, 3600]


def test_d77_backoff_survives_a_restart(tmp_path: object) -> None:
    """Three failures, then a restart: the state on disk carries them, and the new schedule
    waits the third backoff step (240 s after the last check), not the interval or nothing."""
    from pathlib import Path

    from updaterd.host import state

    folder = Path(str(tmp_path))
    before = FakeApp(cfg(check_interval="1h", jitter="0s"), AppState(),
                     fail=[True, True, True])
    run_for(before, 60 + 120 + 1)  # three failed checks: at 0, 60 and 180
    assert before.runs == [0, 60, 180] and before.st.consecutive_failures == 3
    state.save(folder, "demo", before.st)
    restarted = FakeApp(cfg(check_interval="1h", jitter="0s"), state.load(folder, "demo"))
    # the new process starts 100 s after the last failed check
    restarted.st.last_check = BASE - 100
    run_for(restarted, 1000)
    assert restarted.runs == [240 - 100]  # 60 * 2^2 s after the last check
