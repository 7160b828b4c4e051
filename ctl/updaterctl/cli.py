"""The `updaterctl` command. The daemon and its socket arrive with the daemon issue; until then
every command reports that updaterd cannot be reached (exit 3)."""

from __future__ import annotations

import argparse
import sys

from updaterctl._version import __version__
from updaterctl.protocol import DEFAULT_SOCKET

EXIT_UNREACHABLE = 3


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="updaterctl", description="Control and query updaterd.")
    p.add_argument("--version", action="version", version=f"updaterctl {__version__}")
    p.add_argument("--socket", default=DEFAULT_SOCKET, metavar="PATH")
    p.add_argument("--json", action="store_true", help="print the RPC result as JSON")
    p.add_argument("command", nargs="?", help="status, check, update, rollback, ...")
    p.add_argument("args", nargs=argparse.REMAINDER)
    args = p.parse_args(argv)
    print(f"updaterctl: cannot reach updaterd at {args.socket}: the daemon is not built yet",
          file=sys.stderr)
    return EXIT_UNREACHABLE
