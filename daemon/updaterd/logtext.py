"""Log lines stay one line each, whatever a client or a server sent (catalogue G143).

Strings from outside (an inhibitor's `who` and `why`, an app name or method in a request, a
server's error text) can reach the log. Every record is cleaned once, in a filter on the
handlers: control characters are shown escaped (`\\n`, `\\x1b`) so nothing can forge a second
line or a terminal escape, and a message is capped in length.
"""

from __future__ import annotations

import logging
import re

MAX_MESSAGE = 4096
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def clean(text: str, limit: int = MAX_MESSAGE) -> str:
    """`text` on one line, control characters escaped, at most `limit` characters."""
    escaped = _CONTROL.sub(lambda m: repr(m.group())[1:-1], text)
    if len(escaped) > limit:
        escaped = escaped[: limit - 1] + "…"
    return escaped


class OneLine(logging.Filter):
    """Cleans each record's message before any handler formats it (tracebacks, which come
    from updaterd itself, keep their lines)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = clean(record.getMessage())
        record.args = None
        return True
