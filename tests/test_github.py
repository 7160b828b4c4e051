"""The GitHub Releases source, end to end: the real updaterd against a GitHub-like API on
127.0.0.1 whose asset downloads redirect to a second host (127.0.0.2); checksum files made by
the real sha256sum and b3sum, signatures by the real minisign."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import GitHub, Host
from tests.helpers import make_tar, release_files, run_updaterd

TOKEN = "ghp_s3cretTokenValue"
PATTERN = r"tool-.*-x86_64-linux\.tar\.gz$"


def artifact(gh: GitHub, version: str, suffix: str = "", healthy: bool = True) -> str:
    name = f"tool-{version}{suffix}-x86_64-linux.tar.gz"
    make_tar(gh.root / "assets" / name, release_files(version, healthy), top=f"tool-{version}")
    return name


def sums(gh: GitHub, tool: str, file_name: str, names: list[str], *flags: str) -> str:
    out = subprocess.run([tool, *flags, *names], cwd=gh.root / "assets", capture_output=True,
                         text=True, check=True).stdout
    gh.add_asset(file_name, out.encode())
    return file_name


def minisign_keys(tmp_path: Path) -> tuple[Path, str]:
    pub, key = tmp_path / "gh.pub", tmp_path / "gh.key"
    subprocess.run(["minisign", "-G", "-W", "-p", str(pub), "-s", str(key)], check=True,
                   capture_output=True)
    return key, pub.read_text().splitlines()[1]


def sign(gh: GitHub, key: Path, name: str) -> str:
    subprocess.run(["minisign", "-S", "-s", str(key), "-m", str(gh.root / "assets" / name)],
                   check=True, capture_output=True)
    return name + ".minisig"


def configure(host: Host, gh: GitHub, **kw: Any) -> None:
    table: dict[str, Any] = {"source": "github", "repo": "acme/tool", "api_url": gh.api_url,
                             "allow_insecure": True, "asset": PATTERN,
                             "checksums": r"SHA256SUMS$", "token_env": "GH_TEST_TOKEN"}
    table.update(kw)
    host.configure(**{k: v for k, v in table.items() if v is not None})


def once(host: Host) -> subprocess.CompletedProcess[str]:
    return run_updaterd("--config", host.config, "--once", env={"GH_TEST_TOKEN": TOKEN})


def installed_hello(host: Host) -> str:
    return subprocess.run([str(host.prefix / "bin" / "hello")], capture_output=True,
                          text=True).stdout.strip()


def test_latest_release_first_matching_asset_wins_and_token_stays_on_api_host(
        host: Host, github: GitHub) -> None:
    first = artifact(github, "1.0.0")
    second = artifact(github, "1.0.0", "-alt")  # also matches, but comes second
    checksum = sums(github, "sha256sum", "SHA256SUMS", [first, second])
    github.set_releases([{"tag_name": "v1.0.0", "assets": [first, second, checksum]}])
    configure(host, github)
    r = once(host)
    assert r.returncode == 0, r.stderr
    assert host.current() == "1.0.0" and installed_hello(host) == "hello 1.0.0"
    reqs = github.requests()
    api = [q for q in reqs if q["host"].startswith("127.0.0.1")]
    storage = [q for q in reqs if q["host"].startswith("127.0.0.2")]
    assert api and all(q["authorization"] == f"Bearer {TOKEN}" for q in api)
    assert storage and all(q["authorization"] is None for q in storage), \
        "the token must never reach the storage host"
    assert [q["path"] for q in storage] == [f"/storage/{checksum}", f"/storage/{first}"]
    assert all(q["accept"] == "application/octet-stream" for q in api
               if "/assets/" in q["path"])
    assert TOKEN not in r.stderr


@pytest.mark.parametrize(("tool", "file_name", "flags"), [
    ("sha256sum", "SHA256SUMS", []), ("sha256sum", "SHA256SUMS.txt", ["-b"]),
    ("b3sum", "B3SUMS", [])], ids=["sha256sum", "sha256sum-binary", "b3sum"])
def test_checksum_file_forms(host: Host, github: GitHub, tool: str, file_name: str,
                             flags: list[str]) -> None:
    name = artifact(github, "1.2.0")
    checksum = sums(github, tool, file_name, [name], *flags)
    if "-b" in flags:
        assert f" *{name}" in (github.root / "assets" / checksum).read_text()
    github.set_releases([{"tag_name": "v1.2.0", "assets": [name, checksum]}])
    configure(host, github, checksums=r"(SHA256SUMS(\.txt)?|B3SUMS)$")
    r = once(host)
    assert r.returncode == 0, r.stderr
    assert host.current() == "1.2.0"


def test_a18_asset_missing_from_checksum_file_is_refused(host: Host, github: GitHub) -> None:
    name = artifact(github, "1.0.0")
    other = artifact(github, "0.9.0")
    checksum = sums(github, "sha256sum", "SHA256SUMS", [other])
    github.set_releases([{"tag_name": "v1.0.0", "assets": [name, checksum]}])
    configure(host, github)
    r = once(host)
    assert r.returncode == 1 and f"{name} is not listed in SHA256SUMS" in r.stderr
    assert host.current() is None


def test_checksum_mismatch_is_refused_and_nothing_installed(host: Host,
                                                            github: GitHub) -> None:
    name = artifact(github, "1.0.0")
    checksum = sums(github, "sha256sum", "SHA256SUMS", [name])
    data = bytearray((github.root / "assets" / name).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (github.root / "assets" / name).write_bytes(bytes(data))
    github.set_releases([{"tag_name": "v1.0.0", "assets": [name, checksum]}])
    configure(host, github)
    r = once(host)
    assert r.returncode == 1 and "mismatch" in r.stderr
    assert host.current() is None
    assert not list((host.base / "cache" / "hello").iterdir())


def test_a18_keys_set_require_a_signature(host: Host, github: GitHub, tmp_path: Path) -> None:
    key, pub = minisign_keys(tmp_path)
    name = artifact(github, "1.0.0")
    checksum = sums(github, "sha256sum", "SHA256SUMS", [name])
    github.set_releases([{"tag_name": "v1.0.0", "assets": [name, checksum]}])
    configure(host, github, public_keys=[pub])
    r = once(host)
    assert r.returncode == 1 and "neither a signed checksum file" in r.stderr
    sig = sign(github, key, checksum)
    github.set_releases([{"tag_name": "v1.0.0", "assets": [name, checksum, sig]}])
    r = once(host)
    assert r.returncode == 0, r.stderr
    assert host.current() == "1.0.0"


def test_signed_checksum_file_with_a_bad_signature_is_refused(host: Host, github: GitHub,
                                                             tmp_path: Path) -> None:
    key, pub = minisign_keys(tmp_path)
    name = artifact(github, "1.0.0")
    checksum = sums(github, "sha256sum", "SHA256SUMS", [name])
    sig = sign(github, key, checksum)
    path = github.root / "assets" / checksum
    path.write_text(path.read_text() + "\n")  # changed after signing
    github.set_releases([{"tag_name": "v1.0.0", "assets": [name, checksum, sig]}])
    configure(host, github, public_keys=[pub])
    r = once(host)
    assert r.returncode == 1 and "SHA256SUMS: signature refused" in r.stderr


def test_asset_signature_alone_verifies_the_download(host: Host, github: GitHub,
                                                     tmp_path: Path) -> None:
    key, pub = minisign_keys(tmp_path)
    name = artifact(github, "1.0.0")
    sig = sign(github, key, name)
    github.set_releases([{"tag_name": "v1.0.0", "assets": [name, sig]}])
    configure(host, github, public_keys=[pub], checksums=None, signature="{asset}.minisig")
    r = once(host)
    assert r.returncode == 0, r.stderr
    assert host.current() == "1.0.0"
    # a second release whose signature was made for other bytes is refused after download
    bad = artifact(github, "1.1.0")
    other = artifact(github, "1.1.0", "-other")
    sign(github, key, other)
    (github.root / "assets" / f"{bad}.minisig").write_bytes(
        (github.root / "assets" / f"{other}.minisig").read_bytes())
    github.set_releases([{"tag_name": "v1.1.0", "assets": [bad, f"{bad}.minisig"]}])
    r = once(host)
    assert r.returncode == 1 and "signature refused" in r.stderr
    assert host.current() == "1.0.0"


def test_without_checksums_or_signature_the_update_is_refused(host: Host,
                                                              github: GitHub) -> None:
    name = artifact(github, "1.0.0")
    github.set_releases([{"tag_name": "v1.0.0", "assets": [name]}])
    configure(host, github, checksums=None)
    r = once(host)
    assert r.returncode == 1 and "configure checksums" in r.stderr
    assert host.current() is None


def test_no_matching_asset_names_release_and_pattern(host: Host, github: GitHub) -> None:
    github.add_asset("tool-1.0.0-aarch64-linux.tar.gz", b"x")
    github.set_releases([{"tag_name": "v1.0.0", "assets": ["tool-1.0.0-aarch64-linux.tar.gz"]}])
    configure(host, github)
    r = once(host)
    assert r.returncode == 1
    assert f"acme/tool v1.0.0: no asset matches {PATTERN!r}" in r.stderr


def test_a22_prerelease_and_draft_handling(host: Host, github: GitHub) -> None:
    rc = artifact(github, "2.0.0-rc.1")
    stable = artifact(github, "1.0.0")
    draft = artifact(github, "3.0.0")
    checksum = sums(github, "sha256sum", "SHA256SUMS", [rc, stable, draft])
    github.set_releases([
        {"tag_name": "v3.0.0", "draft": True, "assets": [draft, checksum]},
        {"tag_name": "v2.0.0-rc.1", "prerelease": True, "assets": [rc, checksum]},
        {"tag_name": "v1.0.0", "assets": [stable, checksum]}])
    configure(host, github)
    assert once(host).returncode == 0
    assert host.current() == "1.0.0", "prereleases are ignored by default"
    configure(host, github, prerelease=True)
    r = once(host)
    assert r.returncode == 0, r.stderr
    assert host.current() == "2.0.0-rc.1", "the newest non-draft release, prereleases included"


def test_not_modified_downloads_nothing(host: Host, github: GitHub) -> None:
    name = artifact(github, "1.0.0")
    checksum = sums(github, "sha256sum", "SHA256SUMS", [name])
    github.set_releases([{"tag_name": "v1.0.0", "assets": [name, checksum]}])
    configure(host, github)
    assert once(host).returncode == 0
    mark = len(github.requests())
    r = once(host)
    assert r.returncode == 0, r.stderr
    later = github.requests()[mark:]
    assert [q["status"] for q in later if q["path"].endswith("/releases/latest")] == [304]
    assert not [q for q in later if q["host"].startswith("127.0.0.2")], "no asset downloaded"


def test_d99_rate_limit_is_honoured_until_reset(host: Host, github: GitHub) -> None:
    name = artifact(github, "1.0.0")
    checksum = sums(github, "sha256sum", "SHA256SUMS", [name])
    # the reset 5 s ahead: the second run below must start before it, even on a loaded machine
    github.set_releases([{"tag_name": "v1.0.0", "assets": [name, checksum]}], rate_limited=1,
                        reset_at=int(time.time()) + 5)
    configure(host, github)
    r = once(host)  # a warning, exit 0: the next run asks again (updaterd(8), EXIT STATUS)
    assert r.returncode == 0 and "rate limited (HTTP 403)" in r.stderr
    state = host.state()
    assert state["rate_limited_until"] > time.time()
    assert "no request until" in state["last_error"]
    mark = len(github.requests())
    r = once(host)
    assert r.returncode == 0 and "no request until" in r.stderr
    assert host.current() is None
    assert len(github.requests()) == mark, "no request while rate limited"
    time.sleep(max(state["rate_limited_until"] - time.time(), 0) + 0.2)
    r = once(host)
    assert r.returncode == 0, r.stderr
    assert host.current() == "1.0.0" and host.state()["rate_limited_until"] is None


def test_github_enterprise_api_prefix(host: Host, github: GitHub) -> None:
    name = artifact(github, "1.0.0")
    checksum = sums(github, "sha256sum", "SHA256SUMS", [name])
    github.set_releases([{"tag_name": "v1.0.0", "assets": [name, checksum]}])
    configure(host, github, api_url=github.api_url + "/api/v3")
    r = once(host)
    assert r.returncode == 0, r.stderr
    api = [q["path"] for q in github.requests() if q["host"].startswith("127.0.0.1")]
    assert api and all(p.startswith("/api/v3/repos/acme/tool/") for p in api)


def test_non_semver_tag_is_installed_only_on_purpose(host: Host, github: GitHub) -> None:
    name = "tool-nightly-42-x86_64-linux.tar.gz"
    make_tar(github.root / "assets" / name, release_files("nightly-42"), top="tool")
    checksum = sums(github, "sha256sum", "SHA256SUMS", [name])
    github.set_releases([{"tag_name": "nightly-42", "assets": [name, checksum]}])
    configure(host, github)
    r = once(host)
    assert r.returncode == 0, r.stderr
    assert host.current() is None
    assert "nightly-42" in host.state()["passed_over"]
    r = run_updaterd("--config", host.config, "update", "hello", "--version", "nightly-42",
                     env={"GH_TEST_TOKEN": TOKEN})
    assert r.returncode == 0, r.stderr
    assert host.current() == "nightly-42"
    r = once(host)
    assert "up to date at nightly-42" in r.stderr


def test_config_requires_asset_and_a_single_token_source(tmp_path: Path) -> None:
    cfg = tmp_path / "u.toml"
    cfg.write_text('[apps.t]\nsource = "github"\nrepo = "a/b"\nprefix = "/opt/t"\n'
                   'token_env = "X"\ntoken_file = "/y"\nsignature = "sig"\n')
    r = run_updaterd("--config", cfg, "check-config")
    assert r.returncode == 2
    assert "apps.t.asset: required" in r.stderr
    assert "apps.t.token_file: set token_env or token_file, not both" in r.stderr
    assert "apps.t.signature: must contain {asset}" in r.stderr
    assert json.dumps  # (json used by fixtures)
