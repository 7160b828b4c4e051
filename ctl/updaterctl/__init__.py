"""updaterctl: the small client of updaterd (no trio, no httpx: it starts fast)."""

from updaterctl._version import __version__

__all__ = ["__version__"]
