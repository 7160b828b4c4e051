"""Row D96 of the catalogue: a bad or expired TLS certificate fails, with no insecure
fallback. nginx serves https on 127.0.0.1 with certificates this test makes: one from a CA
the client trusts (SSL_CERT_FILE), one expired, one for another name, one self-signed."""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import shutil
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.conftest import Host
from tests.helpers import BIN, Feed, run_updaterd
from tests.servers.nginx import Nginx, running_nginx
from updaterd.errors import DownloadError
from updaterd.host.config import Limits
from updaterd.net.fetcher import Fetcher

NOW = dt.datetime.now(dt.UTC)


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _cert(subject: str, key: ec.EllipticCurvePrivateKey, issuer: str,
          issuer_key: ec.EllipticCurvePrivateKey, *, ca: bool = False,
          san: x509.GeneralName | None = None, expired: bool = False) -> x509.Certificate:
    start, end = (NOW - dt.timedelta(days=30), NOW - dt.timedelta(days=1)) if expired else \
        (NOW - dt.timedelta(days=1), NOW + dt.timedelta(days=30))
    b = (x509.CertificateBuilder().subject_name(_name(subject)).issuer_name(_name(issuer))
         .public_key(key.public_key()).serial_number(x509.random_serial_number())
         .not_valid_before(start).not_valid_after(end)
         .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
         # what every real CA writes, and what Python 3.13's strict verification (Debian 13)
         # requires: without them its own certificates are refused
         .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                        critical=False)
         .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
             issuer_key.public_key()), critical=False))
    if san is not None:
        b = b.add_extension(x509.SubjectAlternativeName([san]), critical=False)
    if ca:
        b = b.add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True,
                                          crl_sign=True, content_commitment=False,
                                          key_encipherment=False, data_encipherment=False,
                                          key_agreement=False, encipher_only=False,
                                          decipher_only=False), critical=True)
    return b.sign(issuer_key, hashes.SHA256())


def _write(folder: Path, name: str, cert: x509.Certificate,
           key: ec.EllipticCurvePrivateKey) -> tuple[Path, Path]:
    c, k = folder / f"{name}.pem", folder / f"{name}.key"
    c.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    k.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                    serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption()))
    return c, k


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Nginx, Path]]:
    folder = tmp_path_factory.mktemp("tls")
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _cert("updaterd test CA", ca_key, "updaterd test CA", ca_key, ca=True)
    (folder / "ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    loopback = x509.IPAddress(ipaddress.ip_address("127.0.0.1"))
    servers = {}
    for name, kw in {"good": {"san": loopback}, "expired": {"san": loopback, "expired": True},
                     "other-name": {"san": x509.DNSName("updates.example.com")}}.items():
        key = ec.generate_private_key(ec.SECP256R1())
        cert = _cert(name, key, "updaterd test CA", ca_key, **kw)  # type: ignore[arg-type]
        servers[name] = _write(folder, name, cert, key)
    own_key = ec.generate_private_key(ec.SECP256R1())
    servers["self-signed"] = _write(folder, "self-signed",
                                    _cert("self", own_key, "self", own_key, san=loopback),
                                    own_key)
    # a CDN that sends https clients on to plain http
    to_plain = ("location /to-plain/ { rewrite ^/to-plain/(.*)$ "
                "http://127.0.0.1:{plain_port}/$1 redirect; }")
    with running_nginx(folder / "nginx", tls=servers, tls_extra=to_plain) as nginx:
        (nginx.root / "m.json").write_text("{}")
        yield nginx, folder / "ca.pem"


def _fetch(url: str) -> bytes:
    async def go() -> bytes:
        fetcher = Fetcher(Limits(retries=2, backoff_base="10ms", backoff_cap="10ms"))
        try:
            return (await fetcher.fetch_small(url, max_bytes=100)).body
        finally:
            await fetcher.aclose()

    return trio.run(go)


def test_d96_trusted_certificate_works(tls: tuple[Nginx, Path],
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    nginx, ca = tls
    monkeypatch.setenv("SSL_CERT_FILE", str(ca))
    assert _fetch(nginx.tls_url("good", "m.json")) == b"{}"


@pytest.mark.parametrize("server, why", [
    ("expired", "certificate has expired"), ("other-name", "IP address mismatch"),
    ("self-signed", "self-signed certificate"),
])
def test_d96_bad_certificate_fails_without_fallback(tls: tuple[Nginx, Path],
                                                    monkeypatch: pytest.MonkeyPatch,
                                                    server: str, why: str) -> None:
    nginx, ca = tls
    monkeypatch.setenv("SSL_CERT_FILE", str(ca))
    before = len(nginx.requests())
    with pytest.raises(DownloadError, match="CERTIFICATE_VERIFY_FAILED") as e:
        _fetch(nginx.tls_url(server, "m.json"))
    assert why in str(e.value)
    assert "gave up" not in str(e.value), "a certificate failure is not retried"
    assert len(nginx.requests()) == before, "no request was ever sent, over https or http"


def test_d96_daemon_refuses_a_feed_behind_an_expired_certificate(
        tls: tuple[Nginx, Path], host: Host, tmp_path: Path) -> None:
    nginx, ca = tls
    feed = Feed(folder=nginx.root / "d96", work=tmp_path / "work")
    feed.release("1.0.0")
    host.configure(source="manifest", url=nginx.tls_url("expired", "d96/manifest.json"),
                   public_keys=[feed.pub])
    r = run_updaterd("--config", host.config, "--once", env={"SSL_CERT_FILE": str(ca)})
    assert r.returncode == 1 and "certificate has expired" in r.stderr
    assert "Traceback" not in r.stderr and host.current() is None
    host.configure(source="manifest", url=nginx.tls_url("good", "d96/manifest.json"),
                   public_keys=[feed.pub])
    r = run_updaterd("--config", host.config, "--once", env={"SSL_CERT_FILE": str(ca)})
    assert r.returncode == 0 and host.current() == "1.0.0", r.stderr


def test_d92_feed_check_refuses_the_redirect_to_plain_http_a_host_refuses(
        tls: tuple[Nginx, Path], host: Host, tmp_path: Path) -> None:
    """A CDN that sends https clients on to plain http: every host refuses the feed, so
    `feed check` must not call it good (it followed the redirect and said 0 problems)."""
    nginx, ca = tls
    feed = Feed(folder=nginx.root / "d92", work=tmp_path / "work")
    feed.release("1.0.0")
    env = {"SSL_CERT_FILE": str(ca)}
    good = run_updaterd("feed", "check", nginx.tls_url("good", "d92/"), "--public-key",
                        feed.pub, env=env)
    assert good.returncode == 0 and good.stdout.endswith("0 problems\n"), good.stderr
    url = nginx.tls_url("good", "to-plain/d92/")
    plain = f"http://127.0.0.1:{nginx.port}/d92/manifest.json"
    r = run_updaterd("feed", "check", url, "--public-key", feed.pub, env=env)
    assert r.returncode == 1 and r.stdout.endswith("1 problem\n"), (r.stdout, r.stderr)
    assert r.stderr == f"{url}manifest.json: refusing redirect from https to {plain}\n"
    host.configure(source="manifest", url=url + "manifest.json", public_keys=[feed.pub],
                   allow_insecure=True)
    r = run_updaterd("--config", host.config, "--once", env=env)
    assert r.returncode == 1 and f"refusing redirect from https to {plain}" in r.stderr, \
        r.stderr
    assert host.current() is None


def test_feed_check_trusts_a_ca_file_as_a_host_with_ca_file_does(
        tls: tuple[Nginx, Path], tmp_path: Path) -> None:
    """Issue 38: a feed behind a private CA could be checked only by setting SSL_CERT_FILE;
    `--ca-file` is a host's `ca_file`. A missing file names its URL once."""
    nginx, ca = tls
    feed = Feed(folder=nginx.root / "ca-file", work=tmp_path / "work")
    feed.release("1.0.0")
    url = nginx.tls_url("good", "ca-file/")
    env = _no_ssl_env()
    r = run_updaterd("feed", "check", url, "--public-key", feed.pub, env=env)
    assert r.returncode == 1 and "CERTIFICATE_VERIFY_FAILED" in r.stderr, r.stderr
    r = run_updaterd("feed", "check", url, "--public-key", feed.pub, "--ca-file", str(ca),
                     env=env)
    assert r.returncode == 0 and r.stdout.endswith("0 problems\n"), r.stdout + r.stderr
    (feed.folder / "hello-1.0.0-linux-x86_64.tar.gz").unlink()
    r = run_updaterd("feed", "check", url, "--public-key", feed.pub, "--ca-file", str(ca),
                     env=env)
    line = f"1.0.0 linux-x86_64: {url}hello-1.0.0-linux-x86_64.tar.gz: missing\n"
    assert r.returncode == 1 and r.stderr == line, r.stderr


# -- the host's trust store, and an app's own ca_file -------------------

def _no_ssl_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in ("SSL_CERT_FILE", "SSL_CERT_DIR",
                                                            "UPDATERD_FAILPOINTS")}


def test_a_ca_added_to_the_systems_store_is_trusted_with_no_setting(
        tls: tuple[Nginx, Path], host: Host, tmp_path: Path) -> None:
    """What `update-ca-certificates` does, seen by updaterd only: the system bundle with the
    private CA appended, at the path OpenSSL reads by default (bound over it in a private mount
    namespace, so the machine's own store is never touched). No SSL_CERT_* variable is set."""
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("needs root and unshare for a private mount namespace")
    nginx, ca = tls
    system = Path(ssl.get_default_verify_paths().cafile or "/etc/ssl/certs/ca-certificates.crt")
    if not system.is_file():
        pytest.skip(f"no system CA bundle at {system}")
    bundle = tmp_path / "ca-certificates.crt"
    bundle.write_bytes(system.read_bytes() + b"\n" + ca.read_bytes())
    feed = Feed(folder=nginx.root / "store", work=tmp_path / "work")
    feed.release("1.0.0")
    host.configure(source="manifest", url=nginx.tls_url("good", "store/manifest.json"),
                   public_keys=[feed.pub])
    once = [str(BIN / "updaterd"), "--config", str(host.config), "--once"]
    r = subprocess.run(once, env=_no_ssl_env(), capture_output=True, text=True, timeout=120)
    assert r.returncode == 1 and "CERTIFICATE_VERIFY_FAILED" in r.stderr, r.stderr
    r = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c",
                        'mount --bind "$1" "$2" && shift 2 && exec "$@"', "sh", str(bundle),
                        str(system), *once], env=_no_ssl_env(), capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0 and host.current() == "1.0.0", r.stderr


def test_an_apps_ca_file_is_trusted_for_its_connections_alone(
        tls: tuple[Nginx, Path], host: Host, tmp_path: Path) -> None:
    nginx, ca = tls
    feed = Feed(folder=nginx.root / "cafile", work=tmp_path / "work")
    feed.release("1.0.0")
    url = nginx.tls_url("good", "cafile/manifest.json")
    host.configure(source="manifest", url=url, public_keys=[feed.pub], ca_file=str(ca))
    r = run_updaterd("--config", host.config, "--once", env=_no_ssl_env())
    assert r.returncode == 0 and host.current() == "1.0.0", r.stderr
    # the app's bundle replaces the store: a server the store trusts is not trusted here
    feed.release("1.1.0")
    host.configure(source="manifest", url=nginx.tls_url("self-signed", "cafile/manifest.json"),
                   public_keys=[feed.pub], ca_file=str(ca))
    r = run_updaterd("--config", host.config, "--once", env={"SSL_CERT_FILE": str(ca)})
    assert r.returncode == 1 and "self-signed certificate" in r.stderr, r.stderr
    assert host.current() == "1.0.0"


@pytest.mark.parametrize(("value", "why"), [
    ("relative.pem", "must be an absolute path"), ("/nonexistent/ca.pem", "does not exist"),
    ("BAD", "is not a PEM bundle of CA certificates"),
    ("EMPTY", "is not a PEM bundle of CA certificates"), ("LEAF", "holds no CA certificate")])
def test_check_config_refuses_a_ca_file_tls_cannot_use(
        tls: tuple[Nginx, Path], host: Host, tmp_path: Path, value: str, why: str) -> None:
    bad = tmp_path / "bad.pem"
    bad.write_text("-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n")
    empty = tmp_path / "empty.pem"
    empty.write_text("# nothing here\n")
    leaf = tls[1].parent / "good.pem"  # a server's certificate, not a CA's
    path = {"BAD": str(bad), "EMPTY": str(empty), "LEAF": str(leaf)}.get(value, value)
    host.configure(source="manifest", url="https://updates.example.com/m.json",
                   public_keys=[], verify="skip", ca_file=path)
    r = run_updaterd("--config", host.config, "check-config")
    assert r.returncode != 0 and "apps.hello.ca_file" in r.stderr and why in r.stderr, r.stderr
