"""How updaterd uses the network, through the real daemon and nginx: the rate cap is smooth and
within 10%, and every request goes through the configured (or environment) proxy."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import Daemon, Host, Nginx
from tests.helpers import BIN, Feed, app_script, make_tar, run_updaterd
from tests.servers.proxy import running_proxy


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
