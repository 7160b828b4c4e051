"""The publisher's side as a publisher uses it (H155-H156): a CI job that writes its
artifact under a fixed name, an overwrite by mistake, a key rotation done wrong then right, a
re-signature on a timer, a yank, a promotion, a prune, a file changed on the server; real
`updaterd publish`, `rotate-keys` and `feed` commands, a feed served by nginx, and real daemons
(one trusting the first key, one set up after the rotation) that must never refuse the feed nor
lose a listed release at any step."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import Daemon, Host, Nginx
from tests.helpers import Feed, code_of_commit, make_tar, release_files, run_updaterd

BEFORE_YANK = "236bd39"  # the last commit whose daemon knows nothing of yanking
WHY = "corrupts its cache on start; 1.1.1 fixes it"


def _yank(feed: Feed, version: str, *extra: str,
          key: Path | None = None) -> subprocess.CompletedProcess[str]:
    return run_updaterd("feed", "yank", "--feed", feed.folder, "--key", key or feed.key,
                        version, *extra)


def _ci_build(dist: Path, version: str) -> Path:
    """What a CI job leaves behind: the same file name for every version."""
    dist.mkdir(exist_ok=True)
    return make_tar(dist / "hello-linux-x86_64.tar.gz", release_files(version),
                    top=f"hello-{version}")


def _publish(feed: Feed, version: str, art: Path | None, *extra: str,
             key: Path | None = None) -> subprocess.CompletedProcess[str]:
    return run_updaterd("publish", "--feed", feed.folder, "--key", key or feed.key, "--app",
                        "hello", "--version", version, *extra, *([art] if art else []))


def _snapshot(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.iterdir()) if p.is_file()}


def _keys(tmp: Path, name: str) -> tuple[Path, Path, str]:
    r = run_updaterd("keygen", "--out", tmp / name)
    assert r.returncode == 0, r.stderr
    pub = tmp / f"{name}.pub"
    return pub, tmp / f"{name}.key", pub.read_text().splitlines()[1]


def _daemons_all_follow(daemons: list[Daemon], versions: list[str]) -> None:
    """Every host's daemon checks cleanly and can still install every listed version on
    purpose, and none of them ever logged a refusal of the feed or of its keys."""
    for d in daemons:
        r = d.ctl("check", "hello")
        assert r.returncode == 0, f"{d.host.base.name}: {r.stderr}\n{d.log.read_text()}"
        for v in versions:
            r = d.ctl("update", "hello", "--version", v)
            assert r.returncode == 0 and d.host.current() == v, \
                f"{d.host.base.name} {v}: {r.stdout}{r.stderr}"
        log = d.log.read_text()
        assert "refuse" not in log and "WARNING" not in log, log


def _host(tmp_path: Path, name: str, nginx: Nginx, feed: Feed, **app: object) -> Daemon:
    host = Host(tmp_path / name)
    host.base.mkdir()
    host.follow(nginx, feed, **app)
    return Daemon(host)


def test_h155_h156_a_publishers_week_never_breaks_a_host(
        nginx: Nginx, served_feed: Feed, tmp_path: Path) -> None:
    feed = served_feed
    dist = tmp_path / "dist"
    old = _host(tmp_path, "old-host", nginx, feed)
    daemons = [old]
    try:
        _a_publishers_week(nginx, feed, dist, tmp_path, daemons)
    finally:
        for d in daemons:
            d.stop()


def _a_publishers_week(nginx: Nginx, feed: Feed, dist: Path, tmp_path: Path,
                       daemons: list[Daemon]) -> None:
    old = daemons[0]
    # 1. two versions from the same CI file name: each keeps its own bytes
    for version in ("1.0.0", "1.1.0"):
        r = _publish(feed, version, _ci_build(dist, version))
        assert r.returncode == 0, r.stderr
        assert f"published hello {version}: stable, rollout 100%" in r.stdout, r.stdout
        assert f"linux-x86_64: hello-{version}-linux-x86_64.tar.gz" in r.stdout
    assert (feed.folder / "hello-1.0.0-linux-x86_64.tar.gz").exists()
    assert not (feed.folder / "hello-linux-x86_64.tar.gz").exists()
    old.start()
    old.wait_for(lambda: old.app()["current"] == "1.1.0", what="the old host on 1.1.0")
    _daemons_all_follow([old], ["1.0.0", "1.1.0"])
    # 2. 1.1.0 again with other bytes (a rebuild): refused, nothing touched
    before = _snapshot(feed.folder)
    rebuilt = make_tar(dist / "hello-linux-x86_64.tar.gz",
                       {**release_files("1.1.0"), "share/extra": (b"x\n", 0o644)},
                       top="hello-1.1.0")
    r = _publish(feed, "1.1.0", rebuilt)
    assert r.returncode == 1
    assert "hello 1.1.0 is already published with other bytes for linux-x86_64" in r.stderr
    assert _snapshot(feed.folder) == before
    # ... and with the same bytes: a no-op that says so
    r = _publish(feed, "1.0.0", feed.folder / "hello-1.0.0-linux-x86_64.tar.gz")
    assert r.returncode == 0 and "already published with these bytes: nothing changed" \
        in r.stdout, r.stdout + r.stderr
    assert _snapshot(feed.folder) == before
    # 3. a rotation signed by the old key only: refused, naming the --sign that is missing
    new_pub, new_key, new_line = _keys(tmp_path, "new")
    r = run_updaterd("rotate-keys", "--feed", feed.folder, "--app", "hello", "--new-key",
                     new_pub, "--sign", feed.key)
    assert r.returncode == 1
    new_id = new_pub.read_text().split()[-2]
    assert f"add --sign for key {new_id} ({new_key})" in r.stderr, r.stderr
    assert _snapshot(feed.folder) == before
    # signed by the new key only: refused too, naming the key hosts trust now
    r = run_updaterd("rotate-keys", "--feed", feed.folder, "--app", "hello", "--new-key",
                     new_pub, "--sign", new_key)
    assert r.returncode == 1 and "add --sign for key" in r.stderr, r.stderr
    assert _snapshot(feed.folder) == before
    # a dry run writes nothing; done right, hosts on either key set accept it
    r = run_updaterd("rotate-keys", "--feed", feed.folder, "--app", "hello", "--new-key",
                     new_pub, "--sign", feed.key, "--sign", new_key, "--dry-run")
    assert r.returncode == 0 and r.stdout.startswith("would write key set version 1")
    assert _snapshot(feed.folder) == before
    r = run_updaterd("rotate-keys", "--feed", feed.folder, "--app", "hello", "--new-key",
                     new_pub, "--sign", feed.key, "--sign", new_key)
    assert r.returncode == 0, r.stderr
    assert r.stderr == "", r.stderr  # a host's "rotation accepted" line is not the publisher's
    _daemons_all_follow([old], ["1.0.0", "1.1.0"])
    # 4. the old key can no longer publish; the new one can, and a host set up after the
    # rotation, trusting the new key alone, follows
    r = _publish(feed, "1.2.0", _ci_build(dist, "1.2.0"))
    assert r.returncode == 1 and "add --key for" in r.stderr, r.stderr
    r = _publish(feed, "1.2.0", _ci_build(dist, "1.2.0"), key=new_key)
    assert r.returncode == 0, r.stderr
    fresh = _host(tmp_path, "new-host", nginx, feed, public_keys=[new_line])
    daemons.append(fresh.start())
    fresh.wait_for(lambda: fresh.app()["current"] == "1.2.0", what="the new host on 1.2.0")
    _daemons_all_follow([old, fresh], ["1.0.0", "1.1.0", "1.2.0"])
    # 5. a re-signature on a timer: a new serial and expiry, nothing else
    serial = json.loads((feed.folder / "manifest.json").read_text())["serial"]
    r = run_updaterd("feed", "resign", "--feed", feed.folder, "--key", new_key,
                     "--expires", "60d")
    assert r.returncode == 0 and f"serial {serial + 1}" in r.stdout, r.stdout + r.stderr
    listed = json.loads(run_updaterd("feed", "list", "--feed", feed.folder, "--json").stdout)
    assert [r["version"] for r in listed["releases"]] == ["1.0.0", "1.1.0", "1.2.0"]
    assert listed["keys"]["version"] == 1
    _daemons_all_follow([old, fresh], ["1.0.0", "1.2.0"])
    # 6. 1.2.0 turns out bad: yanked; the hosts on it say why, none installs it by itself
    r = _yank(feed, "1.2.0", "--why", WHY, key=new_key)
    assert r.returncode == 0, r.stderr
    for d in (old, fresh):
        assert d.ctl("check", "hello").returncode == 0
        assert d.app()["current"] == "1.2.0" and d.app()["yanked"] == WHY
        d.ctl("update", "hello", "--version", "1.1.0", check=True)
        assert "1.2.0: yanked by the publisher" in d.ctl("check", "hello", check=True).stdout
    _daemons_all_follow([old, fresh], ["1.2.0", "1.0.0", "1.1.0"])
    # 7. the fix goes to beta first, then is promoted; both hosts take it
    r = _publish(feed, "1.2.1", _ci_build(dist, "1.2.1"), "--channel", "beta", key=new_key)
    assert r.returncode == 0, r.stderr
    for d in (old, fresh):
        assert d.ctl("check", "hello").returncode == 0 and d.app()["available"] is None
    r = run_updaterd("feed", "promote", "--feed", feed.folder, "--key", new_key, "--channel",
                     "stable", "1.2.1")
    assert r.returncode == 0, r.stderr
    for d in (old, fresh):
        out = d.ctl("update", "hello", check=True).stdout
        assert "installed 1.2.1 (was 1.1.0)" in out, out
    # 8. pruned to the newest two of each channel: 1.0.0 goes, 1.1.0 stays (1.2.0 is yanked)
    r = run_updaterd("feed", "prune", "--feed", feed.folder, "--key", new_key, "--keep", "2")
    assert r.returncode == 0 and "pruned 1.0.0" in r.stdout, r.stdout + r.stderr
    assert not (feed.folder / "hello-1.0.0-linux-x86_64.tar.gz").exists()
    _daemons_all_follow([old, fresh], ["1.1.0", "1.2.0", "1.2.1"])
    # 9. what the CDN serves is what was signed, until a file is changed behind our back
    url = nginx.url(f"{feed.folder.name}/")
    r = run_updaterd("feed", "check", url, "--public-key", new_pub)
    assert r.returncode == 0 and "0 problems" in r.stdout, r.stdout + r.stderr
    # with the key in use before the rotation: as the old host, which follows it
    r = run_updaterd("feed", "check", url, "--public-key", feed.pub)
    assert r.returncode == 0 and "0 problems" in r.stdout, r.stdout + r.stderr
    assert "keys.json: the keys given rotate to version 1 (1 keys, threshold 1)" in r.stdout
    art = feed.folder / "hello-1.1.0-linux-x86_64.tar.gz"
    art.write_bytes(art.read_bytes()[:-1] + b"X")
    r = run_updaterd("feed", "check", url, "--public-key", new_pub)
    assert r.returncode == 1 and "1.1.0 linux-x86_64:" in r.stderr, r.stdout + r.stderr


def test_h155_a_version_spelled_otherwise_is_the_same_version(feed: Feed, tmp_path: Path) -> None:
    art = _ci_build(tmp_path / "dist", "1.0.0")
    assert _publish(feed, "1.0.0", art).returncode == 0
    r = _publish(feed, "v1.0.0", _ci_build(tmp_path / "dist", "1.0.1"))
    assert r.returncode == 1 and "is published already, as 1.0.0" in r.stderr, r.stderr


def test_h156_a_manifest_edited_by_hand_is_not_signed_again(feed: Feed, tmp_path: Path) -> None:
    assert _publish(feed, "1.0.0", _ci_build(tmp_path / "dist", "1.0.0")).returncode == 0
    manifest = feed.folder / "manifest.json"
    edited = json.loads(manifest.read_text())
    edited["releases"][0]["rollout"] = 50
    manifest.write_text(json.dumps(edited))
    before = _snapshot(feed.folder)
    for argv in (["publish", "--feed", str(feed.folder), "--key", str(feed.key), "--app",
                  "hello", "--version", "1.1.0", str(_ci_build(tmp_path / "dist", "1.1.0"))],
                 ["feed", "resign", "--feed", str(feed.folder), "--key", str(feed.key)]):
        r = run_updaterd(*argv)
        assert r.returncode == 1, r.stdout
        assert "does not verify with its signature (edited by hand?)" in r.stderr, r.stderr
    assert _snapshot(feed.folder) == before


def test_h155_a_half_written_publish_is_finished_by_the_next(feed: Feed, tmp_path: Path) -> None:
    """A publish killed after copying its artifact left a file no manifest names: the next
    publish of that version replaces it (it was never promised to anyone)."""
    assert _publish(feed, "1.0.0", _ci_build(tmp_path / "dist", "1.0.0")).returncode == 0
    (feed.folder / "hello-1.1.0-linux-x86_64.tar.gz").write_bytes(b"half")
    r = _publish(feed, "1.1.0", _ci_build(tmp_path / "dist", "1.1.0"))
    assert r.returncode == 0, r.stderr
    assert (feed.folder / "hello-1.1.0-linux-x86_64.tar.gz").read_bytes() != b"half"


@pytest.mark.parametrize("command", [["publish"], ["rotate-keys"], ["feed", "list"],
                                     ["feed", "resign"], ["feed", "promote"], ["feed", "prune"],
                                     ["feed", "yank"], ["feed", "unyank"], ["feed", "check"],
                                     ["keygen"]])
def test_every_option_of_the_publishers_commands_has_help(command: list[str]) -> None:
    r = run_updaterd(*command, "--help")
    assert r.returncode == 0
    lines = r.stdout.split("\noptions:\n", 1)[1].splitlines()
    for n, line in enumerate(lines):
        if not line.strip().startswith("-") or line.strip().startswith("-h"):
            continue
        has_text = len([w for w in line.split("  ") if w.strip()]) >= 2
        next_is_text = n + 1 < len(lines) and lines[n + 1].startswith(" " * 10) and \
            not lines[n + 1].strip().startswith("-")
        assert has_text or next_is_text, f"{command}: no help for {line.strip()!r}"


def test_promote_moves_a_beta_to_stable_and_a_host_follows(
        nginx: Nginx, served_feed: Feed, tmp_path: Path) -> None:
    feed = served_feed
    dist = tmp_path / "dist"
    assert _publish(feed, "1.0.0", _ci_build(dist, "1.0.0")).returncode == 0
    assert _publish(feed, "1.1.0", _ci_build(dist, "1.1.0"), "--channel",
                    "beta").returncode == 0
    host = Host(tmp_path / "host")
    host.base.mkdir()
    host.follow(nginx, feed)
    assert run_updaterd("--config", host.config, "--once").returncode == 0
    assert host.current() == "1.0.0"
    artifacts = _snapshot(feed.folder)
    r = run_updaterd("feed", "promote", "--feed", feed.folder, "--key", feed.key, "--channel",
                     "stable", "1.1.0", "--dry-run")
    assert r.returncode == 0 and "would have: moved hello 1.1.0 from beta to stable" \
        in r.stdout, r.stdout + r.stderr
    assert _snapshot(feed.folder) == artifacts
    r = run_updaterd("feed", "promote", "--feed", feed.folder, "--key", feed.key, "--channel",
                     "stable", "1.1.0")
    assert r.returncode == 0, r.stderr
    after = _snapshot(feed.folder)
    assert {k: v for k, v in after.items() if "manifest" not in k} == \
        {k: v for k, v in artifacts.items() if "manifest" not in k}, "artifacts untouched"
    assert run_updaterd("--config", host.config, "--once").returncode == 0
    assert host.current() == "1.1.0"
    r = run_updaterd("feed", "promote", "--feed", feed.folder, "--key", feed.key, "--channel",
                     "stable", "9.9.9")
    assert r.returncode == 1 and "hello has no release '9.9.9'" in r.stderr


def test_prune_keeps_the_newest_of_each_channel_and_removes_their_files_after(
        feed: Feed, tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    for version in ("1.0.0", "1.1.0", "1.2.0"):
        r = _publish(feed, version, _ci_build(dist, version))
        assert r.returncode == 0, r.stderr
    assert _publish(feed, "2.0.0-beta.1", _ci_build(dist, "2.0.0-beta.1"), "--channel",
                    "beta").returncode == 0
    r = run_updaterd("feed", "prune", "--feed", feed.folder, "--key", feed.key, "--keep", "2",
                     "--dry-run")
    assert r.returncode == 0 and "would remove hello-1.0.0-linux-x86_64.tar.gz" in r.stdout
    assert (feed.folder / "hello-1.0.0-linux-x86_64.tar.gz").exists()
    r = run_updaterd("feed", "prune", "--feed", feed.folder, "--key", feed.key, "--keep", "2")
    assert r.returncode == 0, r.stderr
    listed = json.loads(run_updaterd("feed", "list", "--feed", feed.folder, "--json").stdout)
    assert [r["version"] for r in listed["releases"]] == ["1.1.0", "1.2.0", "2.0.0-beta.1"]
    names = {p.name for p in feed.folder.iterdir()}
    assert not [n for n in names if n.startswith("hello-1.0.0-")], names
    check = run_updaterd("feed", "check", str(feed.folder), "--public-key", feed.pub)
    assert check.returncode == 0, check.stdout + check.stderr


def test_feed_check_finds_a_tampered_file_on_nginx_and_in_a_folder(
        nginx: Nginx, served_feed: Feed, tmp_path: Path) -> None:
    feed = served_feed
    dist = tmp_path / "dist"
    for version in ("1.0.0", "1.1.0"):
        assert _publish(feed, version, _ci_build(dist, version)).returncode == 0
    pub_file = feed.work / "feed.pub"
    url = nginx.url(f"{feed.folder.name}/manifest.json")
    for target in (url, str(feed.folder)):
        r = run_updaterd("feed", "check", target, "--public-key", str(pub_file))
        assert r.returncode == 0 and "0 problems" in r.stdout, r.stdout + r.stderr
    packs = sorted(feed.folder.glob("*.from-1.0.0.delta"))
    assert packs, "1.1.0 has a pack from 1.0.0"
    packs[0].write_bytes(packs[0].read_bytes()[:-1] + b"X")  # the CDN serves a changed byte
    (feed.folder / "hello-1.0.0-linux-x86_64.tar.gz").unlink()
    for target in (url, str(feed.folder)):
        r = run_updaterd("feed", "check", target, "--public-key", feed.pub)
        assert r.returncode == 1, r.stdout + r.stderr
        assert "1.0.0 linux-x86_64:" in r.stderr and ": missing" in r.stderr, r.stderr
        assert "1.1.0 delta from 1.0.0:" in r.stderr and "BLAKE3 mismatch" in r.stderr
    _pub, _key, other_line = _keys(tmp_path, "other")
    r = run_updaterd("feed", "check", url, "--public-key", other_line)
    assert r.returncode == 1 and "signature refused" in r.stderr, r.stderr
    # a link planted in the folder is not followed (hosts read plain files only)
    secret = tmp_path / "secret"
    secret.write_bytes(b"root's own")
    (feed.folder / "hello-1.0.0-linux-x86_64.tar.gz").symlink_to(secret)
    r = run_updaterd("feed", "check", str(feed.folder), "--public-key", feed.pub)
    assert "hello-1.0.0-linux-x86_64.tar.gz: a symbolic link; hosts read plain files only" \
        in r.stderr, r.stderr



def test_a_yanked_release_is_never_installed_by_itself_and_a_host_on_it_says_why(
        host: Host, nginx: Nginx, served_feed: Feed, daemon: Daemon, tmp_path: Path) -> None:
    feed = served_feed
    dist = tmp_path / "dist"
    assert _publish(feed, "1.0.0", _ci_build(dist, "1.0.0")).returncode == 0
    late = Host(tmp_path / "late-host")
    late.base.mkdir()
    late.follow(nginx, feed)
    assert run_updaterd("--config", late.config, "--once").returncode == 0
    assert late.current() == "1.0.0"
    assert _publish(feed, "1.1.0", _ci_build(dist, "1.1.0")).returncode == 0
    host.follow(nginx, feed)
    daemon.start()
    daemon.wait_for(lambda: daemon.app()["current"] == "1.1.0", what="1.1.0 installed")
    before = _snapshot(feed.folder)
    r = _yank(feed, "1.1.0", "--why", WHY, "--dry-run")
    assert r.returncode == 0 and r.stdout.startswith("would have: yanked hello 1.1.0"), r.stdout
    assert _snapshot(feed.folder) == before
    r = _yank(feed, "1.1.0", "--why", WHY)
    assert r.returncode == 0 and r.stdout.startswith("yanked hello 1.1.0"), r.stdout + r.stderr
    # what a publisher sees: still listed, with the reason; every file still checks
    listed = json.loads(run_updaterd("feed", "list", "--feed", feed.folder, "--json").stdout)
    yanked = {r["version"]: r["yanked"] for r in listed["releases"]}
    assert yanked == {"1.0.0": None, "1.1.0": WHY}
    assert listed["releases"][1]["rollout"] == 100
    assert {a["platform"] for a in listed["releases"][1]["artifacts"]} == \
        {"linux-x86_64", "linux-x86_64.delta"}
    assert f"YANKED: {WHY}" in run_updaterd("feed", "list", "--feed", feed.folder).stdout
    check = run_updaterd("feed", "check", nginx.url(f"{feed.folder.name}/"), "--public-key",
                         feed.pub)
    assert check.returncode == 0, check.stdout + check.stderr
    # the daemon's host runs it: its status says why, in words and as a field
    daemon.ctl("check", "hello", check=True)
    assert daemon.app()["yanked"] == WHY
    status = daemon.ctl("status", "hello", check=True).stdout
    assert f"1.1.0, running now, was yanked by the publisher: {WHY}" in status, status
    # the host still on 1.0.0 passes it over and says why; it installs it only on purpose
    r = run_updaterd("--config", late.config, "--once")
    assert r.returncode == 0 and late.current() == "1.0.0", r.stderr
    assert late.state()["passed_over"] == {"1.1.0": f"yanked by the publisher: {WHY}"}
    r = run_updaterd("--config", late.config, "update", "hello", "--version", "1.1.0")
    assert r.returncode == 0 and late.current() == "1.1.0", r.stderr
    assert f"installing 1.1.0 on purpose although the publisher yanked it: {WHY}" in r.stderr
    assert run_updaterd("--config", late.config, "update", "hello", "--version",
                        "1.0.0").returncode == 0
    # unyanked: offered again at the rollout it had, and the host's status no longer says it
    r = run_updaterd("feed", "unyank", "--feed", feed.folder, "--key", feed.key, "1.1.0")
    assert r.returncode == 0 and "unyanked hello 1.1.0 (rollout 100%)" in r.stdout, r.stdout
    daemon.ctl("check", "hello", check=True)
    assert daemon.app()["yanked"] is None
    assert "was yanked" not in daemon.ctl("status", "hello", check=True).stdout
    r = run_updaterd("--config", late.config, "--once")
    assert r.returncode == 0 and late.current() == "1.1.0", r.stderr + str(late.state())


def test_a_daemon_from_before_yanking_accepts_a_yank_and_never_installs_it_by_itself(
        host: Host, nginx: Nginx, served_feed: Feed, tmp_path: Path) -> None:
    env = code_of_commit(BEFORE_YANK, tmp_path / "old")
    feed = served_feed
    dist = tmp_path / "dist"
    assert _publish(feed, "1.0.0", _ci_build(dist, "1.0.0")).returncode == 0
    host.follow(nginx, feed, watch_interval=None)  # a key the old daemon does not know

    def old(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "updaterd", "--config", str(host.config),
                               *args], env=env, capture_output=True, text=True, timeout=120)

    assert old("--once").returncode == 0 and host.current() == "1.0.0"
    assert _publish(feed, "1.1.0", _ci_build(dist, "1.1.0")).returncode == 0
    assert _yank(feed, "1.1.0", "--why", WHY).returncode == 0
    r = old("--once")
    assert r.returncode == 0 and host.current() == "1.0.0", r.stderr
    r = old("update", "hello", "--version", "1.1.0")
    assert r.returncode == 0 and host.current() == "1.1.0", r.stderr


def test_a_yank_refuses_what_the_manifest_cannot_carry_and_publish_respects_it(
        feed: Feed, tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    assert _publish(feed, "1.0.0", _ci_build(dist, "1.0.0")).returncode == 0
    before = _snapshot(feed.folder)
    r = _yank(feed, "1.0.0", "--why", "x" * 181)
    assert r.returncode == 1 and "--why is 181 bytes; a yank reason holds at most 180" \
        in r.stderr, r.stderr
    r = _yank(feed, "1.0.0", "--why", "  \n ")
    assert r.returncode == 1 and "--why must say why" in r.stderr, r.stderr
    r = _yank(feed, "2.0.0", "--why", WHY)
    assert r.returncode == 1 and "hello has no release '2.0.0'" in r.stderr, r.stderr
    assert _snapshot(feed.folder) == before
    assert _yank(feed, "1.0.0", "--why", "a reason\twith\x1b[31m controls").returncode == 0
    listed = run_updaterd("feed", "list", "--feed", feed.folder).stdout
    assert "YANKED: a reason with\\x1b[31m controls" in listed, listed
    r = _yank(feed, "1.0.0", "--why", "a reason with\x1b[31m controls")
    assert r.returncode == 0 and "nothing to change" in r.stdout, r.stdout
    # a yanked release's rollout changes only once it is unyanked; "yanked" is no platform
    r = _publish(feed, "1.0.0", None, "--rollout", "50")
    assert r.returncode == 1 and "hello 1.0.0 is yanked: `updaterd feed unyank` it" \
        in r.stderr, r.stderr
    r = _publish(feed, "1.1.0", _ci_build(dist, "1.1.0"), "--platform", "yanked")
    assert r.returncode == 1 and "platform 'yanked' is reserved" in r.stderr, r.stderr
    r = run_updaterd("feed", "unyank", "--feed", feed.folder, "--key", feed.key, "1.0.0")
    assert r.returncode == 0, r.stderr
    r = run_updaterd("feed", "unyank", "--feed", feed.folder, "--key", feed.key, "1.0.0")
    assert r.returncode == 0 and "nothing to change" in r.stdout, r.stdout


def test_prune_never_removes_the_release_a_rollout_holds_hosts_back_to(
        feed: Feed, tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    for version, rollout in (("1.0.0", "100"), ("1.1.0", "100"), ("1.2.0", "10")):
        r = _publish(feed, version, _ci_build(dist, version), "--rollout", rollout)
        assert r.returncode == 0, r.stderr
    r = run_updaterd("feed", "prune", "--feed", feed.folder, "--key", feed.key, "--keep", "1")
    assert r.returncode == 0 and "pruned 1.0.0" in r.stdout, r.stdout + r.stderr
    listed = json.loads(run_updaterd("feed", "list", "--feed", feed.folder, "--json").stdout)
    assert [r["version"] for r in listed["releases"]] == ["1.1.0", "1.2.0"]
    # a yanked newest release holds hosts back too
    assert _publish(feed, "1.2.0", None, "--rollout", "100").returncode == 0
    assert _yank(feed, "1.2.0", "--why", WHY).returncode == 0
    r = run_updaterd("feed", "prune", "--feed", feed.folder, "--key", feed.key, "--keep", "1")
    assert r.returncode == 0 and "nothing to change" in r.stdout, r.stdout + r.stderr
    assert (feed.folder / "hello-1.1.0-linux-x86_64.tar.gz").exists()


def test_a_missing_artifact_is_said_at_every_write_and_the_next_release_still_goes_out(
        feed: Feed, tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    assert _publish(feed, "1.0.0", _ci_build(dist, "1.0.0")).returncode == 0
    lost = feed.folder / "hello-1.0.0-linux-x86_64.tar.gz"
    kept = lost.read_bytes()
    lost.unlink()
    said = f"{lost} is missing: hosts cannot install hello 1.0.0 from this feed"
    r = _publish(feed, "1.1.0", _ci_build(dist, "1.1.0"))
    assert r.returncode == 0 and said in r.stderr, r.stderr
    r = run_updaterd("feed", "resign", "--feed", feed.folder, "--key", feed.key)
    assert r.returncode == 0 and said in r.stderr, r.stderr
    lost.write_bytes(kept[:-10])
    r = run_updaterd("feed", "resign", "--feed", feed.folder, "--key", feed.key)
    assert f"{lost} holds {len(kept) - 10} bytes, not {len(kept)}" in r.stderr, r.stderr
    lost.write_bytes(kept)
    r = run_updaterd("feed", "resign", "--feed", feed.folder, "--key", feed.key)
    assert r.returncode == 0 and "cannot install" not in r.stderr, r.stderr
    check = run_updaterd("feed", "check", str(feed.folder), "--public-key", feed.pub)
    assert check.returncode == 0, check.stdout + check.stderr


def test_feed_list_shows_releases_in_version_order(feed: Feed, tmp_path: Path) -> None:
    """Issue 30: every list of versions sorts as versions; a fix of an older line published
    last is listed in its place."""
    for version in ("1.10.0", "1.9.0", "1.10.0-rc.1"):
        feed.release(version)
    listed = json.loads(run_updaterd("feed", "list", "--feed", feed.folder, "--json").stdout)
    assert [r["version"] for r in listed["releases"]] == ["1.9.0", "1.10.0-rc.1", "1.10.0"]


def test_prune_keeps_what_hosts_went_back_to_from_a_recalled_or_halted_release(
        feed: Feed, tmp_path: Path) -> None:
    """A guarded release recalled (or halted, or short of 100%) reaches no host, or not all:
    the release before it stays in the feed until one kept reaches every host. `feed prune
    --keep 1` counted the recalled release as the one to keep and dropped 1.1.0."""
    from updaterd.release import controller
    from updaterd.trust import minisign

    key = minisign.SecretKey.generate()
    pub = tmp_path / "rollout.pub"
    pub.write_text(key.public.to_file())
    dist = tmp_path / "dist"
    for version, extra in (("1.0.0", []), ("1.1.0", []), ("1.2.0", ["--rollout-key", str(pub)])):
        assert _publish(feed, version, _ci_build(dist, version), *extra).returncode == 0
    for state, share in (("recalled", 100), ("halted", 100), ("active", 40)):
        controller.set_state(feed.folder, key, "1.2.0", state, "", share=share)
        r = run_updaterd("feed", "prune", "--feed", feed.folder, "--key", feed.key, "--keep",
                         "1", "--dry-run")
        assert r.returncode == 0 and "would have: pruned 1.0.0;" in r.stdout, (state, r.stdout)
    controller.set_state(feed.folder, key, "1.2.0", "active", "", share=100)
    r = run_updaterd("feed", "prune", "--feed", feed.folder, "--key", feed.key, "--keep", "1")
    assert r.returncode == 0 and "pruned 1.1.0, 1.0.0;" in r.stdout, r.stdout + r.stderr


def test_a_pruned_release_leaves_rollout_json_at_its_next_resign(
        feed: Feed, tmp_path: Path) -> None:
    """Issue 38: rollout.json kept the entries of pruned releases for ever. Prune cannot sign
    it (the rollout key is not the release key): it says so, and `rollout resign` drops them."""
    from updaterd.release import controller
    from updaterd.trust import minisign

    key = minisign.SecretKey.generate()
    pub, key_file = tmp_path / "rollout.pub", tmp_path / "rollout.key"
    pub.write_text(key.public.to_file())
    key_file.write_text(key.to_file())
    dist = tmp_path / "dist"
    for version in ("1.0.0", "1.1.0"):
        assert _publish(feed, version, _ci_build(dist, version), "--rollout-key",
                        str(pub)).returncode == 0
        controller.set_state(feed.folder, key, version, "active", "", share=100)
    r = run_updaterd("feed", "prune", "--feed", feed.folder, "--key", feed.key, "--keep", "1")
    assert r.returncode == 0 and "pruned 1.0.0" in r.stdout, r.stdout + r.stderr
    assert "rollout.json still names 1.0.0 until the rollout key signs it again" in r.stdout
    r = run_updaterd("rollout", "resign", "--feed", feed.folder, "--key", key_file)
    assert r.returncode == 0, r.stderr
    doc = json.loads((feed.folder / "rollout.json").read_text())
    assert sorted(doc["releases"]) == ["1.1.0"]
