"""Checksum files in the `sha256sum` / `b3sum` forms (`<hex>  <name>` or `<hex> *<name>`).

Both tools print 64 hex digits, so the algorithm comes from the file's name: one that mentions
b3 or blake3 holds BLAKE3 digests, any other SHA-256. Pure: text in, digest out.
"""

from __future__ import annotations

import re
from typing import Literal

from updaterd.errors import FeedError

_LINE = re.compile(r"^([0-9a-fA-F]{64}) [ *](.+)$")


def algorithm(file_name: str) -> Literal["sha256", "blake3"]:
    return "blake3" if re.search(r"b3|blake3", file_name, re.IGNORECASE) else "sha256"


def digest_for(text: str, file_name: str, asset: str) -> str:
    """The digest listed for exactly `asset`; FeedError when absent, listed twice or malformed."""
    found: list[str] = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.rstrip("\r")
        if not line.strip() or line.startswith("#"):
            continue
        m = _LINE.match(line)
        if not m:
            raise FeedError(f"{file_name}: line {number} is not '<hex>  <name>'")
        if m.group(2) == asset:
            found.append(m.group(1).lower())
    if not found:
        raise FeedError(f"{asset} is not listed in {file_name}")
    if len(set(found)) > 1:
        raise FeedError(f"{asset} is listed in {file_name} with different digests")
    return found[0]
