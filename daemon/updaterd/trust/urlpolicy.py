"""Which URLs and addresses updaterd may fetch from: https, plain http only to loopback when
allowed, never link-local or cloud metadata addresses, never userinfo, and only the hosts of an
app's allow-list when it has one. Pure: no resolution, no I/O.

Hosts are read the way the resolver reads them (catalogue G138): `2852039166`,
`0xa9fea9fe`, `0251.0376.0251.0376` and `169.254.43518` are all 169.254.169.254 to
inet_aton(3), IPv6 can carry an IPv4 address (`::ffff:a.b.c.d`, NAT64 `64:ff9b::/96`, 6to4),
and `name.` is `name`. The address a connection actually reaches is checked again by
`netguard` after resolution, since a name can resolve anywhere.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Collection
from urllib.parse import urljoin, urlsplit

from updaterd.errors import DownloadError

METADATA_HOSTS = frozenset({"metadata.google.internal", "metadata", "instance-data",
                            "metadata.azure.internal"})
_METADATA_V6 = ipaddress.ip_network("fd00:ec2::/64")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
IP = ipaddress.IPv4Address | ipaddress.IPv6Address


def normal_host(host: str) -> str:
    """Lower case, without brackets and trailing dots: how names compare."""
    return host.strip("[]").lower().rstrip(".")


def parse_ip(host: str) -> IP | None:
    """The address a host name stands for without any lookup, in every spelling the resolver
    accepts (decimal, octal, hex and short IPv4 forms); None for a real name."""
    host = normal_host(host)
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    if ":" in host or not host or not all(c in "0123456789abcdefx." for c in host):
        return None
    try:
        return ipaddress.IPv4Address(socket.inet_aton(host))
    except OSError:
        return None


def _embedded_v4(ip: IP) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one carries (mapped, NAT64, 6to4, compatible), if any."""
    if not isinstance(ip, ipaddress.IPv6Address):
        return None
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip in _NAT64 or (int(ip) >> 32 == 0 and int(ip) > 1):  # 64:ff9b::/96, ::a.b.c.d
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def forbidden_address(ip: IP) -> str | None:
    """Why a connection to `ip` is never made (link-local, cloud metadata, unspecified)."""
    for candidate in (ip, _embedded_v4(ip)):
        if candidate is None:
            continue
        if candidate.is_link_local or candidate in _METADATA_V6:
            return "link-local or cloud metadata address"
        if candidate.is_unspecified:
            return "unspecified address"
    return None


def is_loopback(host: str) -> bool:
    ip = parse_ip(host)
    if ip is not None:
        embedded = _embedded_v4(ip)
        return ip.is_loopback or (embedded is not None and embedded.is_loopback)
    return normal_host(host) == "localhost"


REDIRECT_STATUS = frozenset({301, 302, 303, 307, 308})

HTTP_RULE = "plain http:// is allowed only to loopback, with allow_insecure = true"


def http_allowed(host: str, allow_insecure: bool) -> bool:
    """Plain http only to this host itself, and only when the operator said so: the one rule
    for the configuration check and every fetch (HTTP_RULE says it)."""
    return allow_insecure and is_loopback(host)


def require_allowed(url: str, allow_insecure: bool,
          allowed_hosts: Collection[str] | None = None) -> None:
    """Raise DownloadError naming the URL and the rule it breaks."""
    if any(c in url for c in "\r\n\0 "):
        raise DownloadError(f"refusing URL with control characters or spaces: {url!r}")
    parts = urlsplit(url)
    host = normal_host(parts.hostname or "")
    if parts.scheme not in ("https", "http"):
        raise DownloadError(f"refusing {url}: only https:// is allowed")
    if not host:
        raise DownloadError(f"refusing {url}: no host")
    if parts.username is not None or parts.password is not None:
        raise DownloadError(f"refusing {parts.scheme}://...@{host}: credentials in the URL")
    if parts.scheme == "http" and not http_allowed(host, allow_insecure):
        raise DownloadError(f"refusing {url}: {HTTP_RULE}")
    ip = parse_ip(host)
    why = forbidden_address(ip) if ip is not None else None
    if host in METADATA_HOSTS or why is not None:
        raise DownloadError(f"refusing {url}: {why or 'cloud metadata host'}")
    if allowed_hosts is not None and host not in {normal_host(h) for h in allowed_hosts}:
        raise DownloadError(f"refusing {url}: {host} is not in this app's allowed_hosts "
                            f"({', '.join(sorted(allowed_hosts))})")


def redirect_target(url: str, location: str) -> str:
    """Where a redirect from `url` with this Location leads: DownloadError for an empty or
    broken Location, or a step down from https. The target still goes through
    `require_allowed` before it is fetched."""
    if not location or any(c in location for c in "\r\n"):
        raise DownloadError(f"{url}: redirect with a bad Location header")
    target = urljoin(url, location)
    if urlsplit(url).scheme == "https" and urlsplit(target).scheme != "https":
        raise DownloadError(f"{url}: refusing redirect from https to {target}")
    return target


def origin(url: str) -> tuple[str, str, int | None]:
    """(scheme, host, port) with the scheme's default port filled in: credentials go only to
    the origin they were configured for (catalogue G134)."""
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        port = None
    default = {"https": 443, "http": 80}.get(parts.scheme)
    return parts.scheme, normal_host(parts.hostname or ""), port or default
