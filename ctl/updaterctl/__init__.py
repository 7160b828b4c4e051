"""updaterctl: the small client of updaterd (no trio, no httpx: it starts fast).

`Client` and its errors load on first use, so that `updaterctl status`, which needs neither,
does not pay for msgspec."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from updaterctl._version import __version__

if TYPE_CHECKING:
    from updaterctl.client import Client, ClientError, DaemonUnreachable, RemoteError

__all__ = ["Client", "ClientError", "DaemonUnreachable", "RemoteError", "__version__"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from updaterctl import client
        return getattr(client, name)
    raise AttributeError(f"module 'updaterctl' has no attribute {name!r}")
