"""The trust step shared by every feed source: verify, then keep a copy for 304 answers."""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime
from pathlib import Path

from updaterd import fsutil
from updaterd.errors import StateError
from updaterd.host.config import AppConfig
from updaterd.host.state import AppState
from updaterd.sources import keys
from updaterd.trust import feed, minisign

CACHED = "feed.json"


def keys_of(cfg: AppConfig) -> list[minisign.PublicKey]:
    return [minisign.PublicKey.parse(k) for k in cfg.public_keys]


def verify_feed(app: str, cfg: AppConfig, state: AppState, raw: bytes, sig: bytes | None,
           cycle_start_ts: float, require_signature: bool) -> feed.TrustedFeed:
    """Run every feed check against the stored high-water mark (nothing is stored here)."""
    use = keys.in_use(cfg, state) if cfg.verify == "required" else None
    return feed.verify_manifest(
        raw, sig,
        keys=use.keys if use is not None else [],
        threshold=use.threshold if use is not None else 1,
        app=app,
        stored_serial=state.serial,
        stored_digest=state.manifest_digest,
        cycle_start=datetime.fromtimestamp(cycle_start_ts, UTC),
        require_signature=require_signature and cfg.verify == "required",
    )


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
