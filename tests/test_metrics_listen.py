"""`[daemon] metrics_listen`: the real daemon serves its metrics on plain HTTP for a Prometheus
to scrape, GET /metrics and nothing else (catalogue row I167), with the series a guarded rollout
reads: the installed version, rollbacks and failed checks per version, the last switch."""

from __future__ import annotations

import socket
import threading
import time
import urllib.error
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import Daemon, Host, Nginx
from tests.helpers import Feed, run_updaterd, write_config
from tests.servers.nginx import free_port


def listening(host: Host, nginx: Nginx, feed: Feed) -> str:
    host.follow(nginx, feed)
    port = free_port()
    text = host.config.read_text().replace(
        "[daemon]\n", f'[daemon]\nmetrics_listen = "127.0.0.1:{port}"\n', 1)
    host.config.write_text(text)
    return f"http://127.0.0.1:{port}"


def scrape(url: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    with urllib.request.urlopen(url + "/metrics", timeout=5) as r:
        assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = r.read().decode()
    return {f.name: [(s.labels, s.value) for s in f.samples]
            for f in text_string_to_metric_families(text)}


def test_i167_the_series_a_rollout_reads_are_served_on_http(
        host: Host, nginx: Nginx, served_feed: Feed, daemon: Daemon) -> None:
    served_feed.release("1.0.0")
    url = listening(host, nginx, served_feed)
    daemon.start()
    daemon.wait_for(lambda: daemon.app()["current"] == "1.0.0", what="first install")
    served_feed.release("1.1.0", healthy=False)
    daemon.ctl("update", "hello")
    daemon.wait_for(lambda: "1.1.0" in host.state()["blocked"], what="the rollback")
    m = scrape(url)
    assert ({"app": "hello", "installed": "1.0.0", "available": ""}, 1.0) in \
        m["updaterd_app_info"]
    assert m["updaterd_release_failed_checks"] == [({"app": "hello", "version": "1.1.0"}, 1.0)]
    assert m["updaterd_release_rollbacks"] == [({"app": "hello", "version": "1.1.0"}, 1.0)]
    (_labels, switched), = m["updaterd_last_switch_timestamp_seconds"]
    assert time.time() - 60 < switched <= time.time()
    daemon.stop()
    daemon.start()  # the per-version counters are kept across a restart: they never fall back
    daemon.wait_ready()  # and the port is served by then: no retry here
    m = scrape(url)
    assert m["updaterd_release_failed_checks"] == [({"app": "hello", "version": "1.1.0"}, 1.0)]


def test_i167_only_get_metrics_and_no_client_holds_it_for_long(
        host: Host, nginx: Nginx, served_feed: Feed, daemon: Daemon) -> None:
    served_feed.release("1.0.0")
    url = listening(host, nginx, served_feed)
    daemon.start()
    daemon.wait_ready()
    for path, method, code in (("/", "GET", 404), ("/metrics/../etc", "GET", 404),
                               ("/metrics", "POST", 405), ("/metrics", "DELETE", 405)):
        req = urllib.request.Request(url + path, method=method, data=b"x" if method == "POST"
                                     else None)
        try:
            urllib.request.urlopen(req, timeout=5)
            raise AssertionError(f"{method} {path} was answered")
        except urllib.error.HTTPError as e:
            assert e.code == code, (method, path, e.code)
    head = urllib.request.urlopen(urllib.request.Request(url + "/metrics", method="HEAD"),
                                  timeout=5)
    assert head.status == 200 and head.read() == b""
    port = int(url.rsplit(":", 1)[1])
    # an oversized request line is cut off, not read on
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"GET /" + b"a" * 20000 + b" HTTP/1.1\r\n")
        s.settimeout(10)
        try:
            answer = s.recv(100)
        except ConnectionResetError:
            answer = b""
        assert not answer.startswith(b"HTTP/1.1 200")
    # twenty clients that connect and say nothing are dropped within seconds
    idle = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(20)]
    try:
        started = time.monotonic()
        while True:
            try:
                scrape(url)
                break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                assert time.monotonic() - started < 8, "the idle clients held it too long"
                time.sleep(0.2)
        assert "updaterd_app_info" in scrape(url)
    finally:
        for s in idle:
            s.close()
    assert daemon.proc is not None and daemon.proc.poll() is None


def test_a_bad_metrics_listen_is_refused_by_check_config(host: Host, feed: Feed) -> None:
    for bad, why in (("9137", "expected HOST:PORT"), ("localhost:9137", "does not appear to "
                     "be an IPv4 or IPv6 address"), ("127.0.0.1:99999", "not between 1 and "
                     "65535")):
        write_config(host.config, {**host.daemon_table(), "metrics_listen": bad},
                     {"hello": {"source": "directory", "path": str(feed.folder),
                                "prefix": str(host.prefix)}})
        r = run_updaterd("--config", host.config, "check-config")
        assert r.returncode == 2 and f"daemon.metrics_listen: {bad!r}: " in r.stderr \
            and why in r.stderr, r.stderr


def test_a_taken_metrics_port_is_logged_and_updates_go_on(
        host: Host, nginx: Nginx, served_feed: Feed, daemon: Daemon) -> None:
    served_feed.release("1.0.0")
    url = listening(host, nginx, served_feed)
    port = int(url.rsplit(":", 1)[1])
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", port))
        taken.listen()
        daemon.start()
        daemon.wait_for(lambda: daemon.app()["current"] == "1.0.0", what="the install")
        log = daemon.log.read_text()
        assert f"metrics_listen 127.0.0.1:{port}: Address already in use; the metrics are " \
               "not served there (trying again in 30s)" in log, log
        assert "Traceback" not in log


def test_j174_one_peer_flooding_silent_connections_never_hides_the_host_from_another(
        host: Host, nginx: Nginx, served_feed: Feed, daemon: Daemon) -> None:
    """A peer at 127.0.0.1 keeps 24 silent connections open, opening new ones as the old are
    dropped; Prometheus at 127.0.0.2 scrapes every 0.3 s meanwhile and is answered each time."""
    served_feed.release("1.0.0")
    url = listening(host, nginx, served_feed)
    daemon.start()
    daemon.wait_ready()
    port = int(url.rsplit(":", 1)[1])
    stop = threading.Event()

    def flood() -> None:
        held: list[socket.socket] = []
        while not stop.is_set():
            alive = []
            for s in held:  # a dropped one reads as b"" at once
                s.setblocking(False)
                try:
                    if s.recv(1) == b"":
                        s.close()
                        continue
                except BlockingIOError:
                    pass
                except OSError:
                    s.close()
                    continue
                alive.append(s)
            held = alive
            while len(held) < 24:
                held.append(socket.create_connection(("127.0.0.1", port), timeout=5))
            time.sleep(0.05)
        for s in held:
            s.close()

    flooder = threading.Thread(target=flood, daemon=True)
    flooder.start()
    try:
        time.sleep(1)
        for _ in range(20):
            with socket.create_connection(("127.0.0.1", port), timeout=5,
                                          source_address=("127.0.0.2", 0)) as s:
                s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
                s.settimeout(5)
                answer = s.recv(100)
            assert answer.startswith(b"HTTP/1.1 200"), answer
            time.sleep(0.3)
    finally:
        stop.set()
        flooder.join(10)
