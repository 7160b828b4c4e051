"""Group G of the catalogue (G127-G145): what other local users and hostile servers can do to
a root daemon on a shared host. Every attack is made for real: files and folders owned by
`nobody` (uid 65534), other users' processes through `setpriv`, the real daemon and commands."""

from __future__ import annotations

import json
import os
import re
import signal
import stat
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Daemon, GitHub, Host, Nginx
from tests.helpers import Feed, run_updaterd

NOBODY = 65534


def _nobody(path: Path) -> None:
    os.chown(path, NOBODY, NOBODY)


def _as_nobody(*argv: str, **kw: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}",
                           "--clear-groups", *argv], capture_output=True, text=True,
                          timeout=30, check=False, **kw)


def _directory_app(host: Host, feed: Feed, **kw: Any) -> Path:
    kw.setdefault("public_keys", [feed.pub])
    kw.setdefault("check_interval", "1h")
    kw.setdefault("jitter", "0s")
    return host.configure(source="directory", path=str(feed.folder), **kw)


# -- 127: the configuration file and the files it names -----------------------------------------

@pytest.mark.parametrize("how", ["world-writable", "group-writable", "owned by nobody",
                                 "folder writable"])
def test_g127_config_another_user_can_change_is_refused(host: Host, feed: Feed,
                                                        how: str) -> None:
    feed.release("1.0.0")
    _directory_app(host, feed)
    culprit = host.config
    if how == "world-writable":
        host.config.chmod(0o666)
    elif how == "group-writable":
        host.config.chmod(0o664)
    elif how == "owned by nobody":
        _nobody(host.config)
    else:
        culprit = host.base
        host.base.chmod(0o777)
    r = run_updaterd("--config", host.config, "check-config")
    assert r.returncode == 2, r.stderr
    line = next(x for x in r.stderr.splitlines() if "configuration file" in x)
    assert f"configuration file {host.config}: {culprit} is " in line
    assert f"Fix: chown root:root {culprit} && chmod go-w {culprit}" in line
    # and the daemon does not start on it, nor does a one-shot pass
    r = run_updaterd("--config", host.config, "--once")
    assert r.returncode == 2 and "configuration file" in r.stderr
    assert not host.prefix.exists(), "nothing was installed from an untrusted config"


def test_g127_reload_of_a_config_others_can_write_keeps_the_old_one(host: Host, feed: Feed,
                                                                    daemon: Daemon) -> None:
    feed.release("1.0.0")
    _directory_app(host, feed)
    daemon.start()
    daemon.wait_for(lambda: daemon.app()["current"] == "1.0.0", what="first install")
    host.config.write_text(host.config.read_text() + '\n[apps.evil]\nsource = "directory"\n'
                           f'path = "{feed.folder}"\nprefix = "{host.base}/evil"\n'
                           'restart = ["/bin/sh", "-c", "touch /tmp/pwned"]\n')
    host.config.chmod(0o666)
    r = daemon.ctl("reload")
    assert r.returncode == 1
    assert f"{host.config} is writable by group and others" in daemon.log.read_text()
    assert [a["name"] for a in daemon.status()["apps"]] == ["hello"]


def test_g127_token_file_others_can_write_is_refused(host: Host, tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("ghp_secret\n")
    token.chmod(0o646)
    host.configure(source="github", repo="o/r", asset="x", token_file=str(token),
                   api_url="http://127.0.0.1:9", allow_insecure=True)
    r = run_updaterd("--config", host.config, "check-config")
    assert r.returncode == 2
    assert f"apps.hello.token_file {token}: {token} is writable by others" in r.stderr


# -- 128: every folder updaterd writes as root ---------------------------------------------------

FOLDERS = {
    "prefix": lambda h: h.prefix,
    "staging folder": lambda h: h.prefix / ".staging",
    "releases folder": lambda h: h.prefix / "releases",
    "cache folder": lambda h: h.base / "cache" / "hello",
    "state folder": lambda h: h.state_dir / "hello",
    "state_dir": lambda h: h.state_dir,
}


@pytest.mark.parametrize("what", list(FOLDERS))
@pytest.mark.parametrize("how", ["owned by nobody", "mode 0777"])
def test_g128_folder_another_user_can_change_is_refused_before_any_download(
        host: Host, feed: Feed, what: str, how: str) -> None:
    feed.release("1.0.0")
    _directory_app(host, feed)
    folder = FOLDERS[what](host)
    folder.mkdir(parents=True)
    if how == "owned by nobody":
        _nobody(folder)
    else:
        folder.chmod(0o777)
    r = run_updaterd("--config", host.config, "check-config")
    assert r.returncode == 2
    assert f"{folder} is " in r.stderr and f"chmod go-w {folder}" in r.stderr, r.stderr
    assert len([x for x in r.stderr.splitlines() if str(folder) + " is" in x]) >= 1
    r = run_updaterd("--config", host.config, "--once")
    assert r.returncode == 2
    assert not (host.prefix / "releases" / "1.0.0").exists()
    assert not list((host.base / "cache").rglob("*.tar.gz")), "nothing was downloaded"


def test_g128_inplace_target_folder_others_can_write_is_refused(host: Host, feed: Feed) -> None:
    bin_dir = host.base / "bin"
    bin_dir.mkdir()
    bin_dir.chmod(0o777)
    host.configure(source="directory", path=str(feed.folder), public_keys=[feed.pub],
                   install="inplace", target=str(bin_dir / "tool"), health_check=[])
    r = run_updaterd("--config", host.config, "check-config")
    assert r.returncode == 2
    assert f"apps.hello target folder {bin_dir}: {bin_dir} is writable by group and others" \
        in r.stderr


def test_g128_unsigned_local_feed_others_can_write_is_refused(host: Host, feed: Feed) -> None:
    feed.release("1.0.0")
    feed.folder.chmod(0o777)
    _directory_app(host, feed, public_keys=[])
    r = run_updaterd("--config", host.config, "check-config")
    assert r.returncode == 2 and f"unsigned feed folder {feed.folder}" in r.stderr
    # signed, the same folder is fine: the signature, not the folder, is what is trusted
    _directory_app(host, feed)
    assert run_updaterd("--config", host.config, "check-config").returncode == 0


def test_g128_sticky_tmp_is_accepted_when_the_folder_below_is_ours(host: Host, feed: Feed,
                                                                   public_dir: Path) -> None:
    assert Path("/tmp").stat().st_mode & stat.S_ISVTX
    feed.release("1.0.0")
    prefix = public_dir / "opt" / "hello"
    _directory_app(host, feed, prefix=str(prefix))
    r = run_updaterd("--config", host.config, "--once")
    assert r.returncode == 0, r.stderr
    assert (prefix / "releases" / "1.0.0").is_dir()
    public_dir.chmod(0o1777)  # the folder below /tmp must itself be private
    r = run_updaterd("--config", host.config, "check-config")
    assert r.returncode == 2 and f"{public_dir} is writable by group and others" in r.stderr
    # a sticky parent whose next folder does not exist yet: another user could take the name
    public_dir.chmod(0o755)
    shared = public_dir / "shared"
    shared.mkdir(mode=0o1777)
    shared.chmod(0o1777)
    _directory_app(host, feed, prefix=str(shared / "opt" / "hello"))
    r = run_updaterd("--config", host.config, "check-config")
    assert r.returncode == 2
    assert f"{shared}/opt does not exist yet in the shared folder {shared} (mode 1777), so " \
        f"another user could create it first; another user could change what updaterd " \
        f"trusts as root. Fix: mkdir -m 0755 {shared}/opt" in r.stderr


# -- 129: the release that is health-checked is the one that was verified ------------------------

def test_g129_user_owned_prefix_cannot_swap_the_release_before_the_health_check(
        host: Host, feed: Feed, public_dir: Path, tmp_path: Path) -> None:
    """The attack that won 4 of 4: the app's user owns the prefix and swaps releases/<new>
    between the rename into releases/ and the health check; root would run its bin/hello.
    A failpoint stops the daemon at that instant (SIGSTOP), the attacker swaps, SIGCONT."""
    feed.release("1.0.0")
    prefix = public_dir / "opt" / "hello"
    prefix.mkdir(parents=True)
    _nobody(prefix)
    _directory_app(host, feed, prefix=str(prefix))
    marker = public_dir / "pwned-by-root"
    env = dict(os.environ, UPDATERD_FAILPOINTS="release.after_rename=stop")
    from tests.helpers import BIN
    proc = subprocess.Popen([str(BIN / "updaterd"), "--config", str(host.config), "--once"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 30
        while proc.poll() is None and time.monotonic() < deadline:
            if Path(f"/proc/{proc.pid}/stat").read_text().split(") ")[1][0] == "T":
                break
            time.sleep(0.02)
        if proc.poll() is None:  # stopped at the failpoint: the attacker moves in
            evil = f"#!/bin/sh\nid -u > {marker}\n"
            swap = _as_nobody("sh", "-c", f"cd {prefix} && mv releases .old && mkdir -p "
                              f"releases/1.0.0/bin && printf '{evil}' > releases/1.0.0/bin/hello "
                              "&& chmod 755 releases/1.0.0/bin/hello")
            assert swap.returncode == 0, swap.stderr
            proc.send_signal(signal.SIGCONT)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert not marker.exists(), "root ran the attacker's health check"
    assert proc.returncode == 2, out
    assert f"{prefix} is owned by nobody" in out


def test_g129_release_tree_is_root_owned_and_writable_by_nobody_else(host: Host,
                                                                     feed: Feed) -> None:
    from tests.helpers import make_tar
    art = make_tar(feed.work / "hello-1.0.0-linux-x86_64.tar.gz",
                   {"bin/hello": (b"#!/bin/sh\necho ok\n", 0o777),
                    "share/x": (b"x", 0o666)}, top="hello-1.0.0")
    feed.publish("1.0.0", [art])
    _directory_app(host, feed)
    r = run_updaterd("--config", host.config, "--once")
    assert r.returncode == 0, r.stderr
    release = host.prefix / "releases" / "1.0.0"
    for p in [release, *release.rglob("*")]:
        st = p.lstat()
        assert st.st_uid == 0 and not st.st_mode & 0o022, (p, oct(st.st_mode))


# -- 145: lock file, pid file and socket folder --------------------------------------------------

def test_g145_lock_file_planted_by_another_user_is_refused(host: Host, feed: Feed) -> None:
    feed.release("1.0.0")
    _directory_app(host, feed)
    lock = host.base / "updaterd.lock"
    lock.write_text("")
    _nobody(lock)
    r = run_updaterd("--config", host.config, "check-config")
    assert r.returncode == 2
    assert f"lock_file {lock}: {lock} is owned by nobody:nogroup" in r.stderr


def test_g145_socket_folder_of_another_user_is_refused(host: Host, feed: Feed,
                                                       public_dir: Path) -> None:
    feed.release("1.0.0")
    _directory_app(host, feed)
    run_dir = public_dir / "run"
    run_dir.mkdir()
    _nobody(run_dir)
    host.open_socket_in(run_dir)
    r = run_updaterd("--config", host.config, timeout=30)
    assert r.returncode == 2
    assert f"socket folder {run_dir}: {run_dir} is owned by nobody" in r.stderr


def test_g145_pid_file_planted_by_another_user_is_refused(host: Host, feed: Feed,
                                                          public_dir: Path) -> None:
    feed.release("1.0.0")
    _directory_app(host, feed)
    pidfile = public_dir / "updaterd.pid"
    pidfile.write_text("1\n")
    _nobody(pidfile)
    r = run_updaterd("--config", host.config, "--daemonize", "--pidfile", pidfile, timeout=30)
    assert r.returncode == 1
    assert f"pid file {pidfile}: {pidfile} is owned by nobody" in r.stderr
    assert pidfile.read_text() == "1\n"


# -- 130: the journal is data, not authority -----------------------------------------------------

def _inplace_tool(host: Host, feed: Feed) -> Path:
    """An inplace app `tool` in host/bin, on 1.0.0 then 1.1.0 (so one backup is kept)."""
    from tests.helpers import app_script
    bin_dir = host.base / "bin"
    bin_dir.mkdir()
    target = bin_dir / "tool"
    for version in ("1.0.0", "1.1.0"):
        art = feed.work / f"tool-{version}-linux-x86_64"
        art.write_bytes(app_script(version))
        feed.publish(version, [art])
        host.configure(source="directory", path=str(feed.folder), public_keys=[feed.pub],
                       install="inplace", target=str(target), executable="tool",
                       health_check=["./tool"])
        r = run_updaterd("--config", host.config, "update", "hello", "--version", version)
        assert r.returncode == 0, r.stderr
    return target


def _plant_journal(host: Host, **tx: Any) -> None:
    path = host.state_dir / "hello" / "state.json"
    st = json.loads(path.read_text())
    st["pending"] = {"kind": "rollback", "from_version": "1.1.0", "to_version": "1.0.0",
                     "started_at": time.time(), "reason": "crafted", **tx}
    path.write_text(json.dumps(st))


def test_g130_journal_backup_outside_the_backups_folder_is_refused(host: Host, feed: Feed,
                                                                   public_dir: Path) -> None:
    target = _inplace_tool(host, feed)
    before = target.read_bytes()
    evil = public_dir / "evil"
    evil.write_bytes(b"#!/bin/sh\nid\n")
    evil.chmod(0o4755)
    _nobody(evil)
    _plant_journal(host, backup=str(evil))
    r = run_updaterd("--config", host.config, "--once")
    assert r.returncode == 1
    assert f"{evil} is not one of hello's backups" in r.stderr, r.stderr
    assert target.read_bytes() == before
    assert not target.stat().st_mode & 0o6000


def test_g130_restore_strips_setuid_and_setgid(host: Host, feed: Feed) -> None:
    target = _inplace_tool(host, feed)
    backup = next((host.state_dir / "hello" / "backups").iterdir())
    backup.chmod(0o6755)
    _plant_journal(host, backup=str(backup))
    r = run_updaterd("--config", host.config, "--once")
    assert r.returncode == 0, r.stderr
    assert b"1.0.0" in target.read_bytes()
    assert stat.S_IMODE(target.stat().st_mode) == 0o755


def test_g130_journal_version_that_names_a_path_is_refused(host: Host, feed: Feed) -> None:
    feed.release("1.0.0")
    _directory_app(host, feed)
    assert run_updaterd("--config", host.config, "--once").returncode == 0
    _plant_journal(host, from_version="1.0.0", to_version="../../../../etc")
    r = run_updaterd("--config", host.config, "--once")
    assert r.returncode == 1 and "cannot name a release folder" in r.stderr
    assert os.readlink(host.prefix / "current") == "releases/1.0.0"


def test_g128_a_staging_folder_planted_as_a_symlink_is_refused_by_name(
        host: Host, nginx: Nginx, served_feed: Feed, tmp_path: Path) -> None:
    """An operator's message, not an internal error with a traceback."""
    served_feed.release("1.0.0")
    host.follow(nginx, served_feed)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    host.prefix.mkdir(parents=True)
    (host.prefix / ".staging").symlink_to(elsewhere)
    r = run_updaterd("--config", host.config, "--once")
    assert r.returncode == 1
    assert f"hello: {host.prefix / '.staging'} is a symbolic link; refusing to use it" \
        in r.stderr, r.stderr
    assert "unexpected error" not in r.stderr and "Traceback" not in r.stderr
    assert not any(elsewhere.iterdir())


# -- 131: nothing is written through a planted link ----------------------------------------------

def test_g131_part_meta_is_not_written_through_a_planted_symlink(host: Host, nginx: Nginx,
                                                                 served_feed: Feed,
                                                                 tmp_path: Path) -> None:
    served_feed.release("1.0.0")
    host.follow(nginx, served_feed)
    victim = tmp_path / "victim"
    victim.write_text("root's file\n")
    cache = host.base / "cache" / "hello"
    cache.mkdir(parents=True, mode=0o700)
    (cache / "hello-1.0.0-linux-x86_64.tar.gz.part.json").symlink_to(victim)
    trees = host.state_dir / "hello" / "trees"
    trees.mkdir(parents=True)
    (trees / "1.0.0.json").symlink_to(victim)  # and the state's own files
    r = run_updaterd("--config", host.config, "--once")
    assert r.returncode == 0, r.stderr
    assert victim.read_text() == "root's file\n"
    assert (host.prefix / "releases" / "1.0.0").is_dir()
    assert not (trees / "1.0.0.json").is_symlink()
    state = host.state_dir / "hello" / "state.json"
    state.unlink()
    state.symlink_to(victim)
    r = run_updaterd("--config", host.config, "--once")
    assert r.returncode == 1
    assert f"cannot open {state}: it is a symbolic link, which updaterd never follows " \
        "here; remove it to start afresh" in r.stderr
    assert victim.read_text() == "root's file\n"


@pytest.mark.parametrize("plant", ["symlink", "hardlink"])
def test_g131_a_local_feeds_copy_is_not_written_through_a_planted_link(
        host: Host, feed: Feed, tmp_path: Path, plant: str) -> None:
    """A directory source copies the artifact into the cache through a `.part` file too."""
    feed.release("1.0.0")
    host.configure(source="directory", path=str(feed.folder), public_keys=[feed.pub])
    victim = tmp_path / "victim"
    victim.write_text("root's file\n")
    cache = host.base / "cache" / "hello"
    cache.mkdir(parents=True, mode=0o700)
    part = cache / "hello-1.0.0-linux-x86_64.tar.gz.part"
    if plant == "symlink":
        part.symlink_to(victim)
    else:
        os.link(victim, part)
    r = run_updaterd("--config", host.config, "--once")
    assert r.returncode == 0, r.stderr
    assert victim.read_text() == "root's file\n"
    assert (host.prefix / "releases" / "1.0.0").is_dir()


# -- 132: commands get a minimal environment -----------------------------------------------------

def test_g132_commands_never_see_the_daemons_environment_or_tokens(
        host: Host, feed: Feed, daemon: Daemon, tmp_path: Path) -> None:
    """App `gh` has a token; app `hello`'s freshly installed health check prints its env."""
    feed.release("1.0.0")
    seen = tmp_path / "env.txt"
    from tests.helpers import write_config
    write_config(host.config, host.daemon_table(), {
        "hello": {"source": "directory", "path": str(feed.folder), "public_keys": [feed.pub],
                  "prefix": str(host.prefix), "jitter": "0s", "check_interval": "1h",
                  "pass_environment": ["APP_MODE"],
                  "health_check": ["/bin/sh", "-c", f"env > {seen}"]},
        "gh": {"source": "github", "repo": "o/r", "asset": "x", "token_env": "GITHUB_TOKEN",
               "api_url": "http://127.0.0.1:9", "allow_insecure": True, "auto_update": False,
               "prefix": str(host.base / "gh"), "check_interval": "1h"}})
    daemon.env = {"GITHUB_TOKEN": "ghp_secret_of_gh", "APP_MODE": "blue", "OTHER": "x",
                  "LANG": "C.UTF-8", "NOTIFY_SOCKET": "/nonexistent"}
    daemon.start()
    daemon.wait_for(lambda: daemon.app()["current"] == "1.0.0", what="first install")
    env = dict(line.split("=", 1) for line in seen.read_text().splitlines() if "=" in line)
    assert "ghp_secret_of_gh" not in seen.read_text()
    assert not {"GITHUB_TOKEN", "OTHER", "NOTIFY_SOCKET"} & env.keys()
    assert env["APP_MODE"] == "blue" and env["LANG"] == "C.UTF-8" and env["PATH"]
    assert env["UPDATERD_APP"] == "hello" and env["UPDATERD_VERSION"] == "1.0.0"
    assert env["UPDATERD_SOCKET"] == str(daemon.socket)


def test_g132_a_token_cannot_be_passed_on_by_name(host: Host, feed: Feed) -> None:
    from tests.helpers import write_config
    write_config(host.config, host.daemon_table(), {
        "hello": {"source": "directory", "path": str(feed.folder), "prefix": str(host.prefix),
                  "pass_environment": ["GITHUB_TOKEN"]},
        "gh": {"source": "github", "repo": "o/r", "asset": "x", "token_env": "GITHUB_TOKEN",
               "prefix": str(host.base / "gh")}})
    r = run_updaterd("--config", host.config, "check-config")
    assert r.returncode == 2
    assert "apps.hello.pass_environment: GITHUB_TOKEN is a token_env; tokens are never " \
        "passed to commands" in r.stderr


# -- 133, 134: GitHub releases: signatures bind the version, the token stays on the API ---------

def _gh(host: Host, gh: GitHub, **kw: Any) -> None:
    table: dict[str, Any] = {"source": "github", "repo": "acme/tool", "api_url": gh.api_url,
                             "allow_insecure": True, "asset": r"tool-.*\.tar\.gz$",
                             "token_env": "GH_TEST_TOKEN"}
    table.update(kw)
    host.configure(**table)


def _gh_once(host: Host, *extra: str) -> subprocess.CompletedProcess[str]:
    return run_updaterd("--config", host.config, *extra, env={"GH_TEST_TOKEN": "ghp_T0KEN"})


def _gh_release(gh: GitHub, version: str, name: str | None = None) -> str:
    from tests.helpers import make_tar, release_files
    name = name or f"tool-{version}-x86_64-linux.tar.gz"
    make_tar(gh.root / "assets" / name, release_files(version), top=f"tool-{version}")
    return name


def _minisign(gh: GitHub, key: Path, name: str, comment: str | None = None) -> str:
    extra = ["-t", comment] if comment else []
    subprocess.run(["minisign", "-S", "-s", str(key), "-m", str(gh.root / "assets" / name),
                    *extra], check=True, capture_output=True)
    return name + ".minisig"


@pytest.fixture
def gh_key(tmp_path: Path) -> tuple[Path, str]:
    pub, key = tmp_path / "gh.pub", tmp_path / "gh.key"
    subprocess.run(["minisign", "-G", "-W", "-p", str(pub), "-s", str(key)], check=True,
                   capture_output=True)
    return key, pub.read_text().splitlines()[1]


def test_g133_old_signed_asset_republished_under_a_new_tag_is_refused(
        host: Host, github: GitHub, gh_key: tuple[Path, str]) -> None:
    key, pub = gh_key
    old = _gh_release(github, "1.0.0")
    sig = _minisign(github, key, old)  # trusted comment: file:tool-1.0.0-...
    github.set_releases([{"tag_name": "v1.0.0", "assets": [old, sig]}])
    _gh(host, github, public_keys=[pub], signature="{asset}.minisig")
    assert _gh_once(host, "--once").returncode == 0 and host.current() == "1.0.0"
    # the attacker cannot sign, but can copy: 1.0.0's bytes and signature under v9.9.9
    evil = "tool-9.9.9-x86_64-linux.tar.gz"
    (github.root / "assets" / evil).write_bytes((github.root / "assets" / old).read_bytes())
    (github.root / "assets" / f"{evil}.minisig").write_bytes(
        (github.root / "assets" / sig).read_bytes())
    github.set_releases([{"tag_name": "v9.9.9", "assets": [evil, f"{evil}.minisig"]}])
    r = _gh_once(host, "--once")
    assert r.returncode == 1
    assert "the signed signature of tool-9.9.9-x86_64-linux.tar.gz does not name v9.9.9" \
        in r.stderr, r.stderr
    assert host.current() == "1.0.0" and not (host.prefix / "releases" / "9.9.9").exists()


def test_g133_signed_checksum_file_must_name_the_version(host: Host, github: GitHub,
                                                         gh_key: tuple[Path, str]) -> None:
    key, pub = gh_key
    old = _gh_release(github, "1.0.0")
    sums = subprocess.run(["sha256sum", old], cwd=github.root / "assets", capture_output=True,
                          text=True, check=True).stdout
    github.add_asset("SHA256SUMS", sums.encode())
    _minisign(github, key, "SHA256SUMS")
    github.set_releases([{"tag_name": "v9.9.9",
                          "assets": [old, "SHA256SUMS", "SHA256SUMS.minisig"]}])
    _gh(host, github, public_keys=[pub], checksums="SHA256SUMS$")
    r = _gh_once(host, "--once")
    assert r.returncode == 1 and "the signed SHA256SUMS does not name v9.9.9" in r.stderr
    # a version named in the trusted comment binds too (assets without versions in names)
    plain = _gh_release(github, "2.0.0", name="tool-x86_64-linux.tar.gz")
    sums = subprocess.run(["sha256sum", plain], cwd=github.root / "assets",
                          capture_output=True, text=True, check=True).stdout
    github.add_asset("SHA256SUMS", sums.encode())
    _minisign(github, key, "SHA256SUMS", comment="tool v2.0.0")
    github.set_releases([{"tag_name": "v2.0.0",
                          "assets": [plain, "SHA256SUMS", "SHA256SUMS.minisig"]}])
    r = _gh_once(host, "--once")
    assert r.returncode == 0, r.stderr
    assert host.current() == "2.0.0"


def test_g133_highest_installed_is_a_floor(host: Host, github: GitHub) -> None:
    for version in ("1.0.0", "2.0.0"):
        name = _gh_release(github, version)
        sums = subprocess.run(["sha256sum", name], cwd=github.root / "assets",
                              capture_output=True, text=True, check=True).stdout
        github.add_asset(f"SHA256SUMS-{version}", sums.encode())
        github.set_releases([{"tag_name": f"v{version}",
                              "assets": [name, f"SHA256SUMS-{version}"]}])
        _gh(host, github, checksums="SHA256SUMS")
        assert _gh_once(host, "--once").returncode == 0
    assert host.current() == "2.0.0"
    assert _gh_once(host, "rollback", "hello").returncode == 0  # the operator goes back
    assert host.current() == "1.0.0"
    mid = _gh_release(github, "1.5.0")  # an older release republished as the latest
    sums = subprocess.run(["sha256sum", mid], cwd=github.root / "assets",
                          capture_output=True, text=True, check=True).stdout
    github.add_asset("SHA256SUMS-1.5.0", sums.encode())
    github.set_releases([{"tag_name": "v1.5.0", "assets": [mid, "SHA256SUMS-1.5.0"]}])
    r = _gh_once(host, "--once")
    assert r.returncode == 0 and host.current() == "1.0.0", r.stderr
    # an explicit update by the operator may go below the floor
    r = _gh_once(host, "update", "hello", "--version", "1.5.0")
    assert r.returncode == 0 and host.current() == "1.5.0", r.stderr


def test_g134_token_never_follows_an_asset_url_to_another_host(host: Host,
                                                              github: GitHub) -> None:
    name = _gh_release(github, "1.0.0")
    sums = subprocess.run(["sha256sum", name], cwd=github.root / "assets",
                          capture_output=True, text=True, check=True).stdout
    github.add_asset("SHA256SUMS", sums.encode())
    github.set_releases([{"tag_name": "v1.0.0", "assets": [name, "SHA256SUMS"]}],
                        asset_host="127.0.0.2")
    _gh(host, github, checksums="SHA256SUMS$")
    r = _gh_once(host, "--once")
    assert r.returncode == 0, r.stderr
    requests = github.requests()
    elsewhere = [q for q in requests if not q["host"].startswith("127.0.0.1:")]
    assert elsewhere, "the asset was fetched from the other host"
    assert all(q["authorization"] is None for q in elsewhere), elsewhere
    api = [q for q in requests if q["host"].startswith("127.0.0.1:")]
    assert api and all(q["authorization"] == "Bearer ghp_T0KEN" for q in api)


# -- 135: a FIFO, device, socket or link in a directory feed -------------------------------------

@pytest.mark.parametrize("what", ["manifest", "signature", "artifact"])
def test_g135_fifo_in_a_directory_feed_is_refused_without_blocking(
        host: Host, feed: Feed, daemon: Daemon, what: str) -> None:
    art = feed.release("1.0.0")
    name = {"manifest": "manifest.json", "signature": "manifest.json.minisig",
            "artifact": art.name}[what]
    (feed.folder / name).unlink()
    os.mkfifo(feed.folder / name)
    _directory_app(host, feed)
    daemon.start()
    # the first scheduled check runs into it at once, and fails instead of hanging
    daemon.wait_for(lambda: "a FIFO" in (daemon.app()["last_error"] or ""), timeout=10,
                    what="the scheduled check to fail")
    t0 = time.monotonic()
    r = daemon.ctl("check" if what != "artifact" else "update", "hello", timeout=20)
    assert time.monotonic() - t0 < 10
    assert r.returncode == 1
    assert f"{feed.folder / name}: a FIFO; a feed folder holds plain files only" in r.stderr
    t0 = time.monotonic()
    assert daemon.status()["apps"][0]["name"] == "hello"  # still answering
    assert time.monotonic() - t0 < 1


def test_g135_symlink_and_device_in_a_directory_feed_are_refused(host: Host,
                                                                 feed: Feed) -> None:
    feed.release("1.0.0")
    _directory_app(host, feed)
    real = feed.folder / "manifest.json"
    moved = feed.work / "manifest.json"
    real.rename(moved)
    real.symlink_to(moved)
    r = run_updaterd("--config", host.config, "--once", timeout=20)
    assert r.returncode == 1 and f"{real}: a symbolic link" in r.stderr, r.stderr
    real.unlink()
    os.mknod(real, 0o644 | stat.S_IFCHR, os.makedev(1, 5))  # /dev/zero
    r = run_updaterd("--config", host.config, "--once", timeout=20)
    assert r.returncode == 1 and f"{real}: a device" in r.stderr, r.stderr


# -- 136: caps on subscriptions and inhibitors ---------------------------------------------------

def _rss_kib(pid: int) -> int:
    line = next(x for x in Path(f"/proc/{pid}/status").read_text().splitlines()
                if x.startswith("VmRSS:"))
    return int(line.split()[1])


def test_g136_a_flood_of_subscriptions_is_capped_and_root_is_served(
        host: Host, feed: Feed, daemon: Daemon, public_dir: Path, tmp_path: Path) -> None:
    feed.release("1.0.0")
    _directory_app(host, feed)
    sock = host.open_socket_in(public_dir)
    daemon.socket = sock
    daemon.start()
    daemon.wait_for(lambda: daemon.app()["current"] == "1.0.0", what="first install")
    assert daemon.proc is not None
    before = _rss_kib(daemon.proc.pid)
    requests = tmp_path / "requests"
    requests.write_text("".join(json.dumps({"jsonrpc": "2.0", "id": i, "method": "subscribe"})
                                + "\n" for i in range(3000)))
    outs = [tmp_path / f"replies-{n}" for n in range(8)]
    flooders = []
    for out in outs:  # files, not pipes: nothing waits on a reader
        with open(requests) as stdin, open(out, "w") as stdout:
            flooders.append(subprocess.Popen(
                ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
                 "socat", "-t", "4", "-", f"UNIX-CONNECT:{sock}"], stdin=stdin, stdout=stdout))
    time.sleep(1)
    t0 = time.monotonic()
    daemon.status()
    assert time.monotonic() - t0 < 1, "root is served within 1 s during the flood"
    replies = []
    for f, out in zip(flooders, outs, strict=True):
        f.wait(timeout=60)
        replies += [json.loads(x) for x in out.read_text().splitlines() if '"id"' in x]
    ok = [r for r in replies if "result" in r]
    refused = [r for r in replies if "error" in r]
    assert len(ok) == 8 * 16, len(ok)
    assert refused and all(r["error"]["code"] == 2 for r in refused)
    assert "this connection already holds 16" in refused[0]["error"]["message"]
    grown = _rss_kib(daemon.proc.pid) - before
    assert grown < 20 * 1024, f"the daemon grew by {grown} KiB"
    # and inhibitors likewise, per connection
    inh = "".join(json.dumps({"jsonrpc": "2.0", "id": i, "method": "inhibit",
                              "params": {"app": "hello", "who": "x", "why": "y"}}) + "\n"
                  for i in range(40))
    r = _as_nobody("socat", "-t", "2", "-", f"UNIX-CONNECT:{sock}", input=inh)
    replies = [json.loads(x) for x in r.stdout.splitlines()]
    assert sum("error" in x for x in replies) == 40, "inhibit needs the admin group"
    r = subprocess.run(["socat", "-t", "2", "-", f"UNIX-CONNECT:{sock}"], input=inh, text=True,
                       capture_output=True, timeout=30)
    replies = [json.loads(x) for x in r.stdout.splitlines()]
    assert sum("result" in x for x in replies) == 16


# -- 137: admin rights from the process's own groups ---------------------------------------------

@pytest.fixture
def admin_member() -> Any:
    """A group `updtest` with one member in /etc/group, user `updtest-m`; removed after."""
    subprocess.run(["groupadd", "-f", "updtest"], check=True)
    subprocess.run(["useradd", "-M", "-N", "-g", "nogroup", "-G", "updtest", "updtest-m"],
                   capture_output=True)
    import grp
    import pwd
    yield pwd.getpwnam("updtest-m").pw_uid, grp.getgrnam("updtest").gr_gid
    subprocess.run(["userdel", "updtest-m"], capture_output=True)
    subprocess.run(["groupdel", "updtest"], capture_output=True)


def test_g137_admin_comes_from_the_connecting_process_groups(
        host: Host, feed: Feed, daemon: Daemon, public_dir: Path,
        admin_member: tuple[int, int]) -> None:
    from tests.helpers import rpc_as
    member, group = admin_member
    feed.release("1.0.0")
    _directory_app(host, feed)
    daemon.socket = host.open_socket_in(public_dir, admin_group="updtest")
    daemon.start()
    pause = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "pause",
                        "params": {"app": "hello"}})
    # listed in /etc/group, but this process dropped its supplementary groups: not admin
    err = rpc_as(member, 65534, daemon.socket, pause)
    assert err.get("error", {}).get("code") == 3, err
    # not listed anywhere, but given the group by whoever started it (SupplementaryGroups=)
    ok = rpc_as(NOBODY, NOBODY, daemon.socket, pause, groups=[group])
    assert "result" in ok, ok
    assert daemon.app()["paused"] is True


# -- 138: hosts read as the resolver reads them; the connected address; allowed_hosts ------------

METADATA_SPELLINGS = ["2852039166", "0xa9fea9fe", "0251.0376.0251.0376", "169.254.43518",
                      "[::ffff:169.254.169.254]", "[64:ff9b::a9fe:a9fe]",
                      "[::ffff:a9fe:a9fe]", "[2002:a9fe:a9fe::]", "metadata.google.internal.",
                      "METADATA.google.internal", "169.254.169.254.", "0"]


@pytest.mark.parametrize("host_text", METADATA_SPELLINGS)
def test_g138_every_spelling_of_the_metadata_address_is_refused(host_text: str) -> None:
    from updaterd.errors import DownloadError
    from updaterd.trust import urlpolicy
    with pytest.raises(DownloadError, match=r"metadata|link-local|unspecified"):
        urlpolicy.require_allowed(f"https://{host_text}/feed/manifest.json", allow_insecure=False)


def _feed_naming(feed: Feed, url: str, published: bool = False) -> None:
    """Publish 1.0.0 (unless `published`), then point its artifact at `url` and sign the
    manifest again."""
    if not published:
        feed.release("1.0.0")
    m = feed.manifest()
    m["releases"][0]["artifacts"][0]["url"] = url
    (feed.folder / "manifest.json").write_text(json.dumps(m))
    feed.resign()


def test_g138_a_signed_artifact_url_in_another_spelling_is_refused(
        host: Host, nginx: Nginx, served_feed: Feed) -> None:
    _feed_naming(served_feed, "https://0xa9fea9fe/latest/meta-data/x.tar.gz")
    host.follow(nginx, served_feed)
    r = run_updaterd("--config", host.config, "--once", timeout=30)
    assert r.returncode == 1
    assert "refusing https://0xa9fea9fe/latest/meta-data/x.tar.gz: link-local or cloud " \
        "metadata address" in r.stderr, r.stderr


def test_g138_the_address_a_name_resolves_to_is_checked(host: Host, nginx: Nginx,
                                                        served_feed: Feed,
                                                        tmp_path: Path) -> None:
    """meta.test resolves to 169.254.169.254 (an /etc/hosts of this test's own mount
    namespace): the URL text is harmless, the address is not."""
    _feed_naming(served_feed, "https://meta.test/latest/x.tar.gz")
    host.follow(nginx, served_feed)
    hosts = tmp_path / "hosts"
    hosts.write_text("127.0.0.1 localhost\n169.254.169.254 meta.test\n")
    from tests.helpers import BIN
    r = subprocess.run(["unshare", "-m", "sh", "-c",
                        'mount --bind "$0" /etc/hosts && exec "$@"', str(hosts),
                        str(BIN / "updaterd"), "--config", str(host.config), "--once"],
                       capture_output=True, text=True, timeout=60)
    if "unshare" in r.stderr and r.returncode != 0 and "Operation not permitted" in r.stderr:
        pytest.skip("no mount namespaces here")
    assert r.returncode == 1
    assert "refusing meta.test: it resolves to 169.254.169.254, a link-local or cloud " \
        "metadata address" in r.stderr, r.stderr


@pytest.fixture
def two_host_server(tmp_path: Path) -> Any:
    from tests.servers.asgi import running_asgi
    root = tmp_path / "fault-root"
    root.mkdir()
    with running_asgi("tests.servers.faults:app", {"FAULT_ROOT": str(root),
                                                  "FAULT_LOG": str(tmp_path / "f.log")},
                      hosts=("127.0.0.1", "127.0.0.2")) as port:
        yield root, port


def test_g138_allowed_hosts_is_enforced_at_every_redirect_hop(
        host: Host, nginx: Nginx, served_feed: Feed, two_host_server: Any) -> None:
    root, port = two_host_server
    art = served_feed.release("1.0.0")
    (root / art.name).write_bytes(art.read_bytes())
    # the signed manifest names 127.0.0.1 only; that host redirects to 127.0.0.2
    _feed_naming(served_feed, f"http://127.0.0.1:{port}/offhost/{art.name}", published=True)
    host.follow(nginx, served_feed)
    r = run_updaterd("--config", host.config, "--once", timeout=30)
    assert r.returncode == 1
    assert f"refusing http://127.0.0.2:{port}/plain/{art.name}: 127.0.0.2 is not in this " \
        "app's allowed_hosts (127.0.0.1)" in r.stderr, r.stderr
    # listed by the operator, the same redirect is followed
    host.follow(nginx, served_feed, allowed_hosts=["127.0.0.2"])
    r = run_updaterd("--config", host.config, "--once", timeout=30)
    assert r.returncode == 0, r.stderr
    assert host.current() == "1.0.0"


# -- 139: a server's wait is capped, and the operator can end it --------------------------------

def test_g139_rate_limit_reset_in_2100_is_capped_and_check_force_ends_it(
        host: Host, github: GitHub, daemon: Daemon) -> None:
    name = _gh_release(github, "1.0.0")
    sums = subprocess.run(["sha256sum", name], cwd=github.root / "assets",
                          capture_output=True, text=True, check=True).stdout
    github.add_asset("SHA256SUMS", sums.encode())
    github.set_releases([{"tag_name": "v1.0.0", "assets": [name, "SHA256SUMS"]}],
                        rate_limited=1, reset_at=4102444800)  # 2100-01-01
    _gh(host, github, checksums="SHA256SUMS$", check_interval="1h", jitter="0s",
        limits={"retry_after_cap": "10m"})
    daemon.env = {"GH_TEST_TOKEN": "ghp_T0KEN"}
    start = time.time()
    daemon.start()
    daemon.wait_for(lambda: "rate limited" in (daemon.app()["last_error"] or ""),
                    what="the rate limit")
    state = host.state()
    assert state["rate_limited_until"] <= start + 600 + 5, "capped at retry_after_cap"
    assert "2100" not in daemon.app()["last_error"]
    assert "`updaterctl check APP --force` asks again now" in daemon.app()["last_error"]
    r = daemon.ctl("check", "hello")
    assert r.returncode == 1 and "no request until" in r.stderr
    r = daemon.ctl("check", "hello", "--force")
    assert r.returncode == 0, r.stderr
    assert host.state()["rate_limited_until"] is None


# -- 140: explicit modes, whatever the umask -----------------------------------------------------

def test_g140_self_install_under_umask_000_leaves_nothing_writable_by_others(
        tmp_path: Path) -> None:
    import sys

    from tests.helpers import BIN
    prefix = tmp_path / "opt" / "updaterd"
    r = subprocess.run(["sh", "-c", 'umask 000 && exec "$@"', "sh", str(BIN / "updaterd"),
                        "self-install", "--prefix", str(prefix), "--python", sys.executable],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    loose = [f"{p} {stat.S_IMODE(p.lstat().st_mode):04o}"
             for p in [prefix, *prefix.rglob("*")]
             if not p.is_symlink() and p.lstat().st_mode & 0o022]
    assert not loose, loose
    assert (prefix / "releases").is_dir() and (prefix / "launcher").is_file()


# -- 141: sd_notify never blocks -----------------------------------------------------------------

def test_g141_a_notify_socket_nobody_reads_does_not_stop_the_daemon(
        host: Host, feed: Feed, daemon: Daemon, tmp_path: Path) -> None:
    import socket
    feed.release("1.0.0")
    _directory_app(host, feed)
    path = tmp_path / "notify.sock"
    unread = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    unread.bind(str(path))  # queues 10 datagrams (net.unix.max_dgram_qlen), then is full
    try:
        daemon.env = {"NOTIFY_SOCKET": str(path)}
        daemon.start()
        daemon.wait_for(lambda: daemon.app()["current"] == "1.0.0", what="first install")
        for _ in range(15):  # each check is two STATUS= changes
            r = daemon.ctl("check", "hello", "--force", timeout=10)
            assert r.returncode == 0, r.stderr
        t0 = time.monotonic()
        daemon.status()
        assert time.monotonic() - t0 < 1
        assert "messages to systemd dropped so far" in daemon.log.read_text()
    finally:
        unread.close()


# -- 143: client strings in the log ---------------------------------------------------------------

def test_g143_control_characters_and_long_labels_never_reach_the_log_raw(
        host: Host, feed: Feed, daemon: Daemon, public_dir: Path) -> None:
    feed.release("1.0.0")
    feed.release("1.1.0")
    _directory_app(host, feed, auto_update=False)
    daemon.socket = host.open_socket_in(public_dir)
    daemon.start()
    forged = "x\nupdaterd: hello: 6.6.6 installed\x1b[2J"
    hold = subprocess.Popen(["socat", "-t", "30", "-", f"UNIX-CONNECT:{daemon.socket}"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert hold.stdin is not None and hold.stdout is not None
    hold.stdin.write(json.dumps({"jsonrpc": "2.0", "id": 1, "method": "inhibit",
                                 "params": {"app": "hello", "who": forged,
                                            "why": forged}}) + "\n")
    hold.stdin.flush()
    assert "result" in hold.stdout.readline()
    try:
        daemon.ctl("update", "hello", "--no-wait")
        daemon.wait_for(lambda: "waiting for inhibitors" in daemon.log.read_text(),
                        what="the inhibitor in the log")
    finally:
        hold.kill()
        hold.wait()
    lines = daemon.log.read_text().splitlines()
    forged = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d )?updaterd: hello: 6\.6\.6")
    assert not any(forged.match(line) for line in lines)
    assert "\x1b" not in daemon.log.read_text()
    assert any("x\\nupdaterd: hello: 6.6.6 installed\\x1b[2J" in line for line in lines)
    # over-long labels are refused at the door
    too_long = json.dumps({"jsonrpc": "2.0", "id": 2, "method": "inhibit",
                           "params": {"app": "hello", "who": "w" * 129, "why": "y"}})
    r = subprocess.run(["socat", "-t", "2", "-", f"UNIX-CONNECT:{daemon.socket}"],
                       input=too_long + "\n", capture_output=True, text=True, timeout=20)
    assert json.loads(r.stdout)["error"]["code"] == -32602


# -- 144: publish cannot break a feed --------------------------------------------------------------

def _feed_files(feed: Feed) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(feed.folder.iterdir())}


def test_g144_publish_with_another_key_is_refused_and_touches_nothing(feed: Feed,
                                                                       tmp_path: Path) -> None:
    from updaterd.release.publish import keygen
    feed.release("1.0.0")
    before = _feed_files(feed)
    _, other = keygen(str(tmp_path / "other"))
    art = feed.work / "hello-1.1.0-linux-x86_64.tar.gz"
    art.write_bytes(b"x" * 100)
    r = run_updaterd("publish", "--feed", feed.folder, "--key", other, "--app", "hello",
                     "--version", "1.1.0", art)
    assert r.returncode == 1
    assert "would break every host that follows it" in r.stderr
    assert "updaterd rotate-keys" in r.stderr and "--new-key" in r.stderr
    assert _feed_files(feed) == before
    # deliberately, with --new-key
    r = run_updaterd("publish", "--feed", feed.folder, "--key", other, "--app", "hello",
                     "--version", "1.1.0", "--new-key", art)
    assert r.returncode == 0, r.stderr


def test_g144_publish_with_no_or_a_missing_artifact_is_refused(feed: Feed) -> None:
    feed.release("1.0.0")
    before = _feed_files(feed)
    r = run_updaterd("publish", "--feed", feed.folder, "--key", feed.key, "--app", "hello",
                     "--version", "1.1.0")
    assert r.returncode == 1 and "hello 1.1.0 has no artifact" in r.stderr
    good = feed.work / "hello-1.1.0-linux-x86_64.tar.gz"
    good.write_bytes(b"x" * 100)
    missing = feed.work / "hello-1.1.0-linux-aarch64.tar.gz"
    r = run_updaterd("publish", "--feed", feed.folder, "--key", feed.key, "--app", "hello",
                     "--version", "1.1.0", good, missing)
    assert r.returncode == 1 and f"{missing}: no such file" in r.stderr
    assert "Traceback" not in r.stderr
    assert _feed_files(feed) == before, "nothing was copied in before the refusal"
    # re-signing an existing release with new notes needs no artifact
    r = run_updaterd("publish", "--feed", feed.folder, "--key", feed.key, "--app", "hello",
                     "--version", "1.0.0", "--rollout", "50")
    assert r.returncode == 0, r.stderr


def test_g144_a_publish_killed_between_its_renames_leaves_a_verifiable_feed(
        host: Host, nginx: Nginx, served_feed: Feed) -> None:
    served_feed.release("1.0.0")
    host.follow(nginx, served_feed)
    art = served_feed.work / "hello-1.1.0-linux-x86_64.tar.gz"
    from tests.helpers import make_tar, release_files
    make_tar(art, release_files("1.1.0"), top="hello-1.1.0")
    r = run_updaterd("publish", "--feed", served_feed.folder, "--key", served_feed.key,
                     "--app", "hello", "--version", "1.1.0", art,
                     env={"UPDATERD_FAILPOINTS": "publish.after_signature=kill"})
    assert r.returncode == -9
    # the old manifest with the new signature file: hosts still verify it
    r = run_updaterd("--config", host.config, "--once")
    assert r.returncode == 0, r.stderr
    assert host.current() == "1.0.0"
    # and the publish, run again, completes
    r = run_updaterd("publish", "--feed", served_feed.folder, "--key", served_feed.key,
                     "--app", "hello", "--version", "1.1.0", art)
    assert r.returncode == 0, r.stderr
    assert run_updaterd("--config", host.config, "--once").returncode == 0
    assert host.current() == "1.1.0"
