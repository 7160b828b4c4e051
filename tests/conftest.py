"""Shared fixtures: a real nginx and a hypercorn fault server on 127.0.0.1, feeds, configs."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import Feed, write_config


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, proc: subprocess.Popen[bytes], what: str) -> None:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{what} did not listen on {port}")


@dataclass
class Nginx:
    """A static file server whose root is `root`; `url(path)` for a file under it."""

    root: Path
    port: int
    access_log: Path

    def url(self, rel: str) -> str:
        return f"http://127.0.0.1:{self.port}/{rel}"

    def requests(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.access_log.read_text().splitlines()]


@pytest.fixture(scope="session")
def nginx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Nginx]:
    if shutil.which("nginx") is None:
        pytest.fail("nginx is not installed (.ci/run installs nginx-light)")
    base = tmp_path_factory.mktemp("nginx")
    root = base / "www"
    root.mkdir()
    port = free_port()
    log = base / "access.log"
    for d in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (base / d).mkdir()
    conf = base / "nginx.conf"
    conf.write_text(f"""
user root;
daemon off;
worker_processes 1;
pid {base}/nginx.pid;
error_log {base}/error.log;
events {{ worker_connections 256; }}
http {{
    types {{ application/json json; }}
    default_type application/octet-stream;
    log_format t escape=json '{{"method":"$request_method","uri":"$uri","status":$status,'
        '"bytes":$body_bytes_sent,"range":"$http_range","inm":"$http_if_none_match"}}';
    access_log {log} t;
    client_body_temp_path {base}/body;
    proxy_temp_path {base}/proxy;
    fastcgi_temp_path {base}/fastcgi;
    uwsgi_temp_path {base}/uwsgi;
    scgi_temp_path {base}/scgi;
    server {{
        listen 127.0.0.1:{port};
        root {root};
        etag on;
    }}
}}
""")
    proc = subprocess.Popen(["nginx", "-c", str(conf), "-p", str(base)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_port(port, proc, "nginx")
        yield Nginx(root=root, port=port, access_log=log)
    finally:
        proc.send_signal(signal.SIGQUIT)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


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
