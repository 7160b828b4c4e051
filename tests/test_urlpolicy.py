"""The URL policy, rule by rule and at its edges (fast, in-process; `make mutate` runs these
against mutants of urlpolicy.py)."""

from __future__ import annotations

import ipaddress

import pytest

from updaterd.errors import DownloadError
from updaterd.trust import urlpolicy


def refused(url: str, allow_insecure: bool = False,
            allowed_hosts: list[str] | None = None) -> str:
    with pytest.raises(DownloadError) as e:
        urlpolicy.require_allowed(url, allow_insecure, allowed_hosts)
    return str(e.value)


@pytest.mark.parametrize("url", ["https://updates.example.com/feed.json",
                                 "https://UPDATES.example.com./feed.json",
                                 "https://[2001:db8::1]:8443/feed.json",
                                 "https://93.184.216.34/feed.json"])
def test_ordinary_https_urls_pass(url: str) -> None:
    urlpolicy.require_allowed(url, allow_insecure=False)


@pytest.mark.parametrize("bad", ["\r", "\n", "\0", " "])
def test_control_characters_and_spaces_are_refused(bad: str) -> None:
    assert "control characters or spaces" in refused(f"https://a.example/x{bad}y")


@pytest.mark.parametrize("url", ["ftp://a.example/x", "file:///etc/passwd", "gopher://a/",
                                 "HTTPS-not://a/"])
def test_other_schemes_are_refused(url: str) -> None:
    assert "only https:// is allowed" in refused(url, allow_insecure=True)


@pytest.mark.parametrize("url", ["https:///feed.json", "https://:443/feed.json"])
def test_a_url_without_a_host_is_refused(url: str) -> None:
    assert refused(url).endswith(": no host")


@pytest.mark.parametrize("userinfo", ["user@", "user:secret@", ":secret@"])
def test_credentials_in_the_url_are_refused_and_not_repeated(userinfo: str) -> None:
    msg = refused(f"https://{userinfo}a.example/x")
    assert "credentials in the URL" in msg and "secret" not in msg


def test_plain_http_needs_both_loopback_and_allow_insecure() -> None:
    urlpolicy.require_allowed("http://127.0.0.1:8080/x", allow_insecure=True)
    urlpolicy.require_allowed("http://localhost/x", allow_insecure=True)
    urlpolicy.require_allowed("http://[::1]/x", allow_insecure=True)
    for url, insecure in (("http://127.0.0.1/x", False), ("http://localhost/x", False),
                          ("http://a.example/x", True), ("http://10.0.0.1/x", True)):
        assert "plain http:// is allowed only to loopback" in refused(url, insecure), url


def test_https_to_loopback_needs_no_allow_insecure() -> None:
    urlpolicy.require_allowed("https://127.0.0.1/x", allow_insecure=False)


@pytest.mark.parametrize("host", ["169.254.169.254", "2852039166", "0xa9fea9fe",
                                  "0251.0376.0251.0376", "169.254.43518", "[fe80::1]",
                                  "[::ffff:169.254.169.254]", "[64:ff9b::a9fe:a9fe]",
                                  "[2002:a9fe:a9fe::1]", "[::a9fe:a9fe]", "[fd00:ec2::254]",
                                  "[fd00:ec2::ffff:ffff:ffff:ffff]"])
def test_link_local_and_metadata_addresses_in_every_spelling(host: str) -> None:
    assert "link-local or cloud metadata address" in refused(f"https://{host}/x")


@pytest.mark.parametrize("host", ["[fd00:ec2:0:1::254]", "[fd00:ec3::254]", "169.253.255.255",
                                  "169.255.0.1", "[fe7f::1]", "[64:ff9b::808:808]",
                                  "[::1:a9fe:a9fe]"])
def test_addresses_just_outside_the_forbidden_ranges_pass(host: str) -> None:
    urlpolicy.require_allowed(f"https://{host}/x", allow_insecure=False)


@pytest.mark.parametrize("host", ["0.0.0.0", "[::]", "[::ffff:0.0.0.0]", "0"])
def test_unspecified_addresses_are_refused(host: str) -> None:
    assert "unspecified address" in refused(f"https://{host}/x")


@pytest.mark.parametrize("host", ["metadata.google.internal", "METADATA", "instance-data.",
                                  "metadata.azure.internal"])
def test_metadata_host_names_are_refused(host: str) -> None:
    assert "cloud metadata host" in refused(f"https://{host}/x")


def test_allowed_hosts_limit_every_url_and_compare_as_names_do() -> None:
    urlpolicy.require_allowed("https://CDN.example.net./a", False, ["cdn.example.net"])
    urlpolicy.require_allowed("https://cdn.example.net/a", False, ["CDN.Example.NET."])
    msg = refused("https://evil.example/a", allowed_hosts=["b.example", "a.example"])
    assert "evil.example is not in this app's allowed_hosts (a.example, b.example)" in msg
    assert "not in this app's allowed_hosts" in refused("https://x.example/", allowed_hosts=[])
    urlpolicy.require_allowed("https://x.example/", False, None)


@pytest.mark.parametrize(("text", "address"), [
    ("2852039166", "169.254.169.254"), ("0xa9fea9fe", "169.254.169.254"),
    ("0251.0376.0251.0376", "169.254.169.254"), ("169.254.43518", "169.254.169.254"),
    ("127.1", "127.0.0.1"), ("[::1]", "::1"), ("LOCALHOST.", None), ("a.example", None),
    ("", None), ("1.2.3.4.5", None), ("0x", None), ("fe80::zz", None),
    ("deadbeef.example", None), ("abc", None)])
def test_parse_ip_reads_hosts_as_the_resolver_does(text: str, address: str | None) -> None:
    ip = urlpolicy.parse_ip(text)
    assert (None if ip is None else str(ip)) == address


@pytest.mark.parametrize(("host", "loopback"), [
    ("127.0.0.1", True), ("127.255.0.9", True), ("[::1]", True), ("::ffff:127.0.0.1", True),
    ("2130706433", True), ("localhost", True), ("LocalHost.", True), ("localhost.example", False),
    ("10.0.0.1", False), ("::2", False), ("a.example", False), ("::ffff:10.0.0.1", False)])
def test_is_loopback(host: str, loopback: bool) -> None:
    assert urlpolicy.is_loopback(host) is loopback


def test_embedded_ipv4_forms() -> None:
    v6 = ipaddress.IPv6Address
    assert str(urlpolicy._embedded_v4(v6("::ffff:1.2.3.4"))) == "1.2.3.4"
    assert str(urlpolicy._embedded_v4(v6("2002:102:304::"))) == "1.2.3.4"
    assert str(urlpolicy._embedded_v4(v6("64:ff9b::102:304"))) == "1.2.3.4"
    assert str(urlpolicy._embedded_v4(v6("::1.2.3.4"))) == "1.2.3.4"
    assert str(urlpolicy._embedded_v4(v6("::1.2.3.5"))) == "1.2.3.5"
    assert urlpolicy._embedded_v4(v6("::1:102:304")) is None  # above the IPv4 range
    assert str(urlpolicy._embedded_v4(v6("::2"))) == "0.0.0.2"
    assert urlpolicy._embedded_v4(v6("::1")) is None  # loopback, not an IPv4 address
    assert urlpolicy._embedded_v4(v6("::")) is None
    assert urlpolicy._embedded_v4(v6("1::1.2.3.4")) is None
    assert urlpolicy._embedded_v4(ipaddress.IPv4Address("1.2.3.4")) is None


def test_forbidden_address_reasons() -> None:
    ip = ipaddress.ip_address
    assert urlpolicy.forbidden_address(ip("1.2.3.4")) is None
    assert urlpolicy.forbidden_address(ip("2001:db8::1")) is None
    assert urlpolicy.forbidden_address(ip("::ffff:0.0.0.0")) == "unspecified address"
    assert urlpolicy.forbidden_address(ip("0.0.0.0")) == "unspecified address"
    assert urlpolicy.forbidden_address(ip("169.254.0.1")) == \
        "link-local or cloud metadata address"


@pytest.mark.parametrize(("url", "expected"), [
    ("https://A.example./x", ("https", "a.example", 443)),
    ("http://a.example/x", ("http", "a.example", 80)),
    ("https://a.example:8443/x", ("https", "a.example", 8443)),
    ("https://a.example:99999/x", ("https", "a.example", 443)),
    ("ftp://a.example/x", ("ftp", "a.example", None)),
    ("https://[::1]:444/", ("https", "::1", 444))])
def test_origin_fills_in_the_default_port(url: str, expected: tuple[str, str, int]) -> None:
    assert urlpolicy.origin(url) == expected


@pytest.mark.parametrize(("url", "location", "expected"), [
    ("https://a.example/f/m.json", "/g/m.json", "https://a.example/g/m.json"),
    ("https://a.example/f/m.json", "n.json", "https://a.example/f/n.json"),
    ("https://a.example/f/m.json", "https://b.example/m.json", "https://b.example/m.json"),
    ("http://127.0.0.1:8/m.json", "http://127.0.0.2:8/m.json", "http://127.0.0.2:8/m.json"),
    ("http://127.0.0.1:8/m.json", "https://b.example/m.json", "https://b.example/m.json")])
def test_redirect_target_joins_the_location(url: str, location: str, expected: str) -> None:
    assert urlpolicy.redirect_target(url, location) == expected


@pytest.mark.parametrize(("location", "why"), [
    ("", "redirect with a bad Location header"),
    ("/x\r\nSet-Cookie: a=b", "redirect with a bad Location header"),
    ("/x\nmore", "redirect with a bad Location header"),
    ("http://a.example/m.json", "refusing redirect from https to http://a.example/m.json"),
    ("ftp://a.example/m.json", "refusing redirect from https to ftp://a.example/m.json"),
    ("wss://a.example/m.json", "refusing redirect from https to wss://a.example/m.json"),
    ("//a.example/m.json", None)])
def test_redirect_target_refuses_a_bad_location_and_a_step_down(location: str,
                                                                  why: str | None) -> None:
    url = "https://a.example/f/m.json"
    if why is None:  # scheme-relative: stays on https
        assert urlpolicy.redirect_target(url, location) == "https://a.example/m.json"
        return
    with pytest.raises(DownloadError) as e:
        urlpolicy.redirect_target(url, location)
    assert str(e.value) == f"{url}: {why}"


def test_redirect_target_leaves_other_schemes_to_require_allowed() -> None:
    """Only a step down from https is refused here; any other scheme (where it goes, where
    it came from) is `require_allowed`'s to refuse, before the target is fetched."""
    assert urlpolicy.redirect_target("wss://a.example/x", "ftp://b.example/y") == \
        "ftp://b.example/y"
    assert urlpolicy.redirect_target("http://127.0.0.1/x", "ftp://b.example/y") == \
        "ftp://b.example/y"


def test_the_redirects_followed_are_the_five_that_carry_a_location() -> None:
    """300 (a choice for a person to make) and 304 (not modified: the cached copy is the
    answer) are not followed; nor is any other status."""
    assert sorted(urlpolicy.REDIRECT_STATUS) == [301, 302, 303, 307, 308]
