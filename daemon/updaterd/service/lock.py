"""One updaterd per lock file: flock(2), released by the kernel even on kill -9."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
from pathlib import Path

from updaterd.errors import LockHeld, UpdaterError
from updaterd.host import pathtrust


class ProcessLock:
    """Holds an exclusive flock on `path` while open; the file holds the holder's pid."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd: int | None = None

    def acquire(self) -> None:
        # a lock planted by another user (G145)
        pathtrust.require_trusted(self.path, "lock_file")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC,
                         0o644)
        except OSError as e:
            why = "it is a symbolic link" if e.errno == errno.ELOOP else e.strerror
            raise UpdaterError(f"cannot open the lock file {self.path}: {why}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode("ascii", "replace").strip()
            os.close(fd)
            raise LockHeld(str(self.path), int(holder) if holder.isdigit() else None) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self.fd = fd

    def release(self) -> None:
        if self.fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(self.fd, 0)
            os.close(self.fd)
            self.fd = None

    def __enter__(self) -> ProcessLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
