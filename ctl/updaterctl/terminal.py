"""What updaterctl prints is escaped: text from servers, feeds and apps reaches the terminal as
text, never as a control sequence (catalogue H152).

A tag name, an asset name or an app's health output can carry ESC, CSI or a carriage return;
printed raw, it could rewrite the screen, the title or the lines above it. Every character below
space (but the newline and the tab), DEL, the C1 controls and the Unicode line separators are
shown as `\\uXXXX`, which is also a valid escape inside a JSON string, so `--json` stays JSON.
"""

from __future__ import annotations

import re
from typing import TextIO

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029]")


def escape(text: str) -> str:
    """`text` with every control character but newline and tab shown as \\uXXXX."""
    return _CONTROL.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


class Escaping:
    """A text stream that escapes what is written to it; `raw` is for updaterctl's own
    control sequences (the progress line's carriage return and erase)."""

    def __init__(self, stream: TextIO) -> None:
        self.raw = stream

    def write(self, text: str) -> int:
        return self.raw.write(escape(text))

    def flush(self) -> None:
        self.raw.flush()

    def isatty(self) -> bool:
        return self.raw.isatty()

    def fileno(self) -> int:
        return self.raw.fileno()

    def __getattr__(self, name: str) -> object:
        return getattr(self.raw, name)
