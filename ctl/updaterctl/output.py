"""What every updaterctl command shares: exit codes, the command names, and how times, sizes,
tables and JSON are printed. The standard library alone, like `status` (cli.py), which uses it
too; commands.py imports it rather than the command line.
"""

from __future__ import annotations

import json
import time
from typing import Any

from updaterctl.vocabulary import human_size

__all__ = ["human_size"]  # re-exported: the printing helpers in one place

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_UNREACHABLE, EXIT_NOT_PERMITTED = 0, 1, 2, 3, 4
COMMANDS = ("status", "check", "update", "rollback", "list-backups", "history", "skip", "unskip",
            "pause", "resume", "cancel", "watch", "inhibit", "reload", "metrics", "reset-failed",
            "prune")


def print_json(value: Any) -> None:
    """Every --json output: plain JSON values, indented by two, UTF-8 as is."""
    print(json.dumps(value, indent=2, ensure_ascii=False))


def ago(t: float | None) -> str:
    """'3m ago' for a past time, 'in 3h' for a future one."""
    if t is None:
        return "never"
    d = time.time() - t
    span = f"{int(abs(d))}s"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if abs(d) >= size:
            span = f"{int(abs(d) // size)}{unit}"
            break
    return f"{span} ago" if d >= 0 else f"in {span}"


def table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
                     for r in rows)


