"""Group H of the catalogue (rows 146-154): a hostile GitHub API or feed server without the
signing key, another local user, a buggy app and an operator's mistake, against the real
updaterd."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.conftest import GitHub, Host
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
