"""Start a real nginx serving a folder on 127.0.0.1 (used by the tests and the benchmarks)."""

from __future__ import annotations

import contextlib
import json
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


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


def stop(proc: subprocess.Popen[bytes], signum: int = signal.SIGTERM,
         timeout: float = 10) -> None:
    """A test server stopped as its own manual says (nginx: SIGQUIT), killed if it lingers."""
    proc.send_signal(signum)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def read_log(path: Path) -> list[dict[str, Any]]:
    """A test server's request log: one JSON object per line (none before the first request)."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


@dataclass
class Nginx:
    """A static file server whose root is `root`; `url(path)` for a file under it."""

    root: Path
    port: int
    access_log: Path
    tls_ports: dict[str, int] = field(default_factory=dict)
    pid: int = 0  # the master process (benchmarks read the CPU of it and its workers)

    def url(self, rel: str) -> str:
        return f"http://127.0.0.1:{self.port}/{rel}"

    def tls_url(self, server: str, rel: str) -> str:
        return f"https://127.0.0.1:{self.tls_ports[server]}/{rel}"

    def requests(self) -> list[dict[str, Any]]:
        return read_log(self.access_log)


@contextlib.contextmanager
def running_nginx(base: Path, tls: dict[str, tuple[Path, Path]] | None = None,
                  tls_extra: str = "", http_extra: str = "") -> Iterator[Nginx]:
    """nginx with its root at `base/www`, logging each request as JSON to `base/access.log`;
    `tls` adds an https server per name, with its (certificate, key), and `tls_extra` in each
    of them (`{plain_port}` in it is the port of the plain http server); `http_extra` goes
    into the plain server (gzip, headers: a server set up as a user would)."""
    if shutil.which("nginx") is None:
        raise RuntimeError("nginx is not installed (.ci/run installs nginx-light)")
    root = base / "www"
    root.mkdir(parents=True, exist_ok=True)
    port = free_port()
    log = base / "access.log"
    for d in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (base / d).mkdir(exist_ok=True)
    tls_ports = {name: free_port() for name in tls or {}}
    tls_servers = "".join(f"""
    server {{
        listen 127.0.0.1:{tls_ports[name]} ssl;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        root {root};
        {tls_extra.replace("{plain_port}", str(port))}
    }}""" for name, (cert, key) in (tls or {}).items())
    conf = base / "nginx.conf"
    conf.write_text(f"""
user root;
daemon off;
worker_processes 1;
pid {base}/nginx.pid;
error_log {base}/error.log;
events {{ worker_connections 1024; }}
http {{
    types {{ application/json json; }}
    default_type application/octet-stream;
    sendfile on;
    log_format t escape=json '{{"method":"$request_method","uri":"$uri","status":$status,'
        '"bytes":$body_bytes_sent,"sent":$bytes_sent,"range":"$http_range","inm":"$http_if_none_match"}}';
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
        {http_extra}
    }}{tls_servers}
}}
""")
    proc = subprocess.Popen(["nginx", "-c", str(conf), "-p", str(base)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_port(port, proc, "nginx")
        yield Nginx(root=root, port=port, access_log=log, tls_ports=tls_ports, pid=proc.pid)
    finally:
        stop(proc, signal.SIGQUIT)
