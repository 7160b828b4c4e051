"""Operator policy through the real daemon (or the real `updaterd --once`): maintenance windows,
rate caps, proxies, HTTP and systemd health probes, phased rollout, metrics, and `status`
explaining why an available version is not being installed."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.conftest import Daemon, Host, Nginx
from tests.helpers import BIN, Feed, app_script, make_tar, run_updaterd
from tests.servers.proxy import running_proxy
from updaterd import window


def closed_window() -> str:
    """A one-minute window two days from now: closed now, opening at a known time."""
    day = window.DAYS[(datetime.now().weekday() + 2) % 7].capitalize()
    return f"{day} 00:00-00:01"


def test_window_defers_the_switch_and_update_now_overrides(
        host: Host, nginx: Nginx, served_feed: Feed, daemon: Daemon) -> None:
    art = served_feed.release("1.0.0")
    host.follow(nginx, served_feed, window=closed_window())
    daemon.start()
    daemon.wait_for(lambda: daemon.app()["phase"] == "waiting_window", what="window wait")
    app = daemon.app()
    assert app["current"] is None and app["available"] == "1.0.0"
    note = next(n for n in app["notes"] if "waits for the window" in n)
    opens_in = note.split("opens in ")[1].rstrip(")")
    assert opens_in.endswith("h") or "d" in opens_in or "h" in opens_in
    assert (host.base / "cache" / "hello" / art.name).exists(), "downloaded before the window"
    # it looks again at the earlier of the check interval (1h here) and the window's opening
    assert 3500 < app["next_check"] - time.time() <= 3600
    assert "waits for the window" in daemon.ctl("status").stdout
    daemon.ctl("update", "hello", "--now", check=True)
    assert host.current() == "1.0.0"


def test_once_outside_the_window_downloads_and_defers(host: Host, nginx: Nginx,
                                                      served_feed: Feed) -> None:
    art = served_feed.release("1.0.0")
    host.follow(nginx, served_feed, window=closed_window())
    r = run_updaterd("--config", host.config, "--once")
    assert r.returncode == 0, r.stderr
    assert "1.0.0 is downloaded and waiting for window (opens in" in r.stderr
    assert host.current() is None
    assert (host.base / "cache" / "hello" / art.name).exists()


def test_bad_window_is_a_config_error(tmp_path: Path) -> None:
    cfg = tmp_path / "u.toml"
    cfg.write_text('[apps.a]\nsource = "directory"\npath = "/f"\nprefix = "/p"\n'
                   'window = "Mon-Fri 2am-5am"\n')
    r = run_updaterd("--config", cfg, "check-config")
    assert r.returncode == 2 and "apps.a.window: bad window part 'Mon-Fri 2am-5am'" in r.stderr


def big_release(feed: Feed, version: str, size: int) -> Path:
    art = feed.work / f"hello-{version}-linux-x86_64.tar.gz"
    make_tar(art, {"bin/hello": (app_script(version), 0o755),
                   "share/blob": (os.urandom(size), 0o644)}, top=f"hello-{version}")
    feed.publish(version, [art])
    return art


@pytest.mark.parametrize("where", ["app", "daemon"])
def test_rate_cap_is_smooth_and_within_ten_percent(host: Host, nginx: Nginx, served_feed: Feed,
                                                   daemon: Daemon, where: str) -> None:
    cap = 4 << 20
    if where == "app":
        host.follow(nginx, served_feed, max_rate="4MiB/s", auto_update=False)
    else:
        host.follow(nginx, served_feed, auto_update=False)
        text = host.config.read_text().replace("[daemon]\n", '[daemon]\nmax_rate = "4MiB/s"\n')
        host.config.write_text(text)
    served_feed.release("1.0.0")
    daemon.start()
    daemon.wait_for(lambda: daemon.app()["available"] == "1.0.0", what="first check")
    big_release(served_feed, "1.1.0", 10 << 20)
    watcher = subprocess.Popen([str(BIN / "updaterctl"), "--socket", str(daemon.socket),
                                "--json", "watch", "hello"], stdout=subprocess.PIPE, text=True)
    try:
        time.sleep(0.3)
        daemon.ctl("update", "hello", "--version", "1.1.0", check=True)
        progress = []
        assert watcher.stdout is not None
        for line in watcher.stdout:
            event = json.loads(line)
            if event["kind"] == "progress" and event["version"] == "1.1.0":
                progress.append(event)
            if event["kind"] == "result":
                break
    finally:
        watcher.terminate()
    first, last = progress[0], progress[-1]
    rate = (last["done"] - first["done"]) / (last["at"] - first["at"])
    assert abs(rate - cap) / cap < 0.10, f"{rate / 2**20:.2f} MiB/s against a 4 MiB/s cap"
    gaps = [b["done"] - a["done"] for a, b in itertools.pairwise(progress[:-1])]
    assert max(gaps) < cap * 0.5, "no bursts: about a quarter second's worth per event"


def test_explicit_proxy_carries_every_request(host: Host, nginx: Nginx,
                                              served_feed: Feed) -> None:
    served_feed.release("1.0.0")
    with running_proxy() as proxy:
        host.follow(nginx, served_feed, proxy=f"http://127.0.0.1:{proxy.server_port}")
        r = run_updaterd("--config", host.config, "--once")
        assert r.returncode == 0, r.stderr
        seen = list(proxy.seen)
    base = nginx.url(served_feed.folder.name)
    assert f"{base}/manifest.json" in seen and f"{base}/manifest.json.minisig" in seen
    assert any(u.endswith(".tar.gz") for u in seen)


def test_proxy_from_environment_and_no_proxy(host: Host, nginx: Nginx, served_feed: Feed) -> None:
    served_feed.release("1.0.0")
    host.follow(nginx, served_feed)
    with running_proxy() as proxy:
        env = {"http_proxy": f"http://127.0.0.1:{proxy.server_port}", "no_proxy": ""}
        assert run_updaterd("--config", host.config, "--once", env=env).returncode == 0
        through = len(proxy.seen)
        env["no_proxy"] = "127.0.0.1"
        served_feed.release("1.1.0")
        assert run_updaterd("--config", host.config, "--once", env=env).returncode == 0
        assert host.current() == "1.1.0"
        assert through >= 3 and len(proxy.seen) == through, "no_proxy bypasses the proxy"


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


def test_rollout_share_is_explained_and_widened_without_a_new_version(
        host: Host, nginx: Nginx, served_feed: Feed, daemon: Daemon) -> None:
    served_feed.release("1.0.0")
    host.follow(nginx, served_feed)
    daemon.start()
    daemon.wait_for(lambda: daemon.app()["current"] == "1.0.0", what="install")
    art = served_feed.release("1.1.0", rollout=0)
    daemon.ctl("check", "hello", check=True)
    assert "1.1.0: available to 0% of hosts, not this one yet" in daemon.app()["notes"]
    served_feed.publish("1.1.0", [art], rollout=100)  # the same version, a wider share
    out = json.loads(daemon.ctl("--json", "check", "hello", check=True).stdout)["hello"]
    assert out["available"] == "1.1.0"


def test_status_explains_every_reason_a_version_waits(host: Host, nginx: Nginx,
                                                      served_feed: Feed,
                                                      daemon: Daemon) -> None:
    served_feed.release("1.0.0")
    host.follow(nginx, served_feed, pin="<2")
    daemon.start()
    daemon.wait_for(lambda: daemon.app()["current"] == "1.0.0", what="install")
    served_feed.release("1.1.0", rollout=0)
    served_feed.release("1.2.0")
    served_feed.release("1.3.0", healthy=False)
    served_feed.release("2.0.0")
    daemon.ctl("skip", "hello", "1.2.0", check=True)
    daemon.ctl("update", "hello", "--version", "1.3.0")  # fails its health check: blocked
    daemon.ctl("pause", "hello", check=True)
    daemon.ctl("check", "hello", check=True)
    notes = "\n".join(daemon.app()["notes"])
    for reason in ("1.1.0: available to 0% of hosts", "1.2.0: skipped by the operator",
                   "1.3.0: blocked after a failed health check", "2.0.0: outside pin '<2'",
                   "paused"):
        assert reason in notes, reason
    human = daemon.ctl("status", "hello").stdout
    assert "outside pin" in human and "blocked" in human


def test_metrics_parse_with_prometheus_client(running: Daemon) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    text = running.ctl("metrics", check=True).stdout
    families = {f.name: f for f in text_string_to_metric_families(text)}
    info = families["updaterd_app_info"].samples[0]
    assert info.labels == {"app": "hello", "installed": "1.0.0", "available": ""}
    assert families["updaterd_checks"].type == "counter"
    assert families["updaterd_checks"].samples[0].value >= 1
    phases = {s.labels["phase"]: s.value for s in families["updaterd_phase"].samples}
    assert phases["idle"] == 1 and sum(phases.values()) == 1


def test_window_wait_is_described_for_people() -> None:
    assert window.describe_wait(timedelta(hours=3, minutes=12).total_seconds()) == "3h12m"


def test_update_now_takes_over_an_update_waiting_for_its_window(
        host: Host, nginx: Nginx, served_feed: Feed, daemon: Daemon) -> None:
    """A client's `update` outside the window waits in the daemon; another client's
    `update --now` is not told busy: it makes that same update go on, and both see its end."""
    served_feed.release("1.0.0")
    host.follow(nginx, served_feed, window=closed_window(), auto_update=False)
    daemon.start()
    daemon.wait_for(lambda: daemon.app()["available"] == "1.0.0" and
                    daemon.app()["phase"] == "idle", what="the first check")
    waiting = subprocess.Popen([str(BIN / "updaterctl"), "--socket", str(daemon.socket),
                                "update", "hello"], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    daemon.wait_for(lambda: daemon.app()["phase"] == "waiting_window", what="the wait")
    r = daemon.ctl("update", "hello", "--now")
    assert r.returncode == 0, r.stderr
    assert "installed 1.0.0" in r.stdout
    out, err = waiting.communicate(timeout=30)
    assert waiting.returncode == 0 and "installed 1.0.0" in out, err
    assert host.current() == "1.0.0"
