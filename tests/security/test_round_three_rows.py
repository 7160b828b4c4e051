"""Group H of the catalogue (rows 146-154): a hostile GitHub API or feed server without the
signing key, another local user, a buggy app and an operator's mistake, against the real
updaterd."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest

from tests.conftest import Daemon, GitHub, Host
from tests.helpers import Feed, app_script, run_updaterd
from tests.security.test_host_rows import _gh, _gh_once, _gh_release, _minisign, gh_key

__all__ = ["gh_key"]  # the fixture, shared with group G


def _signed_sums(gh: GitHub, key: Path, names: list[str], file_name: str) -> None:
    listing = subprocess.run(["sha256sum", *names], cwd=gh.root / "assets",
                             capture_output=True, text=True, check=True).stdout
    gh.add_asset(file_name, listing.encode())
    _minisign(gh, key, file_name)


# -- 146: no automatic downgrade through a tag that cannot be ordered ---------------------------

def test_h146_an_old_signed_release_under_a_non_semver_tag_is_not_installed(
        host: Host, github: GitHub, gh_key: tuple[Path, str]) -> None:
    key, pub = gh_key
    new = _gh_release(github, "1.5.0")
    _signed_sums(github, key, [new], "SHA256SUMS")
    github.set_releases([{"tag_name": "v1.5.0",
                          "assets": [new, "SHA256SUMS", "SHA256SUMS.minisig"]}])
    _gh(host, github, public_keys=[pub], checksums="SHA256SUMS$")
    r = _gh_once(host, "--once")
    assert r.returncode == 0 and host.current() == "1.5.0", r.stderr
    # the API, without the key, lists the genuine old 1.0.0 (its signed listing) as tool-1.0.0
    old = _gh_release(github, "1.0.0")
    _signed_sums(github, key, [old], "SHA256SUMS-old")
    github.set_releases([{"tag_name": "tool-1.0.0",
                          "assets": [old, "SHA256SUMS-old", "SHA256SUMS-old.minisig"]}])
    _gh(host, github, public_keys=[pub], checksums="SHA256SUMS-old$")
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
