"""Rows of catalogue group A that need the real updaterd and a served feed."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.conftest import Daemon, Host, Nginx
from tests.helpers import Feed, make_zip, release_files, run_updaterd


def hello(host: Host) -> str:
    return subprocess.run([str(host.prefix / "bin" / "hello")], capture_output=True,
                          text=True).stdout.strip()


def test_a17_cached_artifact_from_an_older_serial_is_not_trusted(
        host: Host, nginx: Nginx, served_feed: Feed) -> None:
    """An artifact downloaded under serial 1 is re-verified against serial 2's digests. (A
    zip: it goes through the cache; a tar streams and is never kept whole.)"""
    art = served_feed.release("1.0.0", fmt="zip")
    host.follow(nginx, served_feed)
    r = run_updaterd("--config", host.config, "--once",
                     env={"UPDATERD_FAILPOINTS": "stage.after_extract=exit"})
    assert r.returncode == 99
    cached = host.base / "cache" / "hello" / art.name
    assert cached.exists(), "the verified download stays in the cache"
    # serial 2 publishes other bytes under the same name and version
    files = release_files("1.0.0")
    files["share/VERSION"] = (b"1.0.0 rebuilt\n", 0o644)
    make_zip(art, files, top="hello-1.0.0")
    served_feed.republish_by_hand("1.0.0", art)  # `publish` itself refuses this (H155)
    r = run_updaterd("--config", host.config, "--once", "-v")
    assert r.returncode == 0, r.stderr
    assert "cached copy does not verify" in r.stderr
    assert (host.prefix / "current" / "share" / "VERSION").read_text() == "1.0.0 rebuilt\n"
    assert host.state()["serial"] == 2


def test_a08_older_version_only_through_the_explicit_path(host: Host, nginx: Nginx,
                                                         served_feed: Feed) -> None:
    served_feed.release("1.0.0")
    served_feed.release("1.1.0")
    host.follow(nginx, served_feed)
    assert run_updaterd("--config", host.config, "--once").returncode == 0
    assert hello(host) == "hello 1.1.0"
    # the feed now offers only the older version: an automatic run never goes back
    manifest = served_feed.manifest()
    assert [r["version"] for r in manifest["releases"]] == ["1.0.0", "1.1.0"]
    r = run_updaterd("--config", host.config, "--once")
    assert r.returncode == 0 and hello(host) == "hello 1.1.0"
    r = run_updaterd("--config", host.config, "update", "hello", "--version", "1.0.0")
    assert r.returncode == 0, r.stderr
    assert hello(host) == "hello 1.0.0"
    r = run_updaterd("--config", host.config, "--once")
    assert hello(host) == "hello 1.1.0", "a downgrade on purpose is not pinned: newer returns"


def test_a27_corrupt_state_refuses_updates_until_resumed(host: Host, nginx: Nginx,
                                                        served_feed: Feed,
                                                        daemon: Daemon) -> None:
    served_feed.release("1.0.0")
    host.follow(nginx, served_feed)
    assert run_updaterd("--config", host.config, "--once").returncode == 0
    serial = host.state()["serial"]
    path = host.state_dir / "hello" / "state.json"
    text = path.read_text()
    path.write_text(text[:text.index('"pending"')])  # torn after the serial
    served_feed.release("1.1.0")
    r = run_updaterd("--config", host.config, "--once")
    assert r.returncode == 0 and "paused" in r.stderr
    assert host.current() == "1.0.0", "no automatic update on a state that lost its memory"
    state = host.state()
    assert state["paused"] and state["serial"] >= serial
    daemon.start()
    app = daemon.app()
    assert app["paused"] and "corrupt" in app["last_error"] and app["current"] == "1.0.0"
    daemon.ctl("resume", "hello", check=True)  # the operator looked: updates go on
    daemon.wait_for(lambda: daemon.app()["current"] == "1.1.0", what="the update after resume")


def test_a26_a_failed_candidate_is_never_persisted(host: Host, nginx: Nginx,
                                                   served_feed: Feed) -> None:
    """Bad candidates (forged signature with a higher serial; signed but for another app;
    signed but expired) leave serial, validators and the kept copy of the feed as they were."""
    import json

    served_feed.release("1.0.0")
    host.follow(nginx, served_feed)
    assert run_updaterd("--config", host.config, "--once").returncode == 0
    kept = host.state_dir / "hello" / "feed.json"
    trusted = {k: host.state()[k] for k in ("serial", "etag", "last_modified",
                                            "manifest_digest")}
    trusted_copy = kept.read_bytes()
    good = {n: (served_feed.folder / n).read_bytes()
            for n in ("manifest.json", "manifest.json.minisig")}
    manifest = json.loads(good["manifest.json"])

    def serve(edit: dict[str, object], sign: bool) -> None:
        (served_feed.folder / "manifest.json").write_text(json.dumps({**manifest, **edit}))
        if sign:
            served_feed.resign()
        else:
            (served_feed.folder / "manifest.json.minisig").write_bytes(
                good["manifest.json.minisig"])

    for edit, sign, why in (({"serial": 99}, False, "signature"),
                            ({"serial": 99, "app": "other"}, True, "for app 'other'"),
                            ({"serial": 99, "expires": "2001-01-01T00:00:00Z"}, True,
                             "expired")):
        serve(edit, sign)
        r = run_updaterd("--config", host.config, "--once")
        assert r.returncode == 1 and why in r.stderr, r.stderr
        state = host.state()
        assert {k: state[k] for k in trusted} == trusted, why
        assert kept.read_bytes() == trusted_copy, why
    for name, data in good.items():
        (served_feed.folder / name).write_bytes(data)
    served_feed.release("1.1.0")  # the next honest cycle starts from the trusted state
    assert run_updaterd("--config", host.config, "--once").returncode == 0
    assert host.current() == "1.1.0" and host.state()["serial"] == trusted["serial"] + 1


def test_f125_release_notes_are_inert(host: Host, nginx: Nginx, served_feed: Feed,
                                      daemon: Daemon, tmp_path: Path) -> None:
    """Notes full of shell, paths and terminal escapes: nothing runs, nothing is created,
    nothing reaches a terminal."""
    pwned = tmp_path / "pwned"
    notes = (f"$(touch {pwned}) `touch {pwned}`; touch {pwned}\n../../../{pwned.name}\n"
             "\x1b]0;owned\x07\x1b[2J<script>alert(1)</script>\x00")
    art = served_feed.release("1.0.0")
    served_feed.publish("1.0.0", [art], notes=notes)
    host.follow(nginx, served_feed)
    daemon.start()
    daemon.wait_for(lambda: daemon.app()["current"] == "1.0.0", what="install")
    outputs = [daemon.ctl(*args, check=True).stdout for args in
               (["status"], ["history", "hello"], ["list-backups", "hello"],
                ["check", "hello"])]
    assert not pwned.exists()
    assert not any("\x1b" in out or "\x07" in out for out in outputs)
    created = [p for p in (host.base).rglob("*") if "pwned" in p.name or "script" in p.name]
    assert created == []
