"""Delta updates end to end: the real `updaterd publish` writes the packs, the real `updaterd
--once` fetches them from nginx; and a daemon built from the commit before deltas existed still
installs from a feed published with them."""

from __future__ import annotations

import json
import random
import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import Daemon, Host, Nginx
from tests.helpers import Feed, code_of_commit, make_tar, run_updaterd, write_config
from tests.test_operations import metric

BEFORE_DELTAS = "a3256a4"  # the last commit whose daemon knows nothing of deltas


def app_files(version: str, changed: str) -> dict[str, tuple[bytes, int]]:
    """300 files that do not compress (the same in every version), one of them changed."""
    files = {f"lib/part{i:03}.txt": (random.Random(i).randbytes(2000), 0o644)
             for i in range(300)}
    files["bin/hello"] = (f'#!/bin/sh\necho "hello {version}"\n'.encode(), 0o755)
    data, mode = files[changed]
    files[changed] = (data + f"changed in {version}\n".encode(), mode)
    return files


def publish_cli(feed: Feed, version: str, changed: str) -> Path:
    """`updaterd publish` as a release engineer runs it (deltas from the 2 releases before)."""
    art = make_tar(feed.work / f"hello-{version}-linux-x86_64.tar.gz",
                   app_files(version, changed), top=f"hello-{version}")
    run_updaterd("publish", "--feed", feed.folder, "--key", feed.key, "--app", "hello",
                 "--version", version, art)
    return art


def test_an_update_over_http_fetches_the_pack_not_the_artifact(host: Host, nginx: Nginx,
                                                                served_feed: Feed) -> None:
    publish_cli(served_feed, "1.0.0", "lib/part000.txt")
    host.follow(nginx, served_feed)
    run_updaterd("--config", host.config, "--once")
    assert host.current() == "1.0.0"
    art = publish_cli(served_feed, "1.1.0", "lib/part150.txt")
    names = sorted(p.name for p in served_feed.folder.iterdir())
    assert f"{art.name}.delta.zst" in names and f"{art.name}.from-1.0.0.delta" in names
    mark = len(nginx.requests())
    r = run_updaterd("--config", host.config, "--once")
    assert host.current() == "1.1.0", r.stderr
    time.sleep(0.2)  # nginx logs a request after answering it
    fetched = [req["uri"].rsplit("/", 1)[-1] for req in nginx.requests()[mark:]
               if f"/{served_feed.folder.name}/" in req["uri"]]
    assert f"{art.name}.from-1.0.0.delta" in fetched and art.name not in fetched
    pack = (served_feed.folder / f"{art.name}.from-1.0.0.delta").stat().st_size
    assert pack * 20 < art.stat().st_size
    verify = run_updaterd("--config", host.config, "verify", "hello")
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert "1.1.0" in verify.stdout


def test_a_daemon_from_before_deltas_installs_from_a_feed_with_them(host: Host,
                                                                    tmp_path: Path) -> None:
    old = tmp_path / "old"
    env = code_of_commit(BEFORE_DELTAS, old)
    assert not (old / "daemon" / "updaterd" / "delta.py").exists()
    feed = Feed(tmp_path / "feed", tmp_path / "work")
    publish_cli(feed, "1.0.0", "lib/part000.txt")
    table = {"source": "directory", "path": str(feed.folder), "prefix": str(host.prefix),
             "public_keys": [feed.pub], "health_check": ["bin/hello"]}
    write_config(host.config, host.daemon_table(), {"hello": table})
    for version in ("1.0.0", "1.1.0"):
        if version == "1.1.0":
            art = publish_cli(feed, "1.1.0", "lib/part150.txt")
            manifest = json.loads((feed.folder / "manifest.json").read_text())
            platforms = [a["platform"] for r in manifest["releases"] for a in r["artifacts"]]
            assert "linux-x86_64.delta" in platforms and (feed.folder /
                                                          f"{art.name}.delta.zst").exists()
        r = subprocess.run([sys.executable, "-m", "updaterd", "--config", str(host.config),
                            "--once"], env=env, capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        assert host.current() == version, r.stderr


def test_the_daemon_counts_delta_bytes_and_fallbacks_and_history_says_what_was_saved(
        host: Host, nginx: Nginx, served_feed: Feed, daemon: Daemon) -> None:
    publish_cli(served_feed, "1.0.0", "lib/part000.txt")
    host.follow(nginx, served_feed)
    daemon.start()
    daemon.wait_for(lambda: daemon.app()["current"] == "1.0.0", what="first install")
    full = metric(daemon, "updaterd_downloaded_bytes_total", 'app="hello",plan="full"')
    assert full > 0 and metric(daemon, "updaterd_downloaded_bytes_total",
                               'app="hello",plan="delta"') == 0
    publish_cli(served_feed, "1.1.0", "lib/part150.txt")
    out = daemon.ctl("update", "hello", check=True).stdout
    assert "installed 1.1.0 (was 1.0.0) as a delta from 1.0.0:" in out
    delta_bytes = metric(daemon, "updaterd_downloaded_bytes_total", 'app="hello",plan="delta"')
    assert 0 < delta_bytes < full / 10
    history = json.loads(daemon.ctl("--json", "history", "hello", check=True).stdout)
    assert history[-1]["reason"].startswith("as a delta from 1.0.0: ")
    assert f"1.1.0 was installed {history[-1]['reason']}" in daemon.app()["notes"]
    art = publish_cli(served_feed, "1.2.0", "lib/part200.txt")
    (served_feed.folder / f"{art.name}.from-1.1.0.delta").unlink()  # a 404
    (served_feed.folder / f"{art.name}.from-1.0.0.delta").unlink()
    daemon.ctl("update", "hello", check=True)
    assert host.current() == "1.2.0"
    assert metric(daemon, "updaterd_delta_fallbacks_total", 'app="hello",reason="failed"') == 1
    assert metric(daemon, "updaterd_delta_fallbacks_total", 'app="hello",reason="mismatch"') == 0
    assert metric(daemon, "updaterd_downloaded_bytes_total", 'app="hello",plan="full"') > full
    log = daemon.log.read_text()
    assert "was not used" in log and "fetching the full artifact" in log
