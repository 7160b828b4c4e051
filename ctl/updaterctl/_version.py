"""The one place the version of updaterd and updaterctl is set."""

__version__ = "0.1.0"
