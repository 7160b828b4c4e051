"""Which URLs updaterd may fetch: https, plain http only to loopback when allowed, never
link-local or cloud metadata addresses, never userinfo. Pure: no resolution, no I/O."""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

from updaterd.errors import DownloadError

METADATA_HOSTS = frozenset({"metadata.google.internal", "metadata", "instance-data"})


def _ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


def is_loopback(host: str) -> bool:
    ip = _ip(host)
    return host == "localhost" or (ip is not None and ip.is_loopback)


def check(url: str, allow_insecure: bool) -> None:
    """Raise DownloadError naming the URL and the rule it breaks."""
    if any(c in url for c in "\r\n\0 "):
        raise DownloadError(f"refusing URL with control characters or spaces: {url!r}")
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    if parts.scheme not in ("https", "http"):
        raise DownloadError(f"refusing {url}: only https:// is allowed")
    if not host:
        raise DownloadError(f"refusing {url}: no host")
    if parts.username is not None or parts.password is not None:
        raise DownloadError(f"refusing {parts.scheme}://...@{host}: credentials in the URL")
    if parts.scheme == "http" and not (allow_insecure and is_loopback(host)):
        raise DownloadError(f"refusing {url}: plain http is allowed only to loopback "
                            "with allow_insecure = true")
    ip = _ip(host)
    if host in METADATA_HOSTS or (ip is not None and (
            ip.is_link_local or ip in ipaddress.ip_network("fd00:ec2::/64"))):
        raise DownloadError(f"refusing {url}: link-local or cloud metadata address")


def origin(url: str) -> tuple[str, str, int | None]:
    """(scheme, host, port) with the scheme's default port filled in: credentials go only to
    the origin they were configured for (RELIABILITY row 134)."""
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        port = None
    default = {"https": 443, "http": 80}.get(parts.scheme)
    return parts.scheme, (parts.hostname or "").lower().rstrip("."), port or default
