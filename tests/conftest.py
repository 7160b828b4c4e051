"""Shared fixtures: a real nginx and a hypercorn fault server on 127.0.0.1, feeds, configs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import Feed, write_config
from tests.servers.nginx import Nginx, free_port, running_nginx, wait_for_port


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
        if not self.log.exists():
            return []
        return [json.loads(line) for line in self.log.read_text().splitlines()]


@pytest.fixture
def fault_server(tmp_path: Path) -> Iterator[FaultServer]:
    root = tmp_path / "fault-root"
    root.mkdir()
    port = free_port()
    log = tmp_path / "fault.log"
    env = {**os.environ, "FAULT_ROOT": str(root), "FAULT_LOG": str(log),
           "PYTHONPATH": str(Path(__file__).parent.parent)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "hypercorn", "--worker-class", "trio", "--bind",
         f"127.0.0.1:{port}", "tests.servers.faults:app"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_port(port, proc, "hypercorn")
        yield FaultServer(root=root, port=port, log=log)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


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
        table = {"prefix": str(self.prefix), "health_check": ["bin/hello"],
                 "health_timeout": "10s", **app}
        return write_config(self.config, self.daemon_table(), {"hello": table}, limits)

    def state(self) -> dict[str, Any]:
        return json.loads((self.state_dir / "hello" / "state.json").read_text())

    def current(self) -> str | None:
        link = self.prefix / "current"
        return os.readlink(link).split("/")[-1] if link.is_symlink() else None


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
