"""How a switched version comes to run, and what a commit or a rollback ends with.

An app is restarted by its `restart` command (`AppRestart`). updaterd itself cannot restart
under its own feet: the old daemon tries the new release and hands over to it, the new daemon
finishes the health check, and a launcher counts the starts of a version on trial
(`SelfHandOver`, over `selfupdate`). The transaction calls these hooks and knows nothing of
self-update; the engine picks the one an app's configuration asks for (`Engine.open_app`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path

from updaterd import failpoints
from updaterd.errors import HealthCheckFailed
from updaterd.install import health, selfupdate
from updaterd.install.apprun import AppRun

log = logging.getLogger("updaterd.transaction")
HandOver = Callable[[Path], None]


class AppRestart:
    """An application: its `restart` command after a switch, nothing else."""

    def running(self) -> str | None:
        return None

    async def start(self, run: AppRun, from_version: str | None, version: str,
                    env: dict[str, str], timeout: float) -> bool:
        if run.cfg.restart:
            run.phase("restarting", version=version)
            await health.run("restart", run.cfg.restart, cwd=run.layout.run_dir(version),
                             timeout=timeout, env=env, passed=run.cfg.pass_environment,
                             output=run.state_folder / health.OUTPUT_FILE)
        return True

    async def restart_back(self, run: AppRun, to_version: str, env: dict[str, str],
                           timeout: float) -> None:
        if not run.cfg.restart:
            return
        try:
            await health.run("restart", run.cfg.restart, cwd=run.layout.run_dir(to_version),
                             timeout=timeout, env=env, passed=run.cfg.pass_environment,
                             output=run.state_folder / health.OUTPUT_FILE)
        except HealthCheckFailed as e:
            log.error("%s: restart after rolling back to %s failed: %s", run.name, to_version, e)

    def committed(self, run: AppRun) -> None:
        return None

    def rolled_back(self, run: AppRun, to_version: str | None) -> None:
        return None

    def gave_up(self) -> dict[str, str]:
        return {}


class SelfHandOver:
    """updaterd itself (`self = true`), installed in `prefix`: a switch is followed by a
    hand-over to the new code (`hand_over`; without it the next start finishes)."""

    def __init__(self, prefix: Path, hand_over: HandOver | None) -> None:
        self.prefix = prefix
        self.hand_over = hand_over

    def running(self) -> str | None:
        return selfupdate.running_version()

    async def start(self, run: AppRun, from_version: str | None, version: str,
                    env: dict[str, str], timeout: float) -> bool:
        if self.running() == version:
            return True  # the new code runs: it finishes the health check
        run.phase("health_check", f"trying updaterd {version} before handing over", version)
        await selfupdate.try_release(run.layout.run_dir(version), version,
                                     os.path.abspath(run.config.path), timeout)
        selfupdate.start_trial(self.prefix, version, from_version)
        failpoints.hit("handover.after_trial")
        run.phase("restarting", f"handing over to updaterd {version}", version)
        if self.hand_over is not None:
            self.hand_over(self.prefix)
        else:
            log.warning("%s: no daemon to hand over to: the next start of %s finishes the "
                        "update (an updaterd started from elsewhere never will)", run.name,
                        selfupdate.exec_path(self.prefix))
        return False

    async def restart_back(self, run: AppRun, to_version: str, env: dict[str, str],
                           timeout: float) -> None:
        return None  # the code that runs is the one that says what comes next (rolled_back)

    def committed(self, run: AppRun) -> None:
        selfupdate.end_trial(self.prefix)

    def rolled_back(self, run: AppRun, to_version: str | None) -> None:
        selfupdate.end_trial(self.prefix)
        if self.running() != to_version and self.hand_over is not None:
            self.hand_over(self.prefix)

    def gave_up(self) -> dict[str, str]:
        version = selfupdate.take_failed(self.prefix)
        if version is None:
            return {}
        return {version: f"updaterd {version} did not come up in "
                         f"{selfupdate.MAX_TRIAL_STARTS} starts; the launcher went back"}
