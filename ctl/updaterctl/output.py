"""What every updaterctl command shares: exit codes, the command names, and how times, sizes,
tables and JSON are printed. The standard library alone, like `status` (cli.py), which uses it
too; commands.py imports it rather than the command line.
"""

from __future__ import annotations

import json
import os
import shutil
import textwrap
import time
from dataclasses import dataclass
from typing import Any, TextIO

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


def padded(rows: list[list[str]]) -> list[list[str]]:
    """Every cell padded to its column's width."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return [[c.ljust(w) for c, w in zip(r, widths, strict=True)] for r in rows]


def table(rows: list[list[str]]) -> str:
    return "\n".join("  ".join(r).rstrip() for r in padded(rows))


@dataclass(frozen=True)
class Look:
    """How to print to a stream: colour and lines fitted to the width on a terminal; plain
    lines, as long as they are, through a pipe or with NO_COLOR or TERM=dumb (no colour)."""

    colour: bool
    width: int | None

    @classmethod
    def of(cls, stream: TextIO) -> Look:
        if not stream.isatty():
            return cls(False, None)
        plain = bool(os.environ.get("NO_COLOR")) or os.environ.get("TERM") == "dumb"
        return cls(not plain, max(shutil.get_terminal_size().columns, 40))

    def paint(self, text: str, colour: str | None) -> str:
        """`text` in `colour` (red, green, yellow, dim) when colour is on."""
        codes = {"red": "31", "green": "32", "yellow": "33", "dim": "2"}
        if not self.colour or colour is None:
            return text
        return f"\x1b[{codes[colour]}m{text}\x1b[0m"

    def fit(self, line: str, indent: str = "    ") -> list[str]:
        """`line` wrapped to the terminal's width (continuations indented), or as it is."""
        if self.width is None or len(line) <= self.width:
            return [line]
        return textwrap.wrap(line, self.width, subsequent_indent=indent,
                             break_on_hyphens=False) or [line]
