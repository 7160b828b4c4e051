"""SHA-256 and BLAKE3 computed together in one pass over the bytes as they arrive."""

from __future__ import annotations

import hashlib
import hmac
import os

import blake3

from updaterd.errors import DigestMismatch
from updaterd.fsutil import COPY_CHUNK


class Digests:
    """Both digests of one stream of bytes (and BLAKE2b-512, minisign's prehash, on request)."""

    def __init__(self, prehash: bool = False) -> None:
        self._sha256 = hashlib.sha256()
        self._blake3 = blake3.blake3()
        self._blake2b = hashlib.blake2b(digest_size=64) if prehash else None
        self.size = 0

    def update(self, chunk: bytes | memoryview) -> None:
        self._sha256.update(chunk)
        self._blake3.update(chunk)
        if self._blake2b is not None:
            self._blake2b.update(chunk)
        self.size += len(chunk)

    def update_from_fd(self, fd: int, length: int) -> None:
        """Hash the first `length` bytes of an open file (used to resume a partial download)."""
        os.lseek(fd, 0, os.SEEK_SET)
        left = length
        while left:
            chunk = os.read(fd, min(COPY_CHUNK, left))
            if not chunk:
                raise OSError(f"file shorter than {length} bytes")
            self.update(chunk)
            left -= len(chunk)

    @property
    def sha256(self) -> str:
        return self._sha256.hexdigest()

    @property
    def blake3(self) -> str:
        return self._blake3.hexdigest()

    @property
    def prehash(self) -> bytes:
        """BLAKE2b-512 of the bytes: what a prehashed minisign signature signs."""
        if self._blake2b is None:
            raise ValueError("prehash was not requested")
        return self._blake2b.digest()

    def require_match(self, what: str, size: int, sha256: str | None, blake3_hex: str | None,
              signature_checked: bool = False) -> None:
        """Raise DigestMismatch naming `what` unless size and every listed digest match."""
        if sha256 is None and blake3_hex is None and not signature_checked:
            raise DigestMismatch(f"{what}: no digest to check against")
        if self.size != size:
            raise DigestMismatch(f"{what}: size {self.size} differs from the signed {size}")
        if sha256 is not None and not hmac.compare_digest(self.sha256, sha256):
            raise DigestMismatch(f"{what}: SHA-256 mismatch: expected {sha256}, "
                                 f"got {self.sha256}")
        if blake3_hex is not None and not hmac.compare_digest(self.blake3, blake3_hex):
            raise DigestMismatch(f"{what}: BLAKE3 mismatch: expected {blake3_hex}, "
                                 f"got {self.blake3}")


def blake3_of_file(path: str | os.PathLike[str]) -> str:
    """BLAKE3 of a file (links are not followed); raises OSError when it cannot be read."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        return blake3_of_fd(fd)
    finally:
        os.close(fd)


def blake3_of_fd(fd: int) -> str:
    """BLAKE3 of what an open file holds, read from its start."""
    h = blake3.blake3()
    offset = 0
    while chunk := os.pread(fd, COPY_CHUNK, offset):
        h.update(chunk)
        offset += len(chunk)
    return h.hexdigest()


def of_file(path: str, chunk: int = COPY_CHUNK) -> Digests:
    """Both digests of a file on disk."""
    d = Digests()
    fd = os.open(path, os.O_RDONLY)
    try:
        while True:
            data = os.read(fd, chunk)
            if not data:
                break
            d.update(data)
    finally:
        os.close(fd)
    return d
