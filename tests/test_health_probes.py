"""Health probes beside the health-check command: an HTTP URL that must answer 2xx, and systemd
asked whether the unit is active; a failing probe rolls the update back."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.conftest import Daemon, Host, Nginx
from tests.helpers import Feed


class Health(BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:
        self.send_response(type(self).status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def health_server() -> Iterator[tuple[str, type[Health]]]:
    handler = type("H", (Health,), {"status": 200})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/healthz", handler
    server.shutdown()
    server.server_close()


def test_health_url_must_answer_2xx_or_the_update_is_rolled_back(
        host: Host, nginx: Nginx, served_feed: Feed, daemon: Daemon,
        health_server: tuple[str, type[Health]]) -> None:
    url, handler = health_server
    served_feed.release("1.0.0")
    host.follow(nginx, served_feed, health_url=url, health_timeout="2s")
    daemon.start()
    daemon.wait_for(lambda: daemon.app()["current"] == "1.0.0", what="install, probe 200")
    handler.status = 503
    served_feed.release("1.1.0")
    r = daemon.ctl("update", "hello")
    assert r.returncode == 1 and f"health_url {url}: no 2xx within 2s (last: HTTP 503)" in r.stderr
    assert host.current() == "1.0.0" and "1.1.0" in daemon.app()["blocked"]


def fake_systemctl(tmp_path: Path, state: str) -> tuple[Path, Path]:
    """There is no systemd here: a stand-in `systemctl` that answers is-active from a file."""
    bin_dir = tmp_path / "fakebin"
    bin_dir.mkdir(exist_ok=True)
    state_file = tmp_path / "unit-state"
    state_file.write_text(state)
    script = bin_dir / "systemctl"
    script.write_text(f'#!/bin/sh\ncase "$1" in\n  restart) echo "$2" >> {tmp_path}/restarts;;\n'
                      f'  is-active) s=$(cat {state_file}); echo "$s"; [ "$s" = active ];;\n'
                      "esac\n")
    script.chmod(0o755)
    return bin_dir, state_file


def test_health_notify_asks_systemd_whether_the_unit_is_active(
        host: Host, nginx: Nginx, served_feed: Feed, tmp_path: Path) -> None:
    bin_dir, state_file = fake_systemctl(tmp_path, "active")
    served_feed.release("1.0.0")
    host.follow(nginx, served_feed, health_notify=True, health_timeout="2s",
              restart=["systemctl", "restart", "hello.service"])
    d = Daemon(host, env={"PATH": f"{bin_dir}:{os.environ['PATH']}"})
    d.start()
    try:
        d.wait_for(lambda: d.app()["current"] == "1.0.0", what="install, unit active")
        state_file.write_text("failed")
        served_feed.release("1.1.0")
        r = d.ctl("update", "hello")
        assert r.returncode == 1 and "systemd unit hello.service is failed" in r.stderr
        assert host.current() == "1.0.0"
        assert (tmp_path / "restarts").read_text().split() == ["hello.service"] * 3
    finally:
        d.stop()
