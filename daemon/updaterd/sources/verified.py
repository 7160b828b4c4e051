"""What every feed source keeps of a verified feed, so that a 304 can be answered from it."""

from __future__ import annotations

import contextlib
from pathlib import Path

from updaterd import fsutil
from updaterd.errors import StateError

CACHED = "feed.json"


def keep_copy(folder: Path, raw: bytes, sig: bytes | None, name: str = CACHED) -> None:
    """Keep the verified feed (and its signature), so that a 304 can be answered from a
    re-verified copy. Raises StateError when the state folder cannot be written."""
    sig_path = folder / f"{name}.minisig"
    try:
        fsutil.ensure_private_dir(folder, 0o755)
        fsutil.atomic_write(folder / name, raw)
        if sig is not None:
            fsutil.atomic_write(sig_path, sig)
        else:
            with contextlib.suppress(FileNotFoundError):
                sig_path.unlink()
    except OSError as e:
        raise StateError(f"cannot write state: {folder / name}: {e.strerror or e}") from None


def load_copy(folder: Path, name: str = CACHED) -> tuple[bytes, bytes | None] | None:
    """The copy kept by keep_copy, or None."""
    try:
        raw = (folder / name).read_bytes()
    except FileNotFoundError:
        return None
    try:
        sig: bytes | None = (folder / f"{name}.minisig").read_bytes()
    except FileNotFoundError:
        sig = None
    return raw, sig
