"""updaterd's Debian package on a stock Debian 12 and a stock Debian 13, each package built on
its own release (README: Install as a service): installed with apt
on the system's own python3, it fetches a tar.gz and a tar.zst release over HTTPS from nginx
with a private CA added the Debian way (update-ca-certificates), `man` and `updaterctl <TAB>`
work, an upgrade keeps the configuration and the apps, `apt remove` keeps the configuration and
the state and `apt purge` removes them, never the apps.

Run by `make test-systemd` (UPDATERD_TEST_SYSTEMD=1), like the units' tests beside it.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tests.helpers import Feed, write_config
from tests.security.test_tls_rows import _cert, _write
from tests.servers.nginx import Nginx, running_nginx
from tests.systemd.container import (
    Container,
    booted,
    build_package_on,
    install_package,
    journal,
    wait_until,
)

pytestmark = pytest.mark.skipif(os.environ.get("UPDATERD_TEST_SYSTEMD") != "1",
                                reason="`make test-systemd` runs these (systemd-nspawn)")


@pytest.fixture(scope="module", params=["bookworm", "trixie"])
def suite(request: pytest.FixtureRequest) -> str:
    """Debian 12 and Debian 13, each as it ships: every test below runs on both."""
    return str(request.param)


@pytest.fixture(scope="module")
def package(suite: str, request: pytest.FixtureRequest,
            tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The package for that release: on Debian 12 this host's `make deb`; for Debian 13 the same
    build on a stock Debian 13 (its python3 is 3.13)."""
    if suite == "bookworm":  # this host's release
        return Path(request.getfixturevalue("deb"))
    return build_package_on(suite, tmp_path_factory.mktemp(f"deb-{suite}"))


@pytest.fixture(scope="module")
def box(tmp_path_factory: pytest.TempPathFactory, suite: str,
        package: Path) -> Iterator[Container]:
    with booted(tmp_path_factory.mktemp(f"nspawn-package-{suite}"), suite) as c:
        install_package(c, package)
        yield c


@pytest.fixture(scope="module")
def https(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Nginx, Path]]:
    """nginx on 127.0.0.1 (the container shares the host's network) with a certificate from
    a private CA that neither the host nor the container trusts."""
    folder = tmp_path_factory.mktemp("private-ca")
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _cert("updaterd package test CA", ca_key, "updaterd package test CA", ca_key, ca=True)
    (folder / "ca.crt").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = _cert("feeds", key, "updaterd package test CA", ca_key,
                 san=x509.IPAddress(ipaddress.ip_address("127.0.0.1")))
    with running_nginx(folder / "nginx", tls={"feeds": _write(folder, "feeds", cert, key)}) \
            as nginx:
        yield nginx, folder / "ca.crt"


def _configure(box: Container, url: str, pub: str) -> None:
    path = box.root / "etc" / "updaterd" / "updaterd.toml"
    write_config(path, {"state_dir": "/var/lib/updaterd", "cache_dir": "/var/cache/updaterd",
                        "platform": "linux-x86_64"},
                 {"hello": {"source": "manifest", "url": url, "public_keys": [pub],
                            "prefix": "/opt/hello", "health_check": ["bin/hello"],
                            "check_interval": "1h", "jitter": "0s"}})
    path.chmod(0o644)


def test_a_tar_gz_then_a_tar_zst_over_https_with_a_ca_added_the_debian_way(
        box: Container, suite: str, https: tuple[Nginx, Path], tmp_path: Path) -> None:
    nginx, ca = https
    feed = Feed(folder=nginx.root / f"feed-{suite}", work=tmp_path / "work")
    feed.release("1.0.0", fmt="tar.gz")
    _configure(box, nginx.tls_url("feeds", f"feed-{suite}/manifest.json"), feed.pub)
    box.sh("systemctl reload updaterd")
    wait_until(box, "updaterctl status hello | grep -q CERTIFICATE_VERIFY_FAILED",
               "the refusal of a CA nobody trusts yet", 30)
    (box.root / "usr/local/share/ca-certificates/updaterd-test.crt").write_bytes(
        ca.read_bytes())
    box.sh("update-ca-certificates")  # no updaterd setting, no restart
    box.sh("updaterctl check hello && updaterctl update hello", timeout=120)
    assert (box.root / "opt/hello/current").resolve().name == "1.0.0"
    feed.release("1.1.0", fmt="tar.zst")
    out = box.sh("updaterctl update hello", timeout=120).stdout
    assert "installed 1.1.0 (was 1.0.0)" in out, out
    assert box.sh("/opt/hello/bin/hello").stdout.strip() == "hello 1.1.0"
    assert "data_filter" not in journal(box, "updaterd")


def test_man_pages_and_the_completion_work(box: Container) -> None:
    for page, words in (("updaterd", "feed yank"), ("updaterctl", "list-backups"),
                        ("updaterd.toml", "ca_file")):
        out = box.sh(f"MANWIDTH=100 man -P cat {page}").stdout
        assert words in out, (page, out[:500])
    # what bash does at `updaterctl <TAB>` and `updaterctl update <TAB>` (names from the daemon)
    complete = ("source /usr/share/bash-completion/bash_completion; "
                "_completion_loader updaterctl; fn=$(complete -p updaterctl | "
                "sed -n 's/.*-F \\([^ ]*\\) .*/\\1/p'); COMP_WORDS=({words}); "
                "COMP_CWORD=$((${{#COMP_WORDS[@]}} - 1)); COMP_LINE=\"${{COMP_WORDS[*]}}\"; "
                "COMP_POINT=${{#COMP_LINE}}; $fn updaterctl \"${{COMP_WORDS[-1]}}\" "
                "\"${{COMP_WORDS[-2]}}\"; printf '%s\\n' \"${{COMPREPLY[@]}}\"")
    commands = box.sh(complete.format(words='updaterctl ""'), check=True).stdout.split()
    assert {"status", "update", "rollback", "list-backups"} <= set(commands), commands
    apps = box.sh(complete.format(words='updaterctl update ""')).stdout.split()
    assert apps == ["hello"], apps


def _repacked(deb: Path, version: str, into: Path) -> Path:
    """The same package under a newer version: what an upgrade looks like to apt and dpkg."""
    tree = into / "tree"
    subprocess.run(["dpkg-deb", "-R", str(deb), str(tree)], check=True)
    control = tree / "DEBIAN" / "control"
    text = control.read_text()
    old = next(line for line in text.splitlines() if line.startswith("Version: "))
    control.write_text(text.replace(old, f"Version: {version}"))
    out = into / f"updaterd_{version}_{deb.name.rsplit('_', 1)[-1]}"
    subprocess.run(["dpkg-deb", "--root-owner-group", "-b", str(tree), str(out)], check=True,
                   capture_output=True)
    return out


def test_an_upgrade_keeps_the_configuration_and_the_apps_and_restarts_the_daemon(
        box: Container, package: Path, tmp_path: Path) -> None:
    config = box.root / "etc/updaterd/updaterd.toml"
    before = hashlib.sha256(config.read_bytes()).hexdigest()
    pid = box.sh("systemctl show updaterd -p MainPID --value").stdout.strip()
    install_package(box, _repacked(package, "99.0.0", tmp_path))
    assert "99.0.0" in box.sh("dpkg-query -W -f '${Version}' updaterd").stdout
    assert box.sh("systemctl is-active updaterd").stdout.strip() == "active"
    assert box.sh("systemctl show updaterd -p MainPID --value").stdout.strip() != pid
    assert hashlib.sha256(config.read_bytes()).hexdigest() == before
    assert (box.root / "opt/hello/current").resolve().name == "1.1.0"
    wait_until(box, "updaterctl status hello | grep -q '1.1.0'", "the app, as it was")


def test_remove_keeps_the_configuration_and_state_and_purge_removes_them_not_the_apps(
        box: Container) -> None:
    box.sh("DEBIAN_FRONTEND=noninteractive apt-get remove -y -q updaterd", timeout=120)
    assert box.sh("systemctl is-active updaterd", check=False).stdout.strip() == "inactive"
    assert not (box.root / "usr/bin/updaterd").exists()
    assert (box.root / "etc/updaterd/updaterd.toml").is_file()
    assert (box.root / "var/lib/updaterd/hello/state.json").is_file()
    assert box.sh("/opt/hello/bin/hello").stdout.strip() == "hello 1.1.0"
    box.sh("DEBIAN_FRONTEND=noninteractive apt-get purge -y -q updaterd", timeout=120)
    for gone in ("etc/updaterd", "var/lib/updaterd", "var/cache/updaterd", "usr/lib/updaterd"):
        assert not (box.root / gone).exists(), gone
    assert box.sh("/opt/hello/bin/hello").stdout.strip() == "hello 1.1.0"
    assert "updaterd" not in box.sh("systemctl list-unit-files 'updaterd*' --no-legend",
                                    check=False).stdout


def test_lintian_finds_nothing_but_what_the_overrides_explain(package: Path) -> None:
    r = subprocess.run(["lintian", "--fail-on", "warning", "--tag-display-limit", "0",
                        str(package)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    tags = [line for line in r.stdout.splitlines() if line[:2] in ("E:", "W:", "I:")]
    assert tags == [], tags
