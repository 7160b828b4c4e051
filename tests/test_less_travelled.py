"""The less-travelled paths (issue 19): archive layouts, in-place owners and backups, GitHub
without a token, `--once` from a timer, history and messages. Each reproduces an operator's
report against the real updaterd."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from tests.conftest import Host
from tests.helpers import Feed, make_tar, run_updaterd


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
