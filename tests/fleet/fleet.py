"""A fleet on one machine: many real `updaterd` processes (each its own machine id, state,
prefix and metrics port), nginx serving their feed, and Debian's Prometheus scraping them every
second. `make test-fleet` runs the guarded-rollout scenarios on it (tests/fleet/test_fleet.py)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.helpers import BIN, REPO, Feed, make_tar, toml_value
from tests.servers.nginx import Nginx, free_port
from updaterd.trust import minisign


def listen_ports(n: int) -> list[int]:
    """`n` free ports below the kernel's range for outgoing connections (32768 up), so that
    no daemon's connection takes one of them before its daemon listens on it."""
    import socket

    found = []
    for port in range(21000, 32000):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        found.append(port)
        if len(found) == n:
            return found
    raise RuntimeError("not enough free ports below 32000")

PROMETHEUS = REPO / ".fleet" / "prometheus" / "usr" / "bin" / "prometheus"
CHECK_INTERVAL = 3.0


def app_files(version: str, mode: str) -> dict[str, tuple[bytes, int]]:
    """A release whose health check passes (`good`), fails on every host (`bad`), or fails
    slowly on the hosts that hold a `flaky` file (`flaky`)."""
    body = {"good": "exit 0",
            "bad": "exit 1",
            "flaky": 'host=$(dirname "$UPDATERD_SOCKET")  # the host\'s own folder\n'
                     'if [ -e "$host/flaky" ]; then sleep 8; exit 1; fi\nexit 0'}[mode]
    script = f"#!/bin/sh\n# hello {version}\n{body}\n".encode()
    return {"bin/hello": (script, 0o755), "share/VERSION": (f"{version}\n".encode(), 0o644)}


def build(work: Path, version: str, mode: str) -> Path:
    return make_tar(work / f"hello-{version}-linux-x86_64.tar.gz", app_files(version, mode),
                    top=f"hello-{version}")


@dataclass
class FleetHost:
    """One host: its folder, machine id, metrics port and daemon process."""

    base: Path
    host_id: str
    port: int
    proc: subprocess.Popen[bytes] | None = None
    install: str = "releases"  # or "inplace": bin/hello replaced by one rename
    # the app's schedule: [apps.hello] lines; None: the defaults (check_interval 4h ...)
    schedule: dict[str, str] | None = field(
        default_factory=lambda: {"check_interval": f"{CHECK_INTERVAL:g}s", "jitter": "1s"})

    @property
    def prefix(self) -> Path:
        return self.base / "opt" / "hello"

    @property
    def target(self) -> Path:
        return self.base / "bin" / "hello"

    def current(self) -> str | None:
        """The version this host runs: its `current` link, or the in-place executable's own
        line (`# hello VERSION`)."""
        try:
            if self.install == "inplace":
                return self.target.read_text().splitlines()[1].split()[-1]
            return os.readlink(self.prefix / "current").split("/")[-1]
        except (OSError, IndexError):
            return None

    def state(self) -> dict[str, Any]:
        try:
            return json.loads((self.base / "state" / "hello" / "state.json").read_text())
        except (OSError, ValueError):
            return {}

    def log(self) -> str:
        return (self.base / "daemon.log").read_text(errors="replace")

    def configure(self, feed_url: str, feed_pub: str) -> None:
        (self.base / "opt").mkdir(parents=True, exist_ok=True)
        b = self.base
        if self.install == "inplace":
            self.target.parent.mkdir(parents=True, exist_ok=True)
            install = {"install": "inplace", "target": str(self.target),
                       "executable": "hello", "health_check": [str(self.target)]}
        else:
            install = {"prefix": str(self.prefix), "health_check": ["bin/hello"]}
        app = {"source": "manifest", "url": feed_url, "allow_insecure": True,
               "public_keys": [feed_pub], **install, **(self.schedule or {}),
               "health_timeout": "20s", "retain": 4}
        (b / "updaterd.toml").write_text(f"""[daemon]
state_dir = "{b}/state"
cache_dir = "{b}/cache"
lock_file = "{b}/updaterd.lock"
socket = "{b}/updaterd.sock"
host_id = "{self.host_id}"
platform = "linux-x86_64"
metrics_listen = "127.0.0.1:{self.port}"

[apps.hello]
""" + "".join(f"{k} = {toml_value(v)}\n" for k, v in app.items()))

    def start(self) -> None:
        env = {k: v for k, v in os.environ.items() if k != "UPDATERD_FAILPOINTS"}
        with open(self.base / "daemon.log", "ab") as log:
            self.proc = subprocess.Popen([str(BIN / "updaterd"), "--config",
                                          str(self.base / "updaterd.toml")], stdout=log,
                                         stderr=subprocess.STDOUT, env=env)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@dataclass
class GuardedFeed:
    """The feed a fleet follows, served by nginx, with 1.0.0 published, and a rollout key."""

    feed: Feed
    secret: minisign.SecretKey
    rollout_key: Path  # the secret key's file, for the publisher's commands
    url: str


def guarded_feed(base: Path, nginx: Nginx) -> GuardedFeed:
    feed = Feed(folder=nginx.root / "hello", work=base / "work")
    secret = minisign.SecretKey.generate()
    rollout_key = base / "rollout.key"
    rollout_key.write_text(secret.to_file())
    feed.publish("1.0.0", [build(feed.work, "1.0.0", "good")])
    return GuardedFeed(feed, secret, rollout_key, nginx.url("hello/manifest.json"))


class Hosts:
    """What the scenarios ask of the fleet: who runs a version, and waiting for the fleet."""

    hosts: list[FleetHost]

    def on(self, version: str) -> list[FleetHost]:
        return [h for h in self.hosts if h.current() == version]

    def wait(self, predicate: Callable[[], object], timeout: float, what: str) -> float:
        """Seconds until `predicate()`; on time-out, says what each host runs."""
        began = time.monotonic()
        while time.monotonic() - began < timeout:
            if predicate():
                return time.monotonic() - began
            time.sleep(0.2)
        counts = Counter(h.current() for h in self.hosts)
        raise AssertionError(f"timed out after {timeout:g}s waiting for {what}: {counts}")


@dataclass
class Prometheus:
    """Debian's Prometheus scraping every host each second, in a folder of its own."""

    base: Path
    targets: list[int]
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.base.mkdir(parents=True, exist_ok=True)
        targets = ", ".join(f'"127.0.0.1:{p}"' for p in self.targets)
        (self.base / "prometheus.yml").write_text(f"""global:
  scrape_interval: 1s
  scrape_timeout: 900ms
  evaluation_interval: 1s
scrape_configs:
  - job_name: updaterd
    static_configs:
      - targets: [{targets}]
""")
        with open(self.base / "prometheus.log", "ab") as log:
            self.proc = subprocess.Popen(
                [str(PROMETHEUS), f"--config.file={self.base / 'prometheus.yml'}",
                 f"--storage.tsdb.path={self.base / 'data'}",
                 f"--web.listen-address=127.0.0.1:{self.port}",
                 "--storage.tsdb.retention.time=2h", "--log.level=warn"],
                stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), \
                    urllib.request.urlopen(self.url + "/-/ready", timeout=2) as r:
                if r.status == 200:
                    return
            time.sleep(0.2)
        raise RuntimeError("Prometheus did not become ready:\n"
                           + (self.base / "prometheus.log").read_text())

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(30)

    def query(self, promql: str) -> list[dict[str, Any]]:
        url = self.url + "/api/v1/query?" + urllib.parse.urlencode({"query": promql})
        with urllib.request.urlopen(url, timeout=5) as r:
            body = json.loads(r.read())
        assert body["status"] == "success", body
        return list(body["data"]["result"])


def rss_kib(pid: int) -> int:
    """The resident memory of one process, in KiB (0 when it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


@dataclass
class Recorder:
    """Samples, twice a second, how many hosts run each version and the memory of the whole
    fleet (daemons, Prometheus, nginx): the timeline `bench/fleet_plot.py` draws."""

    hosts: list[FleetHost]
    pids: list[int]
    began: float = field(default_factory=time.time)
    samples: list[tuple[float, dict[str, int]]] = field(default_factory=list)
    # hosts that ever ran each version (now, or rolled back from it), sampled with the rest
    reached: list[tuple[float, dict[str, int]]] = field(default_factory=list)
    marks: list[tuple[float, str]] = field(default_factory=list)
    figures: dict[str, str] = field(default_factory=dict)  # what the scenarios measured
    peak_kib: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)

    def mark(self, what: str, at: float | None = None) -> None:
        self.marks.append(((at or time.time()) - self.began, what))

    def counts(self) -> Counter[str]:
        return Counter(h.current() or "none" for h in self.hosts)

    def ever(self) -> Counter[str]:
        found: Counter[str] = Counter()
        for h in self.hosts:
            found.update({h.current() or "none", *h.state().get("rollbacks_from", {})})
        return found

    @contextlib.contextmanager
    def running(self) -> Iterator[Recorder]:
        def loop() -> None:
            n = 0
            while not self._stop.wait(0.5):
                self.samples.append((time.time() - self.began, dict(self.counts())))
                n += 1
                if n % 2 == 0:
                    self.reached.append((time.time() - self.began, dict(self.ever())))
                    pids = [h.proc.pid for h in self.hosts if h.proc is not None] + self.pids
                    self.peak_kib = max(self.peak_kib, sum(rss_kib(p) for p in pids))

        t = threading.Thread(target=loop, daemon=True)
        t.start()
        try:
            yield self
        finally:
            self._stop.set()
            t.join()

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"samples": self.samples, "reached": self.reached,
                                    "marks": self.marks,
                                    "figures": self.figures, "peak_kib": self.peak_kib,
                                    "hosts": len(self.hosts),
                                    "seconds": time.time() - self.began}))
