"""`source = "directory"` (and `file://` manifests): a feed in a local folder.

For air-gapped hosts and the demo. Artifacts must sit in the same folder as the manifest; they
are copied into the cache and hashed in one pass, exactly like a download.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import BinaryIO

import trio

from updaterd import failpoints, keys, minisign
from updaterd.config import AppConfig, Limits
from updaterd.digests import Digests
from updaterd.download import Expected, ProgressFn
from updaterd.errors import DigestMismatch, DownloadError, FeedError
from updaterd.feed import MANIFEST, SAFE_FILE_NAME, SIGNATURE, Artifact, TrustedFeed
from updaterd.sources import trust
from updaterd.state import AppState
from updaterd.units import parse_size

_CHUNK = 1 << 20


def _read_capped(path: Path, cap: int) -> bytes | None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        return None
    with os.fdopen(fd, "rb") as f:
        data = f.read(cap + 1)
    if len(data) > cap:
        raise FeedError(f"{path}: larger than {cap} bytes; refused")
    return data


class LocalSource:
    """A feed folder on this host."""

    def __init__(self, app: str, cfg: AppConfig, limits: Limits, folder: Path,
                 state_folder: Path) -> None:
        self.app, self.cfg, self.limits, self.folder = app, cfg, limits, folder
        self.state_folder = state_folder

    async def _optional(self, name: str) -> tuple[bytes, bytes | None] | None:
        """A document beside the manifest (keys.json) and its signature, or None."""
        raw = _read_capped(self.folder / name, keys.MAX_KEYS_SIZE)
        if raw is None:
            return None
        return raw, _read_capped(self.folder / f"{name}.minisig", minisign.MAX_SIGNATURE_FILE)

    async def fetch(self, state: AppState, cache: Path, cycle_start_ts: float) -> TrustedFeed:
        cap = parse_size(self.limits.max_manifest_size)
        await keys.refresh(self.app, self.cfg, state, self._optional)
        raw = _read_capped(self.folder / MANIFEST, cap)
        if raw is None:
            raise FeedError(f"no {MANIFEST} in {self.folder}")
        sig = _read_capped(self.folder / SIGNATURE, minisign.MAX_SIGNATURE_FILE)
        return trust.verify(self.app, self.cfg, state, raw, sig, cycle_start_ts, False)

    def _path(self, artifact: Artifact) -> Path:
        if not SAFE_FILE_NAME.fullmatch(artifact.url):
            raise FeedError(f"artifact {artifact.url!r}: a local feed names files in its folder")
        return self.folder / artifact.url

    def describe(self, artifact: Artifact) -> str:
        return str(self._path(artifact))

    async def download(self, artifact: Artifact, dest: Path, expected: Expected,
                       progress: ProgressFn | None) -> BinaryIO:
        src = self._path(artifact)
        return await trio.to_thread.run_sync(_copy_verified, src, dest, expected)


def _copy_verified(src: Path, dest: Path, expected: Expected) -> BinaryIO:
    """Copy with hashing in one pass; the verified copy is returned open."""
    part = dest.with_name(dest.name + ".part")
    out = os.open(part, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        digests = Digests()
        with open(src, "rb") as f:
            while chunk := f.read(_CHUNK):
                if digests.size + len(chunk) > expected.size:
                    raise DigestMismatch(f"{src}: longer than the signed {expected.size} bytes")
                digests.update(chunk)
                view = memoryview(chunk)
                while view:
                    view = view[os.write(out, view):]
        digests.check(src.name, expected.size, expected.sha256, expected.blake3)
        os.fsync(out)
        os.replace(part, dest)
        failpoints.hit("download.after_verify")
        os.lseek(out, 0, os.SEEK_SET)
        return os.fdopen(out, "rb")
    except BaseException as e:
        os.close(out)
        if part.exists():
            part.unlink()
        if isinstance(e, OSError):
            raise DownloadError(f"{dest.parent}: {e.strerror or e} while copying "
                                f"{src.name}") from None
        raise
