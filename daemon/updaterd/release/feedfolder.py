"""The publisher's feed folder, read as carefully as a host reads a feed (J171).

A feed folder is often shared (a web root, a group of publishers), and whoever can write in it
can plant a link: `rollout.json.minisig -> ~/.keys/release.key` would have the next signing
command read the secret key and carry its bytes into a world-readable file. So every command
that signs reads the folder's files through here: the folder and each file opened with
`O_NOFOLLOW`, each a regular file of the publisher's own, capped, and of an old signature file
only the blocks that parse as minisign signatures are ever written again.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from updaterd.errors import FeedError
from updaterd.trust import minisign

MANIFEST_CAP = 64 << 20  # the publisher's own manifest (hosts cap theirs at max_manifest_size)
SMALL_CAP = 64 * 1024  # keys.json, rollout.json
SIGNATURE_CAP = minisign.MAX_SIGNATURE_FILE


def _refuse_foreign(path: Path, st: os.stat_result, what: str) -> None:
    me = os.geteuid()
    if st.st_uid != me:
        raise FeedError(f"{path} belongs to uid {st.st_uid}, not to the publisher (uid {me}): "
                        f"refusing to sign from a {what} another user controls; chown it, or "
                        "publish from a folder of your own")


def _open_folder(feed_dir: Path) -> int:
    try:
        fd = os.open(feed_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        raise
    except OSError as e:
        if e.errno in (errno.ELOOP, errno.ENOTDIR):
            raise FeedError(f"{feed_dir} is a symbolic link or not a folder; name the feed "
                            "folder itself") from None
        raise FeedError(f"{feed_dir}: {e.strerror}") from None
    try:
        _refuse_foreign(feed_dir, os.fstat(fd), "folder")
    except FeedError:
        os.close(fd)
        raise
    return fd


def read(feed_dir: Path, name: str, cap: int) -> bytes | None:
    """The bytes of `feed_dir/name`, or None when there is no such file. FeedError names the
    file when it is a link, not a regular file, another user's, or larger than `cap`."""
    path = feed_dir / name
    try:
        folder = _open_folder(feed_dir)
    except FileNotFoundError:
        return None
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY
                     | os.O_CLOEXEC, dir_fd=folder)
    except FileNotFoundError:
        return None
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise FeedError(f"{path} is a symbolic link; a feed file is never read through "
                            "one (someone who can write in the feed folder planted it?)") \
                from None
        raise FeedError(f"{path}: {e.strerror}") from None
    finally:
        os.close(folder)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise FeedError(f"{path} is not a regular file; refusing to read it")
        _refuse_foreign(path, st, "file")
        if st.st_nlink != 1:
            raise FeedError(f"{path} has {st.st_nlink} names (a hard link to another file?); "
                            "refusing to read it")
        data = b""
        while len(data) <= cap and (chunk := os.read(fd, cap + 1 - len(data))):
            data += chunk
        if len(data) > cap:
            raise FeedError(f"{path} is larger than {cap} bytes; refusing to read it")
        return data
    finally:
        os.close(fd)


def signature_blocks(feed_dir: Path, name: str) -> bytes:
    """The signature blocks of the old `name` worth keeping while a document is replaced: only
    those that parse as minisign signatures, never other bytes the file held."""
    old = read(feed_dir, name, SIGNATURE_CAP)
    return minisign.valid_blocks(old) if old else b""
