"""updaterd: keeps applications on a Linux host up to date from signed release feeds, safely."""

from updaterctl._version import __version__

__all__ = ["__version__"]
