"""End to end: the real `updaterd` command against signed feeds served by nginx on 127.0.0.1."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.conftest import FaultServer, Host, Nginx
from tests.helpers import Feed, run_updaterd


def once(host: Host) -> subprocess.CompletedProcess[str]:
    return run_updaterd("--config", host.config, "--once")


def hello(host: Host) -> str:
    out = subprocess.run([str(host.prefix / "bin" / "hello")], capture_output=True, text=True,
                         check=True)
    return out.stdout.strip()


def assert_clean(host: Host) -> None:
    """No staging leftovers, no temp files, no pending transaction."""
    staging = host.prefix / ".staging"
    assert not staging.exists() or not any(staging.iterdir())
    assert not [p for p in host.prefix.iterdir() if p.name.startswith(".updaterd-tmp")]
    assert host.state()["pending"] is None


def test_first_install_then_update(host: Host, nginx: Nginx, served_feed: Feed) -> None:
    served_feed.release("1.0.0")
    host.follow(nginx, served_feed)
    r = once(host)
    assert r.returncode == 0, r.stderr
    assert host.current() == "1.0.0"
    assert hello(host) == "hello 1.0.0"
    served_feed.release("1.1.0")
    r = once(host)
    assert r.returncode == 0, r.stderr
    assert hello(host) == "hello 1.1.0"
    state = host.state()
    assert (state["installed"], state["previous"]) == ("1.1.0", "1.0.0")
    assert state["serial"] == 2
    assert sorted(os.listdir(host.prefix / "releases")) == ["1.0.0", "1.1.0"]
    assert_clean(host)


@pytest.mark.parametrize("fmt", ["tar.gz", "tar.xz", "tar.zst", "tar.bz2", "zip"])
def test_every_archive_format_installs(host: Host, nginx: Nginx, served_feed: Feed,
                                       fmt: str) -> None:
    served_feed.release("2.0.0", fmt=fmt)
    host.follow(nginx, served_feed)
    assert once(host).returncode == 0
    assert hello(host) == "hello 2.0.0"
    assert (host.prefix / "current" / "share" / "VERSION").read_text() == "2.0.0\n"


def test_raw_executable_installs_under_configured_name(host: Host, nginx: Nginx,
                                                       served_feed: Feed) -> None:
    from tests.helpers import app_script

    art = served_feed.work / "hello-3.0.0-linux-x86_64"
    art.write_bytes(app_script("3.0.0"))
    served_feed.publish("3.0.0", [art])
    host.follow(nginx, served_feed, executable="hello", health_check=["./hello"])
    r = once(host)
    assert r.returncode == 0, r.stderr
    exe = host.prefix / "current" / "hello"
    assert os.access(exe, os.X_OK)
    assert hello(host) == "hello 3.0.0"


def test_c64_failed_health_check_rolls_back_and_blocks(host: Host, nginx: Nginx,
                                                   served_feed: Feed) -> None:
    served_feed.release("1.0.0")
    host.follow(nginx, served_feed)
    assert once(host).returncode == 0
    served_feed.release("1.1.0", healthy=False)
    r = once(host)
    assert r.returncode == 1
    assert "1.1.0 was rolled back to 1.0.0" in r.stderr
    assert "hello: rolled back to 1.0.0" in r.stderr
    assert host.current() == "1.0.0"
    assert hello(host) == "hello 1.0.0"
    state = host.state()
    assert state["installed"] == "1.0.0"
    assert state["blocked"] == ["1.1.0"]
    assert state["available"] is None, "a blocked version is no longer on offer"
    # the rollback and the block, each recorded
    assert [h["action"] for h in state["history"]] == ["installed", "rolled_back", "blocked"]
    assert not (host.prefix / "releases" / "1.1.0").exists()
    assert_clean(host)
    # a blocked version is never installed again by itself
    r = once(host)
    assert r.returncode == 0 and host.current() == "1.0.0"
    assert "up to date at 1.0.0" in r.stderr


def test_a_restart_failing_after_a_rollback_is_logged_and_the_rollback_holds(
        host: Host, nginx: Nginx, served_feed: Feed) -> None:
    """The old version's restart fails too: nothing is left to go back to, so the rollback is
    finished (switched, recorded, the new version blocked) and the failure is in the log."""
    broken = host.base / "old-restart-fails"
    host.follow(nginx, served_feed, restart=[
        "sh", "-c", f'[ "$UPDATERD_VERSION" != 1.0.0 ] || [ ! -e {broken} ] || exit 3'])
    served_feed.release("1.0.0")
    assert once(host).returncode == 0
    broken.touch()
    served_feed.release("1.1.0", healthy=False)
    r = once(host)
    assert r.returncode == 1
    assert "hello: restart after rolling back to 1.0.0 failed" in r.stderr, r.stderr
    assert host.current() == "1.0.0"
    state = host.state()
    assert state["installed"] == "1.0.0" and state["blocked"] == ["1.1.0"]
    assert_clean(host)


def test_recovery_removes_temp_files_left_in_the_cache(host: Host, nginx: Nginx,
                                                       served_feed: Feed) -> None:
    served_feed.release("1.0.0")
    host.follow(nginx, served_feed)
    assert once(host).returncode == 0
    cache = host.base / "cache" / "hello"
    left = cache / ".updaterd-tmp-partial.json"
    left.write_text("{}")
    assert once(host).returncode == 0
    assert not left.exists()


def test_blocked_version_can_be_installed_on_purpose(host: Host, nginx: Nginx,
                                                     served_feed: Feed) -> None:
    served_feed.release("1.0.0")
    served_feed.release("1.1.0")
    host.follow(nginx, served_feed)
    host_state = host.state_dir / "hello"
    host_state.mkdir(parents=True)
    (host_state / "state.json").write_text('{"schema": 1, "blocked": ["1.1.0"]}')
    assert once(host).returncode == 0
    assert host.current() == "1.0.0"
    r = run_updaterd("--config", host.config, "update", "hello", "--version", "1.1.0")
    assert r.returncode == 0, r.stderr
    assert host.current() == "1.1.0"


def test_tampered_artifact_is_refused_and_nothing_installed(host: Host, nginx: Nginx,
                                                            served_feed: Feed) -> None:
    art = served_feed.release("1.0.0")
    data = bytearray((served_feed.folder / art.name).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (served_feed.folder / art.name).write_bytes(bytes(data))
    host.follow(nginx, served_feed)
    r = once(host)
    assert r.returncode == 1
    assert "mismatch" in r.stderr
    assert host.current() is None
    assert not any((host.prefix / "releases").iterdir())
    assert not any((host.base / "cache" / "hello").iterdir())


def test_bad_signature_is_refused(host: Host, nginx: Nginx, served_feed: Feed) -> None:
    served_feed.release("1.0.0")
    raw = (served_feed.folder / "manifest.json").read_bytes()
    (served_feed.folder / "manifest.json").write_bytes(raw.replace(b'"1.0.0"', b'"1.0.1"'))
    host.follow(nginx, served_feed)
    r = once(host)
    assert r.returncode == 1
    assert "signature" in r.stderr
    assert host.current() is None
    assert host.state()["serial"] is None


def test_unknown_key_is_refused(host: Host, nginx: Nginx, served_feed: Feed,
                                tmp_path: object) -> None:
    served_feed.release("1.0.0")
    other = Feed(folder=served_feed.work / "other", work=served_feed.work / "otherkey")
    host.follow(nginx, served_feed)
    host.configure(source="manifest",
                   url=nginx.url(f"{served_feed.folder.name}/manifest.json"),
                   public_keys=[other.pub], allow_insecure=True)
    r = once(host)
    assert r.returncode == 1 and "unknown key" in r.stderr
    assert host.current() is None


def test_expired_manifest_is_refused(host: Host, nginx: Nginx, served_feed: Feed) -> None:
    served_feed.release("1.0.0", now=datetime.now(UTC) - timedelta(days=40))
    host.follow(nginx, served_feed)
    r = once(host)
    assert r.returncode == 1 and "expired" in r.stderr
    assert host.current() is None


def test_lower_serial_is_refused(host: Host, nginx: Nginx, served_feed: Feed) -> None:
    served_feed.release("1.0.0")
    old = served_feed.work / "old"
    old.mkdir()
    for name in ("manifest.json", "manifest.json.minisig"):
        shutil.copy(served_feed.folder / name, old / name)
    served_feed.release("1.1.0")
    host.follow(nginx, served_feed)
    assert once(host).returncode == 0
    assert host.state()["serial"] == 2
    for name in ("manifest.json", "manifest.json.minisig"):  # a stale mirror or an attacker
        shutil.copy(old / name, served_feed.folder / name)
    r = once(host)
    assert r.returncode == 1 and "below 2" in r.stderr
    assert host.state()["serial"] == 2
    assert host.current() == "1.1.0"


def test_not_modified_check_downloads_no_body(host: Host, nginx: Nginx,
                                              served_feed: Feed) -> None:
    served_feed.release("1.0.0")
    host.follow(nginx, served_feed)
    assert once(host).returncode == 0
    first_check = host.state()["last_check"]
    mark = len(nginx.requests())
    assert once(host).returncode == 0
    manifest_uri = f"/{served_feed.folder.name}/manifest.json"
    later = [r for r in nginx.requests()[mark:] if r["uri"] == manifest_uri]
    assert [(r["status"], r["bytes"]) for r in later] == [(304, 0)]
    assert host.state()["last_check"] > first_check


def test_manual_rollback_goes_back_and_skips(host: Host, nginx: Nginx,
                                             served_feed: Feed) -> None:
    served_feed.release("1.0.0")
    host.follow(nginx, served_feed)
    assert once(host).returncode == 0
    served_feed.release("1.1.0")
    assert once(host).returncode == 0
    r = run_updaterd("--config", host.config, "rollback", "hello")
    assert r.returncode == 0, r.stderr
    assert hello(host) == "hello 1.0.0"
    state = host.state()
    assert state["installed"] == "1.0.0" and "1.1.0" in state["skipped"]
    assert (host.prefix / "releases" / "1.1.0").is_dir(), "the version left is kept, to go back"
    assert once(host).returncode == 0
    assert host.current() == "1.0.0", "a version rolled back from is not reinstalled by itself"
    r = run_updaterd("--config", host.config, "rollback", "hello", "--to", "9.9.9")
    assert r.returncode == 1 and "not kept" in r.stderr


def test_c67_retain_prunes_old_releases_but_keeps_previous(host: Host, nginx: Nginx,
                                                       served_feed: Feed) -> None:
    host.follow(nginx, served_feed, retain=1)
    for v in ("1.0.0", "1.1.0", "1.2.0", "1.3.0"):
        served_feed.release(v)
        assert once(host).returncode == 0
    assert sorted(os.listdir(host.prefix / "releases")) == ["1.2.0", "1.3.0"]


def test_verify_rehashes_kept_releases_and_names_what_changed(host: Host, nginx: Nginx,
                                                              served_feed: Feed) -> None:
    host.follow(nginx, served_feed)
    for v in ("1.0.0", "1.1.0"):
        served_feed.release(v)
        assert once(host).returncode == 0
    assert sorted(os.listdir(host.state_dir / "hello" / "trees")) == ["1.0.0.json",
                                                                     "1.1.0.json"]
    r = run_updaterd("--config", host.config, "verify")
    assert r.returncode == 0 and r.stdout.count(": intact") == 2, r.stdout
    data = host.prefix / "releases" / "1.0.0" / "share" / "data.bin"
    data.chmod(0o644)
    data.write_bytes(b"bit rot")
    (host.prefix / "releases" / "1.1.0" / "share" / "planted").write_text("x")
    r = run_updaterd("--config", host.config, "verify", "hello")
    assert r.returncode == 1
    assert "hello 1.0.0: 1 differences\n  share/data.bin: changed (f)" in r.stdout
    assert "share/planted: not in the release as installed" in r.stdout


def test_c68_second_instance_is_refused_while_lock_held(host: Host, nginx: Nginx,
                                                    served_feed: Feed) -> None:
    import fcntl

    served_feed.release("1.0.0")
    host.follow(nginx, served_feed)
    lock = host.base / "updaterd.lock"
    with open(lock, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        f.write("4242\n")
        f.flush()
        r = once(host)
    assert r.returncode == 1 and "pid 4242" in r.stderr


def test_update_survives_dropped_connection_and_resumes(host: Host, fault_server: FaultServer,
                                                        tmp_path: Path) -> None:
    """The real updaterd against the fault server: manifest, signature and artifact each lose
    their first connection mid-body; the update still succeeds and the artifact is resumed."""
    feed = Feed(folder=fault_server.root, work=tmp_path / "work")
    art = feed.release("1.0.0")
    host.configure(source="manifest", url=fault_server.url("drop", "manifest.json"),
                   public_keys=[feed.pub], allow_insecure=True)
    r = once(host)
    assert r.returncode == 0, r.stderr
    assert hello(host) == "hello 1.0.0"
    artifact_requests = [q for q in fault_server.requests() if q["path"].endswith(art.name)]
    assert [q["status"] for q in artifact_requests] == [200, 206]
    assert artifact_requests[1]["range"] == f"bytes={artifact_requests[0]['sent']}-"


def test_c70_lock_file_planted_as_symlink_is_refused(host: Host, nginx: Nginx,
                                                     served_feed: Feed) -> None:
    served_feed.release("1.0.0")
    host.follow(nginx, served_feed)
    (host.base / "elsewhere").write_text("")
    (host.base / "updaterd.lock").symlink_to(host.base / "elsewhere")
    r = once(host)
    assert r.returncode == 1
    assert "lock file" in r.stderr and "symbolic link" in r.stderr and "Traceback" not in r.stderr


def test_a_304_to_a_request_without_validators_is_a_clear_feed_error(
        host: Host, fault_server: FaultServer, tmp_path: Path) -> None:
    """A broken server or cache that answers 304 Not Modified to the first request (no ETag was
    sent, no copy is kept) gets a message naming it, not an AssertionError."""
    feed = Feed(folder=fault_server.root, work=tmp_path / "work")
    feed.release("1.0.0")
    host.configure(source="manifest", url=fault_server.url("always304", "manifest.json"),
                   public_keys=[feed.pub], allow_insecure=True)
    r = once(host)
    assert r.returncode == 1, r.stderr
    assert "answered 304 Not Modified to a request that carried no validator" in r.stderr
    assert "Traceback" not in r.stderr and "AssertionError" not in r.stderr
    assert host.current() is None


def test_without_allowed_hosts_an_artifact_on_a_host_the_signed_manifest_names_is_fetched(
        host: Host, nginx: Nginx, served_feed: Feed) -> None:
    """The feed at 127.0.0.1 names its artifact at localhost (another host, the same nginx):
    with no `allowed_hosts`, the hosts the signed manifest names are admitted."""
    served_feed.release("1.0.0")
    m = served_feed.manifest()
    entry = m["releases"][0]["artifacts"][0]
    entry["url"] = f"http://localhost:{nginx.port}/{served_feed.folder.name}/{entry['url']}"
    (served_feed.folder / "manifest.json").write_text(json.dumps(m))
    served_feed.resign()
    host.follow(nginx, served_feed)
    r = once(host)
    assert r.returncode == 0, r.stderr
    assert hello(host) == "hello 1.0.0"


def test_a_download_killed_on_a_slow_link_keeps_what_arrived_and_resumes_from_it(
        host: Host, nginx: Nginx, served_feed: Feed, tmp_path: Path) -> None:
    """At 300 KiB/s a kill -9 after 3 s kept nothing (the writer held 1 MiB batches in memory):
    every byte received more than a quarter of a second before the kill is on disk. (A zip
    goes through the cache; a tar streams into its staging folder and starts over after a
    kill -9: tests/test_streaming.py.)"""
    import signal
    import time

    from tests.helpers import BIN, make_zip, release_files

    files = release_files("1.0.0")
    files["share/big.bin"] = (os.urandom(3 << 20), 0o644)
    art = make_zip(served_feed.work / "hello-1.0.0-linux-x86_64.zip", files,
                   top="hello-1.0.0")
    served_feed.publish("1.0.0", [art])
    host.follow(nginx, served_feed, max_rate="300KiB/s")
    part = host.base / "cache" / "hello" / f"{art.name}.part"
    proc = subprocess.Popen([str(BIN / "updaterd"), "--config", str(host.config), "--once"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while not part.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(3)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    kept = part.stat().st_size
    assert kept >= 600 << 10, f"{kept} bytes kept of about 900 KiB received"
    r = once(host)
    assert r.returncode == 0, r.stderr
    assert hello(host) == "hello 1.0.0"
    ranges = [q["range"] for q in nginx.requests()
              if q["uri"].endswith(art.name)]
    assert ranges[-1] == f"bytes={kept}-", ranges
