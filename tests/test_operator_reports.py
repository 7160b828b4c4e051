"""The less-travelled paths: archive layouts, in-place owners and backups, GitHub
without a token, `--once` from a timer, history and messages. Each reproduces an operator's
report against the real updaterd."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

from tests.conftest import Daemon, GitHub, Host
from tests.helpers import Feed, make_tar, release_files, run_updaterd


def _directory(host: Host, feed: Feed, **kw: object) -> None:
    host.configure(source="directory", path=str(feed.folder), public_keys=[feed.pub], **kw)


def test_an_archive_whose_only_top_folder_is_bin_keeps_it(host: Host, feed: Feed) -> None:
    """`tar -C build -czf tool.tar.gz bin`: bin/ is the layout, not a wrapper."""
    build = feed.work / "build"
    (build / "bin").mkdir(parents=True)
    (build / "bin" / "hello").write_text("#!/bin/sh\necho hello 1.0.0\n")
    (build / "bin" / "hello").chmod(0o755)
    art = feed.work / "hello-1.0.0-linux-x86_64.tar.gz"
    subprocess.run(["tar", "-C", str(build), "-czf", str(art), "bin"], check=True)
    feed.publish("1.0.0", [art])
    _directory(host, feed)
    r = run_updaterd("--config", host.config, "--once")
    assert r.returncode == 0, r.stderr
    assert (host.prefix / "releases" / "1.0.0" / "bin" / "hello").is_file()
    out = subprocess.run([str(host.prefix / "bin" / "hello")], capture_output=True, text=True)
    assert out.stdout.strip() == "hello 1.0.0"


def test_a_wrapper_folder_is_still_stripped(host: Host, feed: Feed) -> None:
    feed.release("1.0.0")  # hello-1.0.0/bin/hello ...
    _directory(host, feed)
    assert run_updaterd("--config", host.config, "--once").returncode == 0
    assert (host.prefix / "releases" / "1.0.0" / "bin" / "hello").is_file()
    assert os.readlink(host.prefix / "bin" / "hello") == "../current/bin/hello"


def test_a_single_lib_folder_is_kept_too(host: Host, feed: Feed) -> None:
    art = make_tar(feed.work / "hello-1.0.0-linux-x86_64.tar.gz",
                   {"lib/libhello.so": (b"\x7fELF", 0o644)})
    feed.publish("1.0.0", [art])
    _directory(host, feed, health_check=[])
    assert run_updaterd("--config", host.config, "--once").returncode == 0
    assert (host.prefix / "releases" / "1.0.0" / "lib" / "libhello.so").is_file()
    assert not Path(host.prefix / "releases" / "1.0.0" / "libhello.so").exists()


# -- GitHub without a token ----------------------------------------------------------------------

def _gh_release(github: GitHub, version: str) -> list[str]:
    name = f"tool-{version}-x86_64-linux.tar.gz"
    make_tar(github.root / "assets" / name, release_files(version), top=f"tool-{version}")
    sums = subprocess.run(["sha256sum", name], cwd=github.root / "assets", capture_output=True,
                          text=True, check=True).stdout
    github.add_asset("SHA256SUMS", sums.encode())
    return [name, "SHA256SUMS"]


def _gh(host: Host, github: GitHub) -> None:
    host.configure(source="github", repo="acme/tool", api_url=github.api_url,
                   allow_insecure=True, asset=r"tool-.*\.tar\.gz$", checksums="SHA256SUMS$",
                   token_env="GH_UNSET_TOKEN")


def test_an_unset_token_env_warns_once_and_goes_anonymous(host: Host, github: GitHub) -> None:
    github.set_releases([{"tag_name": "v1.0.0", "assets": _gh_release(github, "1.0.0")}])
    _gh(host, github)
    r = run_updaterd("--config", host.config, "--once")
    assert r.returncode == 0, r.stderr
    assert host.current() == "1.0.0"
    assert r.stderr.count("the environment has no GH_UNSET_TOKEN; asking GitHub without a "
                          "token") == 1
    assert all(q["authorization"] is None for q in github.requests())


def test_a_401_says_what_github_said(host: Host, github: GitHub) -> None:
    github.set_releases([{"tag_name": "v1.0.0", "assets": _gh_release(github, "1.0.0")}],
                        require_token="right")
    _gh(host, github)
    r = run_updaterd("--config", host.config, "--once", env={"GH_UNSET_TOKEN": "wrong"})
    assert r.returncode == 1
    assert "/repos/acme/tool/releases/latest: HTTP 401: Bad credentials" in r.stderr, r.stderr


# -- `--once` from cron ---------------------------------------------------------------------------

def test_once_quiet_prints_nothing_unless_something_fails(host: Host, feed: Feed) -> None:
    feed.release("1.0.0")
    _directory(host, feed)
    r = run_updaterd("--config", host.config, "--once", "--quiet")
    assert r.returncode == 0 and r.stderr == "" and r.stdout == "", r.stderr
    r = run_updaterd("--config", host.config, "--once", "-q")  # nothing new
    assert r.returncode == 0 and r.stderr == ""
    feed.release("1.1.0", healthy=False)
    r = run_updaterd("--config", host.config, "--once", "--quiet")
    assert r.returncode == 1
    assert "1.1.0" in r.stderr and "health check" in r.stderr


def test_once_rate_limited_is_a_warning_not_a_failure(host: Host, github: GitHub) -> None:
    github.set_releases([{"tag_name": "v1.0.0", "assets": _gh_release(github, "1.0.0")}],
                        rate_limited=1)
    _gh(host, github)
    r = run_updaterd("--config", host.config, "--once")
    assert r.returncode == 0, r.stderr
    assert "rate limited" in r.stderr
    r = run_updaterd("--config", host.config, "--once", "--quiet")
    assert r.returncode == 0 and "no request until" not in r.stderr.replace("token", "")


# -- history -------------------------------------------------------------------------------------

def test_a_release_found_on_disk_is_taken_over_and_recorded(host: Host, feed: Feed) -> None:
    """What `self-install` (or an install by hand) leaves: a current release, no state."""
    feed.release("1.0.0")
    release = host.prefix / "releases" / "1.0.0" / "bin"
    release.mkdir(parents=True)
    (release / "hello").write_text("#!/bin/sh\necho hello 1.0.0\n")
    (release / "hello").chmod(0o755)
    (host.prefix / "current").symlink_to("releases/1.0.0")
    _directory(host, feed)
    r = run_updaterd("--config", host.config, "--once")
    assert r.returncode == 0, r.stderr
    assert "state says None" not in r.stderr
    assert "hello: 1.0.0 is installed; taking it over" in r.stderr
    history = host.state()["history"]
    assert history[0]["action"] == "found" and history[0]["version"] == "1.0.0"


def test_skip_and_unskip_are_in_the_history(host: Host, feed: Feed, daemon: Daemon) -> None:
    feed.release("1.0.0")
    _directory(host, feed, check_interval="1h", jitter="0s", auto_update=False)
    daemon.start()
    daemon.ctl("skip", "hello", "1.1.0", check=True)
    daemon.ctl("unskip", "hello", "1.1.0", check=True)
    r = daemon.ctl("unskip", "hello", "7.7.7")
    assert r.returncode == 1 and "hello 7.7.7 is neither skipped nor blocked" in r.stderr
    actions = [(h["action"], h["version"]) for h in
               json.loads(daemon.ctl("--json", "history", "hello", check=True).stdout)]
    assert ("skipped", "1.1.0") in actions and ("unskipped", "1.1.0") in actions


# -- messages --------------------------------------------------------------------------------------

def test_a_digest_mismatch_names_both_digests_and_downloads_say_so(host: Host,
                                                                   feed: Feed) -> None:
    art = feed.release("1.0.0")
    art_in_feed = feed.folder / art.name
    data = bytearray(art_in_feed.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, other bytes
    art_in_feed.write_bytes(bytes(data))
    _directory(host, feed)
    r = run_updaterd("--config", host.config, "--once")
    assert r.returncode == 1
    expected = feed.manifest()["releases"][0]["artifacts"][0]["sha256"]
    assert re.search(rf"SHA-256 mismatch: expected {expected}, got [0-9a-f]{{64}}", r.stderr)
    assert re.search(r"hello: downloading 1\.0\.0 from \S+hello-1\.0\.0", r.stderr), r.stderr


def test_foreground_log_lines_carry_a_time_unless_the_journal_keeps_it(
        host: Host, feed: Feed, tmp_path: Path) -> None:
    feed.release("1.0.0")
    _directory(host, feed)
    r = run_updaterd("--config", host.config, "--once")
    assert all(re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d updaterd: ", line)
               for line in r.stderr.splitlines()), r.stderr
    log = tmp_path / "journal-stand-in"
    from tests.helpers import BIN
    with open(log, "w") as out:
        st = os.fstat(out.fileno())
        env = dict(os.environ, JOURNAL_STREAM=f"{st.st_dev}:{st.st_ino}")
        subprocess.run([str(BIN / "updaterd"), "--config", str(host.config), "--once"],
                       stderr=out, env=env, check=True)
    lines = log.read_text().splitlines()  # no time, and the priority the journal files
    assert lines and all(re.match(r"<[2-7]>updaterd: ", line) for line in lines), lines
