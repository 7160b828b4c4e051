"""updaterd updating itself (`self = true`), end to end.

A temporary virtual environment holds the runtime dependencies; `updaterd self-install` makes a
prefix of the code under test; the daemon runs from that prefix's launcher under a restart loop
(what systemd's Restart=on-failure does). Newer builds of updaterd itself, made with
`updaterd self-build` (some broken on purpose), are published to a local signed feed.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import BIN, run_updaterd, self_build, write_config
from updaterd import failpoints
from updaterd.install import selfupdate
from updaterd.release.publish import keygen, publish


def _make_venv(path: Path) -> Path:
    """A fresh venv whose interpreter sees this environment's dependencies (not updaterd)."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(path)], check=True)
    site = next((path / "lib").glob("python3*/site-packages"))
    deps = next(p for p in sys.path if p.endswith("site-packages") and Path(p, "trio").is_dir())
    (site / "deps.pth").write_text(deps + "\n")
    return path / "bin" / "python"


@dataclass
class SelfHost:
    base: Path
    python: Path
    proc: subprocess.Popen[bytes] | None = None
    polls: list[tuple[float, bool]] = field(default_factory=list)

    @property
    def prefix(self) -> Path:
        return self.base / "opt" / "updaterd"

    @property
    def socket(self) -> Path:
        return self.base / "run" / "updaterd.sock"

    @property
    def feed(self) -> Path:
        return self.base / "feed"

    @property
    def log(self) -> Path:
        return self.base / "daemon.log"

    def setup(self) -> None:
        r = run_updaterd("self-install", "--prefix", self.prefix, "--python", self.python)
        assert r.returncode == 0, r.stderr
        pub, self.key = keygen(str(self.base / "feed-key"))
        self.pub = pub.read_text().splitlines()[1]
        (self.base / "run").mkdir()
        self.configure()

    def configure(self, **app: Any) -> None:
        write_config(self.base / "updaterd.toml", {
            "socket": str(self.socket), "state_dir": str(self.base / "state"),
            "cache_dir": str(self.base / "cache"), "lock_file": str(self.base / "run" / "lock"),
        }, {"updaterd": {
            "source": "manifest", "url": f"file://{self.feed}/manifest.json",
            "public_keys": [self.pub], "prefix": str(self.prefix),
            "self": True, "auto_update": False, "health_timeout": "20s", "retain": 5,
            # as documented: the new release's own updaterctl reaches the new daemon on the
            # configured (here not the default) socket through UPDATERD_SOCKET
            "health_check": ["bin/updaterctl", "status"], **app,
        }})

    def build(self, version: str, patch: dict[str, tuple[str, str]] | None = None) -> Path:
        """`updaterd self-build` as `version`; `patch` edits files of the build (broken ones)."""
        return self_build(self.base / "dist", version, patch)

    def publish(self, version: str, **patch: Any) -> None:
        publish(feed_dir=self.feed, key_path=self.key, app="updaterd", version=version,
                artifacts=[self.build(version, **patch)])

    def start(self, failpoint: str = "") -> None:
        """The launcher under a restart loop, as systemd's Restart=on-failure would run it."""
        env = {k: v for k, v in os.environ.items() if k != "UPDATERD_FAILPOINTS"}
        if failpoint:
            env["UPDATERD_FAILPOINTS"] = f"{failpoint}=kill"
        self.logfile = open(self.log, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            ["sh", "-c", 'until "$0" --config "$1"; do sleep 0.3; done',
             str(self.prefix / "launcher"), str(self.base / "updaterd.toml")],
            stdout=self.logfile, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        self.wait_for(lambda: self.socket.exists() and self.status() is not None, "the socket")

    def stop(self) -> None:
        if self.proc is not None:
            with_group = os.getpgid(self.proc.pid)
            os.killpg(with_group, signal.SIGTERM)
            self.proc.wait(20)
            self.logfile.close()

    def ctl(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(BIN / "updaterctl"), "--socket", str(self.socket), *args],
                              capture_output=True, text=True, timeout=60)

    def status(self) -> dict[str, Any] | None:
        r = self.ctl("--json", "status")
        return json.loads(r.stdout) if r.returncode == 0 else None

    def state(self) -> dict[str, Any]:
        return json.loads((self.base / "state" / "updaterd" / "state.json").read_text())

    def wait_for(self, predicate: Any, what: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return
            time.sleep(0.1)
        raise AssertionError(f"timed out waiting for {what}\n{self.log.read_text()}")

    def settled_on(self, version: str) -> bool:
        s = self.status()
        return s is not None and s["daemon"]["version"] == version and \
            s["apps"][0]["current"] == version and s["apps"][0]["phase"] == "idle" and \
            self.state()["pending"] is None

    def poll_while(self, stop: threading.Event) -> None:
        """Ask for the status every 50 ms until `stop`; record when and whether it answered."""
        while not stop.is_set():
            self.polls.append((time.monotonic(), self.status() is not None))
            time.sleep(0.05)

    def longest_silence(self) -> float:
        answered = [t for t, ok in self.polls if ok]
        return max((b - a for a, b in itertools.pairwise(answered)), default=0.0)


@pytest.fixture(scope="module")
def venv_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _make_venv(tmp_path_factory.mktemp("venv") / "venv")


@pytest.fixture
def self_host(tmp_path: Path, venv_python: Path) -> Iterator[SelfHost]:
    h = SelfHost(tmp_path, venv_python)
    h.setup()
    yield h
    h.stop()


def _update(h: SelfHost, version: str) -> subprocess.CompletedProcess[str]:
    return h.ctl("update", "updaterd", "--version", version)


def test_self_install_runs_the_code_from_the_prefix(self_host: SelfHost) -> None:
    h = self_host
    assert os.readlink(h.prefix / "current") == "releases/0.1.0"
    r = subprocess.run([str(h.prefix / "bin" / "updaterd"), "--version"], capture_output=True,
                       text=True, check=True)
    assert r.stdout.strip() == "updaterd 0.1.0"
    where = subprocess.run(
        [str(h.prefix / "python"), "-I", "-c", "import trio, updaterd; print(updaterd.__file__)"],
        capture_output=True, text=True)
    assert where.returncode != 0, "the venv itself must not hold updaterd: only the prefix does"
    again = run_updaterd("self-install", "--prefix", h.prefix, "--python", h.python)
    assert again.returncode == 1 and "already an installation" in again.stderr


def test_running_daemon_is_replaced_by_the_new_version(self_host: SelfHost) -> None:
    h = self_host
    h.publish("0.2.0")
    h.start()
    before = h.status()
    assert before is not None and before["daemon"]["version"] == "0.1.0"
    stop = threading.Event()
    poller = threading.Thread(target=h.poll_while, args=(stop,))
    poller.start()
    try:
        r = _update(h, "0.2.0")
        assert r.returncode == 0, r.stderr
        assert "0.2.0 is in place" in r.stdout
        assert "installed 0.2.0; the new updaterd passed its health check" in r.stdout
        h.wait_for(lambda: h.settled_on("0.2.0"), "updaterd 0.2.0 to take over")
        time.sleep(0.5)
    finally:
        stop.set()
        poller.join()
    after = h.status()
    assert after is not None
    assert after["daemon"]["pid"] == before["daemon"]["pid"], "re-executed in place"
    assert os.readlink(h.prefix / "current") == "releases/0.2.0"
    state = h.state()
    assert state["installed"] == "0.2.0" and state["previous"] == "0.1.0"
    assert state["history"][-1]["action"] == "installed"
    assert not (h.prefix / selfupdate.TRIAL).exists()
    failed = sum(1 for _, ok in h.polls if not ok)
    assert h.longest_silence() < 3.0, (h.longest_silence(), failed)
    log = h.log.read_text()
    assert "serving the socket handed over by the previous updaterd" in log
    print(f"\nself-update: {len(h.polls)} status calls during the hand-over, {failed} failed, "
          f"longest silence {h.longest_silence():.2f}s")


@pytest.mark.parametrize("point", failpoints.HANDOVER)
def test_kill_during_the_hand_over_ends_on_the_new_version(self_host: SelfHost,
                                                           point: str) -> None:
    """kill -9 between the trial mark and the exec: the restart runs the launcher, which
    counts a start of the new version, and the new daemon finishes the update."""
    h = self_host
    h.publish("0.2.0")
    h.start(failpoint=point)
    pid = h.status()["daemon"]["pid"]  # type: ignore[index]
    h.ctl("update", "updaterd", "--version", "0.2.0")  # the answer may be lost with the process
    h.wait_for(lambda: h.settled_on("0.2.0"), "0.2.0 after the crash")
    assert h.status()["daemon"]["pid"] != pid, "the failpoint killed the old daemon"
    assert h.state()["history"][-1]["action"] == "installed"
    assert not (h.prefix / selfupdate.TRIAL).exists()


def _running_020_then_update_to(h: SelfHost, version: str,
                                patch: dict[str, tuple[str, str]]) -> int:
    """Publish 0.2.0 and a broken `version`; run 0.2.0, then ask for `version`, which
    `updaterctl update` reports as failed once the verdict is in; the pid."""
    h.publish("0.2.0")
    h.publish(version, patch=patch)
    h.start()
    pid = int(h.status()["daemon"]["pid"])  # type: ignore[index]
    assert _update(h, "0.2.0").returncode == 0
    h.wait_for(lambda: h.settled_on("0.2.0"), "0.2.0")
    r = _update(h, version)
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert f"updaterd {version} was rolled back and blocked" in r.stderr
    return pid


def test_failed_health_check_of_the_new_daemon_restores_the_old(self_host: SelfHost) -> None:
    h = self_host
    # 0.3.0 ships an updaterctl that fails: the health check, run by the new daemon, fails
    pid = _running_020_then_update_to(h, "0.3.0", {"lib/updaterctl/cli.py": (
        "def main(argv: list[str] | None = None) -> int:\n",
        "def main(argv: list[str] | None = None) -> int:\n    return 3\n")})
    h.wait_for(lambda: h.state()["history"][-1]["action"] == "blocked" and h.settled_on("0.2.0"),
               "0.3.0 to be rolled back")
    state = h.state()
    assert state["blocked"] == ["0.3.0"] and state["installed"] == "0.2.0"
    assert "health check" in state["history"][-1]["reason"]
    assert h.status()["daemon"]["pid"] == pid  # type: ignore[index]
    assert os.readlink(h.prefix / "current") == "releases/0.2.0"
    assert "updaterd 0.3.0 took over" in h.log.read_text()
    assert not (h.prefix / selfupdate.TRIAL).exists()
    # the blocked 0.3.0 was the running code when it rolled back: its folder is not deleted
    # under it (retain removes it later)
    assert (h.prefix / "releases" / "0.3.0").is_dir()


def test_new_version_that_cannot_start_is_abandoned_by_the_launcher(self_host: SelfHost) -> None:
    h = self_host
    # 0.4.0 answers --version and check-config, but the daemon dies as it starts
    _running_020_then_update_to(h, "0.4.0", {"lib/updaterd/service/service.py": (
        '    daemon = Daemon(config, str(Path(config_path).absolute()))\n',
        '    raise SystemExit(70)\n')})
    h.wait_for(lambda: h.state()["blocked"] == ["0.4.0"] and h.settled_on("0.2.0"),
               "the launcher to go back to 0.2.0", timeout=60)
    log = h.log.read_text()
    assert f"did not commit after {selfupdate.MAX_TRIAL_STARTS} starts" in log
    assert "finishing an interrupted update 0.2.0 -> 0.4.0" in log
    assert (f"updaterd 0.4.0 did not come up in {selfupdate.MAX_TRIAL_STARTS} starts; the "
            "launcher went back") in log, "the version running says why it undid the update"
    assert "updaterd 0.4.0 took over" not in log, "0.2.0 undid it: 0.4.0 never ran"
    state = h.state()
    assert state["installed"] == "0.2.0"
    assert "did not come up" in state["history"][-1]["reason"]
    assert not (h.prefix / selfupdate.TRIAL).exists()
    assert not (h.prefix / selfupdate.FAILED).exists()


def test_broken_build_is_refused_before_the_hand_over(self_host: SelfHost) -> None:
    h = self_host
    # 0.5.0 says the wrong version: the old daemon tries it as a child and never hands over
    h.publish("0.5.0", patch={"lib/updaterctl/_version.py": ('"0.5.0"', '"0.4.9"')})
    h.start()
    pid = h.status()["daemon"]["pid"]  # type: ignore[index]
    r = _update(h, "0.5.0")
    assert r.returncode != 0 and "--version says" in r.stderr, r.stderr
    status = h.status()
    assert status is not None and status["daemon"]["pid"] == pid
    assert status["daemon"]["version"] == "0.1.0"
    assert h.state()["blocked"] == ["0.5.0"]
    assert os.readlink(h.prefix / "current") == "releases/0.1.0"
    assert "handing over to the updaterd" not in h.log.read_text()


def test_rollback_of_updaterd_re_executes_the_older_version(self_host: SelfHost) -> None:
    h = self_host
    h.publish("0.2.0")
    h.start()
    pid = h.status()["daemon"]["pid"]  # type: ignore[index]
    assert _update(h, "0.2.0").returncode == 0
    h.wait_for(lambda: h.settled_on("0.2.0"), "0.2.0")
    r = h.ctl("rollback", "updaterd", "--to", "0.1.0")
    assert r.returncode == 0, r.stderr
    h.wait_for(lambda: h.settled_on("0.1.0"), "the rollback to 0.1.0")
    assert h.status()["daemon"]["pid"] == pid  # type: ignore[index]
    # and forward again to the kept 0.2.0: the daemon re-executes into the newer version too
    r = h.ctl("rollback", "updaterd", "--to", "0.2.0")
    assert r.returncode == 0, r.stderr
    h.wait_for(lambda: h.settled_on("0.2.0"), "the move forward to 0.2.0")
    assert h.status()["daemon"]["pid"] == pid  # type: ignore[index]


def test_j177_a_recall_of_updaterd_re_executes_the_release_it_ran_before(
        self_host: SelfHost) -> None:
    """The 3 a.m. path for updaterd itself: 0.2.0 (guarded, passing its checks) is recalled;
    the next look finds it, and the daemon goes back to 0.1.0 by re-executing, blocks 0.2.0
    and stays there."""
    from updaterd.release import controller
    from updaterd.trust import minisign

    h = self_host
    secret = minisign.SecretKey.generate()
    h.configure(auto_update=True, watch_interval="1s", jitter="1h")
    publish(feed_dir=h.feed, key_path=h.key, app="updaterd", version="0.2.0",
            artifacts=[h.build("0.2.0")], rollout_keys=[secret.public.to_base64()])
    controller.set_state(h.feed, secret, "0.2.0", "active", "", share=100)
    h.start()
    pid = h.status()["daemon"]["pid"]  # type: ignore[index]
    assert _update(h, "0.2.0").returncode == 0
    h.wait_for(lambda: h.settled_on("0.2.0"), "0.2.0")
    controller.set_state(h.feed, secret, "0.2.0", "recalled", "corrupts data")
    h.wait_for(lambda: h.settled_on("0.1.0"), "the recall back to 0.1.0")
    assert h.status()["daemon"]["pid"] == pid  # type: ignore[index]
    assert h.state()["blocked"] == ["0.2.0"] and h.state()["recall_blocked"] == ["0.2.0"]
    assert "0.2.0 is recalled by its rollout: corrupts data; going back to 0.1.0" in \
        h.log.read_text()
    time.sleep(2)  # further looks: it stays
    assert h.settled_on("0.1.0")


def test_launcher_counts_starts_and_goes_back(tmp_path: Path, venv_python: Path) -> None:
    """The launcher alone: a release whose updaterd always fails, started MAX times."""
    prefix = tmp_path / "opt"
    assert run_updaterd("self-install", "--prefix", prefix, "--python",
                        venv_python).returncode == 0
    bad = prefix / "releases" / "9.0.0"
    (bad / "bin").mkdir(parents=True)
    (bad / "bin" / "updaterd").write_text("#!/bin/sh\nexit 70\n")
    (bad / "bin" / "updaterd").chmod(0o755)
    os.replace(_symlink(prefix, "releases/9.0.0"), prefix / "current")
    selfupdate.start_trial(prefix, "9.0.0", "0.1.0")
    codes = [subprocess.run([str(prefix / "launcher"), "--version"], capture_output=True,
                            text=True) for _ in range(selfupdate.MAX_TRIAL_STARTS + 1)]
    assert [c.returncode for c in codes] == [70] * selfupdate.MAX_TRIAL_STARTS + [0]
    assert codes[-1].stdout.strip() == "updaterd 0.1.0"
    assert "going back to 0.1.0" in codes[-1].stderr
    assert os.readlink(prefix / "current") == "releases/0.1.0"
    assert selfupdate.take_failed(prefix) == "9.0.0"
    assert selfupdate.take_failed(prefix) is None
    assert not (prefix / selfupdate.TRIAL).exists()


@pytest.mark.parametrize("trial", ["../../etc x; 99", ".. .. 9", "9.0.0 .. 9", "9.0.0 7.7.7 9",
                                   "9.0.0 0.1.0/../.. 9", "9.0.0", "", "$(touch pwned) 0.1.0 9"])
def test_launcher_ignores_a_malformed_trial_file(tmp_path: Path, venv_python: Path,
                                                 trial: str) -> None:
    """Never a link to somewhere else than an existing release (7.7.7 does not exist)."""
    prefix = tmp_path / "opt"
    assert run_updaterd("self-install", "--prefix", prefix, "--python",
                        venv_python).returncode == 0
    (prefix / selfupdate.TRIAL).write_text(trial + "\n")
    r = subprocess.run([str(prefix / "launcher"), "--version"], capture_output=True, text=True,
                       cwd=tmp_path)
    assert r.returncode == 0 and r.stdout.strip() == "updaterd 0.1.0"
    assert os.readlink(prefix / "current") == "releases/0.1.0"
    assert not (tmp_path / "pwned").exists()


def _symlink(prefix: Path, target: str) -> Path:
    tmp = prefix / "tmp-link"
    tmp.symlink_to(target)
    return tmp


def test_adopted_socket_must_be_ours(tmp_path: Path) -> None:
    path = tmp_path / "updaterd.sock"
    assert selfupdate._bound_for(str(path), path)
    assert selfupdate._bound_for(str(tmp_path / ".updaterd-tmp-updaterd.sock.ab12cd34"), path)
    assert not selfupdate._bound_for(str(tmp_path / "other.sock"), path)
    assert not selfupdate._bound_for(str(tmp_path / "x" / "updaterd.sock"), path)
    assert not selfupdate._bound_for(b"\0abstract", path)
    assert selfupdate.adopt_listener(path) is None  # no LISTEN_PID for us


def test_self_needs_the_releases_install_mode(tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "c.toml", {}, {"me": {
        "source": "directory", "path": str(tmp_path), "install": "inplace",
        "target": str(tmp_path / "updaterd"), "self": True}})
    r = run_updaterd("--config", cfg, "check-config")
    assert r.returncode == 2
    assert "apps.me.self: updaterd updates itself with install = \"releases\"" in r.stderr


def test_daemonized_updaterd_re_executes_without_detaching_again(self_host: SelfHost) -> None:
    """--daemonize: the same pid (the pidfile stays true) serves the new version."""
    h = self_host
    h.publish("0.2.0")
    pidfile = h.base / "run" / "updaterd.pid"
    r = subprocess.run([str(h.prefix / "launcher"), "--config", str(h.base / "updaterd.toml"),
                        "--daemonize", "--pidfile", str(pidfile)], capture_output=True,
                       text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    try:
        h.wait_for(lambda: h.status() is not None, "the daemonized updaterd")
        pid = int(pidfile.read_text())
        assert _update(h, "0.2.0").returncode == 0
        h.wait_for(lambda: h.settled_on("0.2.0"), "0.2.0 to take over")
        assert h.status()["daemon"]["pid"] == pid  # type: ignore[index]
        assert int(pidfile.read_text()) == pid
    finally:
        if pidfile.exists():
            os.kill(int(pidfile.read_text()), signal.SIGTERM)
            h.wait_for(lambda: not pidfile.exists(), "the daemon to stop")


def test_offline_self_update_is_finished_by_the_next_start(self_host: SelfHost) -> None:
    """`updaterd update updaterd` with no daemon running: the new release is tried and put in
    place; the next start (the new version, through the launcher) commits it."""
    h = self_host
    h.publish("0.2.0")
    r = subprocess.run([str(h.prefix / "bin" / "updaterd"), "--config",
                        str(h.base / "updaterd.toml"), "update", "updaterd"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "0.2.0 is in place; the next start of updaterd finishes its health check" in r.stdout
    assert h.state()["pending"]["to_version"] == "0.2.0"
    assert (h.prefix / selfupdate.TRIAL).exists()
    h.start()
    h.wait_for(lambda: h.settled_on("0.2.0"), "the first start of 0.2.0 to commit it")
    assert not (h.prefix / selfupdate.TRIAL).exists()


def _on_020_stopped(h: SelfHost) -> tuple[str, str]:
    """0.2.0 updated to offline and committed by a start of the daemon, which is stopped
    again; returns the config and the prefix's updaterd, for offline commands."""
    h.publish("0.2.0")
    config = str(h.base / "updaterd.toml")
    updaterd = str(h.prefix / "bin" / "updaterd")
    assert subprocess.run([updaterd, "--config", config, "update", "updaterd"],
                          capture_output=True, timeout=60).returncode == 0
    h.start()
    h.wait_for(lambda: h.settled_on("0.2.0"), "0.2.0 to be committed")
    h.stop()
    return config, updaterd


def test_an_interrupted_rollback_of_updaterd_is_finished_as_a_rollback(
        self_host: SelfHost) -> None:
    """Killed after switching itself back (offline), updaterd starts as the older version and
    finishes the journaled rollback, saying so (not "took over", which is an update's)."""
    h = self_host
    config, updaterd = _on_020_stopped(h)
    env = {**os.environ, "UPDATERD_FAILPOINTS": "rollback.after_restart=kill"}
    r = subprocess.run([updaterd, "--config", config, "rollback", "updaterd", "--to", "0.1.0"],
                       capture_output=True, text=True, env=env, timeout=60)
    assert r.returncode == -signal.SIGKILL, r.stderr
    assert h.state()["pending"]["kind"] == "rollback"
    assert os.readlink(h.prefix / "current") == "releases/0.1.0"
    before = len(h.log.read_text())
    h.start()
    h.wait_for(lambda: h.settled_on("0.1.0"), "the rollback to be finished")
    time.sleep(1)
    log = h.log.read_text()[before:]
    assert "finishing an interrupted rollback 0.2.0 -> 0.1.0" in log, log
    assert "handing over" not in log, "already the version rolled back to: nothing to re-execute"
    assert h.state()["pending"] is None


def test_an_interrupted_downgrade_of_updaterd_is_undone_by_the_version_running(
        self_host: SelfHost) -> None:
    """Killed after journaling a downgrade to 0.1.0 (`update --version`, offline), before the
    switch: 0.2.0 still runs at the next start and undoes it, saying so."""
    h = self_host
    config, updaterd = _on_020_stopped(h)
    h.publish("0.1.0")
    env = {**os.environ, "UPDATERD_FAILPOINTS": "journal.after_write=kill"}
    r = subprocess.run([updaterd, "--config", config, "update", "updaterd", "--version",
                        "0.1.0"], capture_output=True, text=True, env=env, timeout=60)
    assert r.returncode == -signal.SIGKILL, r.stderr
    assert h.state()["pending"]["to_version"] == "0.1.0"
    before = len(h.log.read_text())
    h.start()
    h.wait_for(lambda: h.settled_on("0.2.0"), "the downgrade to be undone")
    log = h.log.read_text()[before:]
    assert "finishing an interrupted update 0.2.0 -> 0.1.0" in log, log
    assert "took over" not in log


def test_a_downgrade_of_updaterd_hands_over_to_the_older_version(self_host: SelfHost) -> None:
    """`update --version` an older updaterd: the code that runs is newer than the version
    switched to, so it must hand over (and the next start, the older version, commits)."""
    h = self_host
    config, updaterd = _on_020_stopped(h)
    h.publish("0.1.0")
    r = subprocess.run([updaterd, "--config", config, "update", "updaterd", "--version",
                        "0.1.0"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "0.1.0 is in place; the next start of updaterd finishes its health check" in r.stdout
    assert h.state()["pending"]["to_version"] == "0.1.0"
    h.start()
    h.wait_for(lambda: h.settled_on("0.1.0"), "the first start of 0.1.0 to commit it")
    assert h.state()["pending"] is None

