"""updaterctl: the small client of updaterd (no trio, no httpx: it starts fast)."""

from updaterctl._version import __version__
from updaterctl.client import Client, ClientError, DaemonUnreachable, RemoteError

__all__ = ["Client", "ClientError", "DaemonUnreachable", "RemoteError", "__version__"]
