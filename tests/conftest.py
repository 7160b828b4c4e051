"""Shared fixtures: a real nginx and a hypercorn fault server on 127.0.0.1, feeds, configs."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import Feed, write_config
from tests.servers.asgi import running_asgi
from tests.servers.nginx import Nginx, read_log, running_nginx
from tests.simulator import FeedSimulator


@pytest.fixture
def sim() -> FeedSimulator:
    """A signed feed in memory (tests/simulator.py), for the engine in this process."""
    return FeedSimulator()


@pytest.fixture(scope="session")
def nginx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Nginx]:
    with running_nginx(tmp_path_factory.mktemp("nginx")) as server:
        yield server


@dataclass
class FaultServer:
    """The hypercorn fault-injection server (tests/servers/faults.py) serving `root`."""

    root: Path
    port: int
    log: Path

    def url(self, mode: str, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/{mode}/{name}"

    def requests(self) -> list[dict[str, Any]]:
        return read_log(self.log)


@pytest.fixture
def fault_server(tmp_path: Path) -> Iterator[FaultServer]:
    root = tmp_path / "fault-root"
    root.mkdir()
    log = tmp_path / "fault.log"
    with running_asgi("tests.servers.faults:app",
                      {"FAULT_ROOT": str(root), "FAULT_LOG": str(log)}) as port:
        yield FaultServer(root=root, port=port, log=log)


@dataclass
class GitHub:
    """The GitHub-like API (tests/servers/github.py); the storage host is 127.0.0.2."""

    root: Path
    port: int
    log: Path

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def set_releases(self, releases: list[dict[str, Any]], rate_limited: int = 0,
                     asset_host: str | None = None, reset_at: int | None = None,
                     require_token: str | None = None) -> None:
        (self.root / "api.json").write_text(json.dumps({"releases": releases,
                                                        "rate_limited": rate_limited,
                                                        "asset_host": asset_host,
                                                        "reset_at": reset_at,
                                                        "require_token": require_token}))

    def add_asset(self, name: str, data: bytes) -> Path:
        path = self.root / "assets" / name
        path.write_bytes(data)
        return path

    def requests(self) -> list[dict[str, Any]]:
        return read_log(self.log)


@pytest.fixture
def github(tmp_path: Path) -> Iterator[GitHub]:
    root = tmp_path / "github"
    (root / "assets").mkdir(parents=True)
    log = tmp_path / "github.log"
    with running_asgi("tests.servers.github:app", {"GH_ROOT": str(root), "GH_LOG": str(log)},
                      hosts=("127.0.0.1", "127.0.0.2")) as port:
        gh = GitHub(root=root, port=port, log=log)
        gh.set_releases([])
        yield gh


@dataclass
class Host:
    """A temporary host: state, cache, lock and the app's prefix, plus its config file."""

    base: Path

    @property
    def prefix(self) -> Path:
        return self.base / "opt" / "hello"

    @property
    def state_dir(self) -> Path:
        return self.base / "state"

    @property
    def config(self) -> Path:
        return self.base / "updaterd.toml"

    def daemon_table(self) -> dict[str, Any]:
        return {"state_dir": str(self.state_dir), "cache_dir": str(self.base / "cache"),
                "lock_file": str(self.base / "updaterd.lock"),
                "socket": str(self.base / "updaterd.sock"), "host_id": "test-host",
                "platform": "linux-x86_64"}

    def configure(self, **app: Any) -> Path:
        limits = app.pop("limits", {"backoff_base": "50ms", "backoff_cap": "200ms",
                                    "retries": 3})
        # no looks between checks unless the test asks: each test decides when a host sees a
        # change (`watch_interval=None` leaves the key out, for a daemon from before it)
        if app.setdefault("watch_interval", "0") is None:
            del app["watch_interval"]
        table = {"prefix": str(self.prefix), "health_check": ["bin/hello"],
                 "health_timeout": "10s", **app}
        return write_config(self.config, self.daemon_table(), {"hello": table}, limits)

    def follow(self, nginx: Nginx, feed: Feed, **app: Any) -> Path:
        """Configure the app to follow `feed` as served by nginx (checked hourly, no jitter)."""
        app.setdefault("check_interval", "1h")
        app.setdefault("jitter", "0s")
        app.setdefault("public_keys", [feed.pub])
        return self.configure(source="manifest",
                              url=nginx.url(f"{feed.folder.name}/manifest.json"),
                              allow_insecure=True, **app)

    def open_socket_in(self, run_dir: Path, **daemon: Any) -> Path:
        """Rewrite the config with its socket in `run_dir`, open to every user (0666), and
        `daemon` keys set; the [limits] and [apps] tables stay. Returns the socket path."""
        text = self.config.read_text()
        rest = "\n" + text.split("\n\n", 1)[1]  # everything after [daemon]
        table = self.daemon_table()
        table.update(socket=str(run_dir / "updaterd.sock"), socket_mode="0666", **daemon)
        write_config(self.config, table, {})
        self.config.write_text(self.config.read_text() + rest)
        return run_dir / "updaterd.sock"

    def state(self) -> dict[str, Any]:
        return json.loads((self.state_dir / "hello" / "state.json").read_text())

    def current(self) -> str | None:
        link = self.prefix / "current"
        return os.readlink(link).split("/")[-1] if link.is_symlink() else None


@pytest.fixture
def public_dir() -> Iterator[Path]:
    """A folder other users can reach (the pytest tmp folders are private to root)."""
    path = Path(tempfile.mkdtemp(prefix="updaterd-run-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path)


@pytest.fixture
def host(tmp_path: Path) -> Host:
    (tmp_path / "host").mkdir()
    return Host(tmp_path / "host")


@pytest.fixture
def feed(tmp_path: Path) -> Feed:
    return Feed(folder=tmp_path / "feed", work=tmp_path / "work")


@pytest.fixture
def served_feed(nginx: Nginx, tmp_path: Path) -> Feed:
    """A feed inside nginx's root, unique to this test."""
    sub = nginx.root / tmp_path.name
    return Feed(folder=sub, work=tmp_path / "work")


class AppNotListed(LookupError):
    """`Daemon.app(name)` found no such app in the status."""


class Daemon:
    """The real `updaterd` process on a temporary config; `ctl(...)` runs the real updaterctl."""

    def __init__(self, host: Host, env: dict[str, str] | None = None) -> None:
        self.host = host
        self.socket = host.base / "updaterd.sock"
        self.log = host.base / "daemon.log"
        self.env = env or {}
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, *extra: str) -> Daemon:
        from tests.helpers import BIN

        env = {k: v for k, v in os.environ.items() if k != "UPDATERD_FAILPOINTS"}
        env.update(self.env)
        self.logfile = open(self.log, "ab")  # noqa: SIM115 - closed in stop()
        self._ready_before = self._ready_lines()
        self.proc = subprocess.Popen([str(BIN / "updaterd"), "--config", str(self.host.config),
                                      *extra], stdout=self.logfile, stderr=subprocess.STDOUT,
                                     env=env)
        deadline = time.monotonic() + 15
        while not self.socket.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"updaterd did not start:\n{self.log.read_text()}")
            time.sleep(0.02)
        return self

    def _ready_lines(self) -> int:
        return self.log.read_text(errors="replace").count(" apps, socket ") \
            if self.log.exists() else 0

    def wait_ready(self, timeout: float = 20) -> None:
        """Until this start logged its "ready" line (after the sockets and the workers)."""
        self.wait_for(lambda: self._ready_lines() > self._ready_before, timeout,
                      what="the daemon's ready line")

    def ctl(self, *args: str, check: bool = False,
            timeout: float = 60) -> subprocess.CompletedProcess[str]:
        from tests.helpers import BIN

        r = subprocess.run([str(BIN / "updaterctl"), "--socket", str(self.socket), *args],
                           capture_output=True, text=True, timeout=timeout)
        if check and r.returncode != 0:
            raise AssertionError(f"updaterctl {args} -> {r.returncode}: {r.stderr}")
        return r

    def status(self) -> dict[str, Any]:
        out = self.ctl("--json", "status", check=True).stdout
        return json.loads(out)

    def app(self, name: str = "hello") -> dict[str, Any]:
        for a in self.status()["apps"]:
            if a["name"] == name:
                return a
        raise AppNotListed(f"status lists no app {name!r}")

    def wait_for(self, predicate: Any, timeout: float = 20, what: str = "") -> None:
        """Until `predicate()`; an app not listed yet (a start whose workers are still starting:
        the control socket answers before them) counts as not yet."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if predicate():
                    return
            except AppNotListed:
                pass
            time.sleep(0.05)
        raise AssertionError(f"timed out waiting for {what}\n{self.log.read_text()}")

    def signal(self, signum: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(signum)

    def stop(self, timeout: float = 20) -> int:
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait()
        self.logfile.close()
        return rc


@pytest.fixture
def daemon(host: Host) -> Iterator[Daemon]:
    d = Daemon(host)
    yield d
    d.stop()


@pytest.fixture
def running(host: Host, nginx: Nginx, served_feed: Feed, daemon: Daemon) -> Daemon:
    """A daemon that installed 1.0.0 by itself right after starting."""
    served_feed.release("1.0.0")
    host.follow(nginx, served_feed)
    daemon.start()
    daemon.wait_for(lambda: daemon.app()["current"] == "1.0.0", what="first install")
    return daemon
