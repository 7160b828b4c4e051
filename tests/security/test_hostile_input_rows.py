"""Group H of the catalogue (H146-H154), hostile input: a GitHub API or feed server without the
signing key, another local user, a buggy app and an operator's mistake, against the real
updaterd."""

from __future__ import annotations

import http.server
import json
import os
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Daemon, GitHub, Host, Nginx
from tests.helpers import BIN, Feed, app_script, run_updaterd
from tests.security.test_host_rows import (
    _directory_app,
    _gh,
    _gh_once,
    _gh_release,
    _minisign,
    gh_key,
)

__all__ = ["gh_key"]  # the fixture, shared with group G


def _sums(gh: GitHub, names: list[str], file_name: str = "SHA256SUMS") -> str:
    listing = subprocess.run(["sha256sum", *names], cwd=gh.root / "assets",
                             capture_output=True, text=True, check=True).stdout
    gh.add_asset(file_name, listing.encode())
    return file_name


def _signed_sums(gh: GitHub, key: Path, names: list[str], file_name: str) -> None:
    _sums(gh, names, file_name)
    _minisign(gh, key, file_name)


# -- 146: no automatic downgrade through a tag that cannot be ordered ---------------------------

def _signed_release_listed(host: Host, gh: GitHub, key: Path, pub: str, version: str,
                           tag: str, sums: str) -> None:
    """`version`'s asset and a signed checksum file `sums` naming it, listed under `tag`."""
    name = _gh_release(gh, version)
    _signed_sums(gh, key, [name], sums)
    gh.set_releases([{"tag_name": tag, "assets": [name, sums, f"{sums}.minisig"]}])
    _gh(host, gh, public_keys=[pub], checksums=f"{sums}$")


def test_h146_an_old_signed_release_under_a_non_semver_tag_is_not_installed(
        host: Host, github: GitHub, gh_key: tuple[Path, str]) -> None:
    key, pub = gh_key
    _signed_release_listed(host, github, key, pub, "1.5.0", "v1.5.0", "SHA256SUMS")
    r = _gh_once(host, "--once")
    assert r.returncode == 0 and host.current() == "1.5.0", r.stderr
    # the API, without the key, lists the genuine old 1.0.0 (its signed listing) as tool-1.0.0
    _signed_release_listed(host, github, key, pub, "1.0.0", "tool-1.0.0", "SHA256SUMS-old")
    r = _gh_once(host, "--once")
    assert r.returncode == 0, r.stderr
    assert host.current() == "1.5.0" and not (host.prefix / "releases" / "tool-1.0.0").exists()
    reason = host.state()["passed_over"]["tool-1.0.0"]
    assert "not a semantic version" in reason and "--version tool-1.0.0" in reason


def test_h146_a_tag_binds_signed_material_only_by_its_version_number(
        host: Host, github: GitHub, gh_key: tuple[Path, str]) -> None:
    key, pub = gh_key
    old = _gh_release(github, "1.0.0")  # tool-1.0.0-x86_64-linux.tar.gz, genuinely signed
    _signed_sums(github, key, [old], "SHA256SUMS")
    for tag in ("tool-1.0.0", "tool-1.0.0-x86_64-linux.tar.gz"):
        github.set_releases([{"tag_name": tag,
                              "assets": [old, "SHA256SUMS", "SHA256SUMS.minisig"]}])
        _gh(host, github, public_keys=[pub], checksums="SHA256SUMS$")
        # even asked for on purpose: the tag carries no version the signed listing could name
        r = _gh_once(host, "update", "hello", "--version", tag)
        assert r.returncode == 1, r.stderr
        assert "has no version number that the signed SHA256SUMS could name" in r.stderr
        assert host.current() is None


# -- 147: root never runs a file another user can rewrite ---------------------------------------

def _inplace(host: Host, feed: Feed, versions: tuple[str, ...]) -> Path:
    bin_dir = host.base / "bin"
    bin_dir.mkdir(exist_ok=True)
    target = bin_dir / "tool"
    for version in versions:
        art = feed.work / f"tool-{version}-linux-x86_64"
        art.write_bytes(app_script(version))
        feed.publish(version, [art])
    host.configure(source="directory", path=str(feed.folder), public_keys=[feed.pub],
                   install="inplace", target=str(target), executable="tool",
                   health_check=["./tool"], check_interval="1h", jitter="0s")
    return target


@pytest.mark.parametrize("how", ["owned by nobody", "writable by its group"])
def test_h147_an_inplace_target_another_user_can_rewrite_is_refused_before_any_download(
        host: Host, feed: Feed, how: str) -> None:
    target = _inplace(host, feed, ("1.0.0",))
    target.write_text("#!/bin/sh\necho hand-installed\n")
    if how == "owned by nobody":
        os.chown(target, 65534, 65534)
        target.chmod(0o755)
    else:
        target.chmod(0o775)
    r = run_updaterd("--config", host.config, "check-config")
    assert r.returncode == 2
    assert f"apps.hello target {target}: {target} is " in r.stderr, r.stderr
    assert f"chown root:root {target} && chmod go-w {target}" in r.stderr
    r = run_updaterd("--config", host.config, "--once")
    assert r.returncode == 2
    assert target.read_text() == "#!/bin/sh\necho hand-installed\n"
    assert not list((host.base / "cache").rglob("tool-*")), "nothing was downloaded"


def test_h147_a_target_chowned_while_the_daemon_runs_is_refused_before_the_download(
        host: Host, feed: Feed, daemon: Daemon) -> None:
    target = _inplace(host, feed, ("1.0.0", "1.1.0"))
    assert run_updaterd("--config", host.config, "update", "hello", "--version",
                        "1.0.0").returncode == 0
    daemon.start()
    os.chown(target, 65534, 65534)
    r = daemon.ctl("update", "hello")
    assert r.returncode != 0
    assert f"{target} is owned by nobody" in r.stderr + r.stdout, r.stderr
    st = target.stat()
    assert st.st_uid == 65534 and b"1.0.0" in target.read_bytes()
    assert not list((host.base / "cache").rglob("tool-1.1.0*"))


def test_h147_a_new_version_keeps_the_targets_group_and_mode_and_is_root_owned(
        host: Host, feed: Feed) -> None:
    target = _inplace(host, feed, ("1.0.0", "1.1.0"))
    target.write_text("#!/bin/sh\necho hand-installed\n")
    os.chown(target, 0, 65534)
    target.chmod(0o750)
    r = run_updaterd("--config", host.config, "update", "hello", "--version", "1.0.0")
    assert r.returncode == 0, r.stderr
    st = target.stat()
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (0, 65534, 0o750)


# -- 148: every body from a server or an app is capped; the asset pattern never stalls ----------

def _peak_rss_mib(*argv: str | Path) -> tuple[subprocess.CompletedProcess[str], float]:
    """Run updaterd with `argv` as the only child of a small Python, and its peak RSS."""
    probe = ("import resource, subprocess, sys\n"
             "r = subprocess.run(sys.argv[1:])\n"
             "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr)\n"
             "sys.exit(r.returncode)\n")
    r = subprocess.run([sys.executable, "-c", probe, str(BIN / "updaterd"), *map(str, argv)],
                       capture_output=True, text=True, timeout=120)
    return r, int(r.stderr.strip().splitlines()[-1]) / 1024


class _HugeAnswer(http.server.BaseHTTPRequestHandler):
    """200 with a body of 512 MiB: what a buggy app's health endpoint might send."""

    SIZE = 512 << 20

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(self.SIZE))
        self.end_headers()
        chunk = b"x" * (1 << 20)
        try:
            for _ in range(self.SIZE // len(chunk)):
                self.wfile.write(chunk)
        except OSError:
            pass  # the probe hung up after reading what it needs

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def huge_answer() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _HugeAnswer)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/healthz"
    server.shutdown()
    server.server_close()


def test_h148_a_health_url_answer_of_512_mib_is_not_read_into_memory(
        host: Host, feed: Feed, huge_answer: str) -> None:
    feed.release("1.0.0")
    _directory_app(host, feed, health_url=huge_answer, allow_insecure=True)
    r, peak = _peak_rss_mib("--config", host.config, "--once")
    assert r.returncode == 0, r.stderr
    assert host.current() == "1.0.0"
    assert peak < 128, f"peak RSS {peak:.0f} MiB: the answer was read whole"


def _largest_output_file(pid: int, named: str = "command-output") -> int:
    """The size of the largest deleted file `pid` holds open, or of its file called `named`
    (where a command's output goes)."""
    largest = 0
    fds = Path(f"/proc/{pid}/fd")
    for fd in fds.iterdir() if fds.exists() else ():
        try:
            target = os.readlink(fd)
            if target.endswith("(deleted)") or target.endswith("/" + named):
                largest = max(largest, fd.stat().st_size)
        except OSError:
            pass  # closed meanwhile
    return largest


def test_h148_a_health_command_that_writes_without_end_never_fills_the_disk(
        host: Host, feed: Feed) -> None:
    """1.5 GB of output from a health check: the daemon keeps its last line, not the bytes
    (1.9 GB on disk before; now its cap plus what the command writes in 10 ms)."""
    feed.release("1.0.0")
    _directory_app(host, feed, health_check=[
        "sh", "-c", "head -c 1500000000 /dev/zero; echo; echo the-last-words; exit 1"])
    proc = subprocess.Popen([str(BIN / "updaterd"), "--config", str(host.config), "--once"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    peak = 0
    while proc.poll() is None:
        peak = max(peak, _largest_output_file(proc.pid))
        time.sleep(0.002)
    _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 1, err
    assert "health check: exit status 1: the-last-words" in err, err
    assert peak < 512 << 20, f"the output took {peak >> 20} MiB on disk"
    assert host.current() is None


def test_h148_a_huge_asset_name_is_refused_and_never_stalls_the_daemon(
        host: Host, github: GitHub, daemon: Daemon) -> None:
    name = _gh_release(github, "1.0.0")
    evil = "lantern-" * 32768  # 256 KiB: the README's pattern backtracks for hours on it
    github.set_releases([{"tag_name": "v1.0.0", "assets": [name], "odd_assets": [evil]}])
    _gh(host, github, asset=r"lantern-.*-x86_64-unknown-linux-gnu\.tar\.(gz|xz|zst)$",
        verify="skip", check_interval="1h", jitter="0s")
    daemon.env["GH_TEST_TOKEN"] = "ghp_T0KEN"
    daemon.start()  # its first check reads the hostile answer; status must answer meanwhile
    deadline = time.monotonic() + 30
    error = None
    while error is None and time.monotonic() < deadline:
        asked = time.monotonic()
        r = daemon.ctl("--json", "status", "hello", timeout=10)
        assert r.returncode == 0 and time.monotonic() - asked < 2, "status answers at once"
        error = json.loads(r.stdout)["apps"][0]["last_error"]
        time.sleep(0.1)
    assert error is not None, "the check ended"
    assert "unexpected answer from the releases API" in error and "length <= 1024" in error
    assert len(error) < 2000


def test_h148_names_that_cannot_be_file_names_are_never_matched(
        host: Host, github: GitHub) -> None:
    name = _gh_release(github, "1.0.0")
    odd = ["tool-../1.0.0-x86_64-linux.tar.gz", "tool-" + "a" * 300 + ".tar.gz"]
    github.set_releases([{"tag_name": "v1.0.0", "assets": [name, _sums(github, [name])],
                          "odd_assets": odd}])  # listed before the real asset
    _gh(host, github, checksums="SHA256SUMS$")
    r = _gh_once(host, "--once")
    assert r.returncode == 0, r.stderr
    assert host.current() == "1.0.0"


# -- 149: an unsigned size is capped; partial files of what is no longer wanted go --------------

def test_h149_an_announced_size_over_max_artifact_size_stops_before_the_download(
        host: Host, github: GitHub) -> None:
    name = _gh_release(github, "1.0.0")
    github.set_releases([{"tag_name": "v1.0.0", "assets": [name, _sums(github, [name])],
                          "announce": {name: 5 << 30}}])
    _gh(host, github, checksums="SHA256SUMS$")
    r = _gh_once(host, "--once")
    assert r.returncode == 1
    assert f"{name} announces {5 << 30} bytes, more than max_artifact_size (4GiB)" in r.stderr
    assert not [q for q in github.requests() if q["path"].startswith("/storage/")]
    _gh(host, github, checksums="SHA256SUMS$", max_artifact_size="8GiB")  # the operator's call
    r = _gh_once(host, "--once")
    assert r.returncode == 1 and "max_artifact_size" not in r.stderr
    assert [q for q in github.requests() if q["path"] == f"/storage/{name}"]


def test_h149_partial_files_no_longer_wanted_are_removed_at_the_next_check_and_start(
        host: Host, github: GitHub) -> None:
    cache = host.base / "cache" / "hello"
    for version in ("1.0.0", "1.1.0"):  # each announced 1 MiB longer than served: a .part
        name = _gh_release(github, version)
        size = (github.root / "assets" / name).stat().st_size
        github.set_releases([{"tag_name": f"v{version}",
                              "assets": [name, _sums(github, [name])],
                              "announce": {name: size + (1 << 20)}}])
        _gh(host, github, checksums="SHA256SUMS$")
        r = _gh_once(host, "--once")
        assert r.returncode == 1, r.stderr
        parts = sorted(p.name for p in cache.iterdir())
        assert parts == [f"{name}.part", f"{name}.part.json"], parts  # 1.0.0's are gone
    planted = cache / "tool-0.9.0-x86_64-linux.tar.gz.part"
    planted.write_bytes(b"x" * 1000)
    github.set_releases([])  # the next check fails: start (recovery) alone cleans
    _gh_once(host, "--once")
    assert sorted(p.name for p in cache.iterdir()) == \
        ["tool-1.1.0-x86_64-linux.tar.gz.part", "tool-1.1.0-x86_64-linux.tar.gz.part.json"]


# -- 150: releases never share writable inodes; an automatic rollback re-hashes first -----------

def test_h150_an_app_rewriting_its_own_file_changes_no_kept_release_and_rollback_rehashes(
        host: Host, nginx: Nginx, served_feed: Feed) -> None:
    from tests.test_delta_e2e import publish_cli
    rewrite = "printf REWRITTEN 1<>lib/part100.txt"  # in place: same inode, no truncation
    host.follow(nginx, served_feed,
                health_check=["sh", "-c", f"{rewrite}; ! bin/hello | grep -q 1.2.0"])
    publish_cli(served_feed, "1.0.0", "lib/part000.txt")
    assert run_updaterd("--config", host.config, "--once").returncode == 0
    kept = host.prefix / "releases" / "1.0.0" / "lib" / "part100.txt"
    # the health check of 1.0.0 rewrote 1.0.0's own file; put it back as installed
    original = subprocess.run(["tar", "-xzOf", str(served_feed.folder /
                                                  "hello-1.0.0-linux-x86_64.tar.gz"),
                               "hello-1.0.0/lib/part100.txt"], capture_output=True,
                              check=True).stdout
    kept.write_bytes(original)
    publish_cli(served_feed, "1.1.0", "lib/part150.txt")  # part100 unchanged: from the base
    r = run_updaterd("--config", host.config, "--once")
    assert r.returncode == 0 and host.current() == "1.1.0", r.stderr
    assert "as a delta" in r.stderr, r.stderr
    assert kept.read_bytes() == original, "the app's write reached the kept release"
    verify = run_updaterd("--config", host.config, "verify", "hello")
    assert "hello 1.0.0: intact" in verify.stdout, verify.stdout
    # 1.2.0 fails its check: 1.1.0 (the previous) was changed by its app since it was
    # installed, so the automatic rollback goes to the newest release that is as installed
    publish_cli(served_feed, "1.2.0", "lib/part151.txt")
    r = run_updaterd("--config", host.config, "--once")
    assert r.returncode == 1
    assert "1.1.0 on disk is not what was installed" in r.stderr, r.stderr
    assert host.current() == "1.0.0"


# -- 151: building from a delta uses bounded memory ---------------------------------------------

def test_h151_a_small_change_to_a_large_file_is_not_shipped_as_a_pack_that_needs_its_size(
        host: Host, nginx: Nginx, served_feed: Feed) -> None:
    import random

    from tests.helpers import make_tar
    big = random.Random(151).randbytes(40 << 20)
    peaks = []
    for version, data in (("1.0.0", big), ("1.1.0", big[:1000] + b"12345" + big[1005:])):
        files = {"bin/hello": (f'#!/bin/sh\necho "hello {version}"\n'.encode(), 0o755),
                 "lib/big.bin": (data, 0o644)}
        art = make_tar(served_feed.work / f"hello-{version}-linux-x86_64.tar.gz", files,
                       top=f"hello-{version}")
        r = run_updaterd("publish", "--feed", served_feed.folder, "--key", served_feed.key,
                         "--app", "hello", "--version", version, art)
        assert r.returncode == 0, r.stderr
        if version == "1.1.0":  # the publisher is told why there is no pack (it was not)
            assert "no delta pack from 1.0.0: hosts would need more than 2^" in r.stdout
        host.follow(nginx, served_feed)
        r, peak = _peak_rss_mib("--config", host.config, "--once")
        assert r.returncode == 0 and host.current() == version, r.stderr
        peaks.append(peak)
    # a pack would hold 40 MiB of reference in every host's memory: none is published
    assert not list(served_feed.folder.glob("*.delta*"))
    assert peaks[1] < peaks[0] + 64, peaks


def test_h151_a_pack_that_needs_a_large_window_is_not_used(
        host: Host, nginx: Nginx, served_feed: Feed, monkeypatch: pytest.MonkeyPatch) -> None:
    """An older (or careless) publisher's pack whose window is past the cap: the host fetches
    the archive instead of holding the window and reference in memory."""
    from tests.test_delta_e2e import publish_cli
    from updaterd.install import delta
    host.follow(nginx, served_feed)
    publish_cli(served_feed, "1.0.0", "lib/part000.txt")
    assert run_updaterd("--config", host.config, "--once").returncode == 0
    monkeypatch.setattr(delta, "MAX_USABLE_WINDOW_LOG", 31)
    monkeypatch.setattr(delta, "_window_log", lambda size: 27)  # as if 100 MiB were at stake
    art = served_feed.work / "hello-1.1.0-linux-x86_64.tar.gz"
    from tests.helpers import make_tar
    from tests.test_delta_e2e import app_files
    make_tar(art, app_files("1.1.0", "lib/part150.txt"), top="hello-1.1.0")
    served_feed.publish("1.1.0", [art], delta_from=1)
    monkeypatch.undo()
    assert list(served_feed.folder.glob("*.from-1.0.0.delta"))
    r = run_updaterd("--config", host.config, "--once")
    assert r.returncode == 0 and host.current() == "1.1.0", r.stderr
    assert "needs a window of 2^27 bytes, more than 2^24" in r.stderr, r.stderr


# -- 152: text from servers and apps is cleaned where it enters, escaped where it is printed ----

ESC_TAG = "v1.0.0\x1b]0;owned\x07\x1b[2J\r\u009b31m"


def test_h152_a_tag_with_terminal_escapes_never_reaches_the_terminal_raw(
        host: Host, github: GitHub, daemon: Daemon) -> None:
    name = _gh_release(github, "1.0.0")
    github.set_releases([{"tag_name": ESC_TAG, "assets": [name]}])
    _gh(host, github, asset=r"nothing-matches$", check_interval="1h", jitter="0s")
    daemon.env["GH_TEST_TOKEN"] = "ghp_T0KEN"
    daemon.start()
    daemon.wait_for(lambda: daemon.app()["last_error"], what="the first check")
    check = daemon.ctl("check", "hello")
    assert check.returncode == 1
    assert "no asset matches" in check.stderr, check.stderr
    status = daemon.ctl("status")
    shown = check.stdout + check.stderr + status.stdout + status.stderr
    for raw in ("\x1b", "\x07", "\r", "\u009b"):
        assert raw not in shown, repr(shown)
    assert "\\x1b]0;owned" in shown or "\\u001b]0;owned" in shown, shown
    stored = host.state()["last_error"]
    assert "\x1b" not in stored and "\\x1b]0;owned" in stored
    as_json = json.loads(daemon.ctl("--json", "status").stdout)  # still valid JSON
    assert "owned" in as_json["apps"][0]["last_error"]


def test_h152_an_over_size_reply_is_a_clear_error_not_a_traceback(
        host: Host, feed: Feed, daemon: Daemon) -> None:
    feed.release("1.0.0")
    _directory_app(host, feed)
    assert run_updaterd("--config", host.config, "--once").returncode == 0
    path = host.state_dir / "hello" / "state.json"
    st = json.loads(path.read_text())
    st["last_error"] = "x" * (5 << 20)  # a state written before the caps
    path.write_text(json.dumps(st))
    daemon.start()
    for args in (("status",), ("--json", "status"), ("history", "hello")):
        r = daemon.ctl(*args)
        assert "Traceback" not in r.stderr, r.stderr
        if args[-1] == "status":
            assert r.returncode == 1
            assert "updaterctl: updaterd's reply is larger than 4 MiB" in r.stderr, r.stderr


# -- 153: two apps never share a place ----------------------------------------------------------

@pytest.mark.parametrize(("a", "b", "how"), [
    ({"prefix": "{base}/opt/x"}, {"prefix": "{base}/opt/x"}, "is the same as"),
    ({"prefix": "{base}/opt/x"}, {"prefix": "{base}/opt/x/y"}, "is inside"),
    ({"install": "inplace", "target": "{base}/opt/x/releases/tool"}, {"prefix": "{base}/opt/x"},
     "contains"),
    ({"install": "inplace", "target": "{base}/bin/tool"},
     {"install": "inplace", "target": "{base}/bin/tool"}, "is the same as"),
    ({"prefix": "{base}/state/a"}, {"prefix": "{base}/opt/b"}, "is inside daemon.state_dir"),
], ids=["same prefix", "nested prefix", "target in a prefix", "same target", "prefix in state"])
def test_h153_two_apps_whose_places_overlap_or_nest_are_refused(
        host: Host, feed: Feed, a: dict[str, str], b: dict[str, str], how: str) -> None:
    from tests.helpers import write_config
    (host.base / "bin").mkdir()
    apps = {}
    for name, table in (("first", a), ("second", b)):
        apps[name] = {"source": "directory", "path": str(feed.folder),
                      "public_keys": [feed.pub], "health_check": [],
                      **{k: v.format(base=host.base) for k, v in table.items()}}
    write_config(host.config, host.daemon_table(), apps)
    r = run_updaterd("--config", host.config, "check-config")
    assert r.returncode == 2, r.stderr
    assert how in r.stderr and "every app needs a place of its own" in r.stderr, r.stderr
    r = run_updaterd("--config", host.config, "--once")
    assert r.returncode == 2


# -- 154: a client that does not read its replies is dropped -----------------------------------

HOARDER = """
import json, socket, sys, time
path, count = sys.argv[1], int(sys.argv[2])
line = (json.dumps({"jsonrpc": "2.0", "id": 1, "method": "status"}) + "\\n").encode() * 4000
held = []
for _ in range(count):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(path)
    s.setblocking(False)
    try:
        s.sendall(line)  # far more replies than the socket buffers hold; none is read
    except BlockingIOError:
        pass
    held.append(s)
print("holding", len(held), flush=True)
time.sleep(float(sys.argv[3]))
"""


def _nobody_connects(sock: Path) -> str:
    """One status request as nobody; the first line of the reply."""
    r = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                        "socat", "-t", "5", "-", f"UNIX-CONNECT:{sock}"],
                       input='{"jsonrpc":"2.0","id":1,"method":"status"}\n', text=True,
                       capture_output=True, timeout=20)
    return r.stdout.splitlines()[0] if r.stdout else r.stderr


def test_h154_a_client_that_never_reads_is_dropped_and_its_slots_freed(
        host: Host, feed: Feed, daemon: Daemon, public_dir: Path) -> None:
    feed.release("1.0.0")
    _directory_app(host, feed, limits={"client_send_timeout": "1s", "retries": 1})
    sock = host.open_socket_in(public_dir)
    daemon.socket = sock
    daemon.start()
    hoarder = subprocess.Popen(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                                "/usr/bin/python3", "-c", HOARDER, str(sock), "32", "30"],
                               stdout=subprocess.PIPE, text=True)
    try:
        assert hoarder.stdout is not None and hoarder.stdout.readline().startswith("holding 32")
        t0 = time.monotonic()
        daemon.status()
        assert time.monotonic() - t0 < 1, "root is served while every slot of nobody is held"
        time.sleep(3)  # past client_send_timeout: the hoarder's connections are dropped
        reply = _nobody_connects(sock)
        assert '"result"' in reply, f"nobody's slots are still held: {reply}"
    finally:
        hoarder.kill()
        hoarder.wait()
    assert "took no reply for 1s" in daemon.log.read_text()
