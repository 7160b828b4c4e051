"""Run one of the test ASGI apps under hypercorn (trio worker) on loopback addresses."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

from tests.servers.nginx import free_port, wait_for_port

REPO = Path(__file__).resolve().parent.parent.parent


@contextlib.contextmanager
def running_asgi(app: str, env: dict[str, str],
                 hosts: tuple[str, ...] = ("127.0.0.1",)) -> Iterator[int]:
    """Serve `app` ("tests.servers.faults:app") on every host at one port; yields the port."""
    port = free_port()
    binds = [arg for h in hosts for arg in ("--bind", f"{h}:{port}")]
    proc = subprocess.Popen(
        [sys.executable, "-m", "hypercorn", "--worker-class", "trio", *binds, app],
        env={**os.environ, **env, "PYTHONPATH": str(REPO)},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_port(port, proc, f"hypercorn {app}")
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
