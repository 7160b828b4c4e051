"""Streaming installs (row 183): a tar artifact is downloaded, hashed and unpacked into its
staging folder in one pass, so the update takes the time of the download, not download plus
unpack, and the disk never holds the archive beside the release.

The network side (trio, the fetcher) hands each chunk to a `Pipe`; the staging thread reads the
pipe as a file (`PipeReader`), and the extraction applies every check of today to each member
as it arrives. The reader hashes every byte that passes and checks size and digests against
the signed manifest when it reaches the end; the extraction reads to the end before its
staging folder can become a release, so a tree whose archive does not verify is removed, never
placed (the staging folder is not a release: a kill -9 or a power cut leaves nothing a switch
or a rollback could ever take). A cut download is resumed by the fetcher from the byte it
stopped at; one that cannot be (the server ignored the range) is given up, its staging
removed, and the artifact is fetched through the cache as before. Zip (its index is at its
end), a single executable, a GitHub asset and a feed in a local folder go through the cache.
"""

from __future__ import annotations

import io
import logging
import queue
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, BinaryIO, TypeVar, cast

import trio

from updaterd import failpoints
from updaterd.errors import DigestMismatch, DownloadError, LayoutError, UpdaterError
from updaterd.net.cachefile import Expected, ProgressFn, verify_expected
from updaterd.trust import archive
from updaterd.trust.digests import Digests

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

    from updaterd.install.apprun import AppRun
    from updaterd.install.layout import Staged
    from updaterd.sources import Source
    from updaterd.trust.feed import Artifact, Release

log = logging.getLogger("updaterd.streaming")
T = TypeVar("T")

STREAMED: frozenset[archive.Kind] = frozenset({"tar", "tar.gz", "tar.xz", "tar.zst",
                                                "tar.bz2"})


class _End:
    """The producer is done: every byte was handed over."""


class Pipe:
    """Bytes from the event loop to one reading thread, in batches of about BATCH, with at
    most IN_FLIGHT batches waiting (a bounded memory, whatever the artifact's size)."""

    BATCH = 256 << 10
    IN_FLIGHT = 4

    def __init__(self, name: str, expected: Expected, token: trio.lowlevel.TrioToken,
                 on_verified: Callable[[], None] | None = None) -> None:
        """`token`: the event loop's, which the reading thread tells of each batch taken;
        `on_verified`: called there once the last byte matched (what follows is the staging
        of today: fsync, the tree's record, the rename into releases/)."""
        self.name, self.expected, self.on_verified = name, expected, on_verified
        self._token = token
        self._queue: queue.SimpleQueue[bytes | _End | BaseException] = queue.SimpleQueue()
        self._credits = trio.Semaphore(self.IN_FLIGHT)
        self._batch: list[bytes] = []
        self._size = 0
        self.reader = PipeReader(self)

    async def put(self, chunk: bytes) -> None:
        """One chunk, in order (called by the download)."""
        self._batch.append(chunk)
        self._size += len(chunk)
        if self._size >= self.BATCH:
            await self._flush()

    async def _flush(self) -> None:
        if self._batch:
            await self._credits.acquire()
            self._queue.put(b"".join(self._batch))
            self._batch, self._size = [], 0

    async def close(self) -> None:
        """Every byte was put: the reader checks them at the end."""
        await self._flush()
        self._queue.put(_End())

    def fail(self, error: BaseException) -> None:
        """The download stopped: the reader raises `error` at its next read."""
        self._queue.put(error)

    def _take(self) -> bytes | _End | BaseException:
        """The next item, from the reading thread; a batch gives its credit back."""
        item = self._queue.get()
        if isinstance(item, bytes):
            self._token.run_sync_soon(self._credits.release)
        return item


class PipeReader(io.RawIOBase):
    """The artifact as the extraction reads it while it downloads: each byte hashed once as it
    passes, seeks forward only (tarfile skips to the next header by seeking), and at the end
    the size and digests checked against the signed manifest (DigestMismatch there)."""

    def __init__(self, pipe: Pipe) -> None:
        super().__init__()
        self._pipe = pipe
        self.digests = Digests()
        self._view = memoryview(b"")
        self._pos = 0
        self.verified = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: WriteableBuffer) -> int:
        """As much as `buffer` holds, short only at the end (tarfile takes a short read of
        a member as a truncated archive, as from a file)."""
        out = memoryview(buffer).cast("B")
        filled = 0
        while filled < len(out):
            if not self._view:
                if self.verified:
                    break
                self._next()
                continue
            n = min(len(out) - filled, len(self._view))
            out[filled:filled + n] = self._view[:n]
            self._view = self._view[n:]
            filled += n
        self._pos += filled
        return filled

    def _next(self) -> None:
        item = self._pipe._take()
        if isinstance(item, BaseException):
            raise item
        if isinstance(item, _End):
            verify_expected(self._pipe.name, self.digests, self._pipe.expected)
            self.verified = True
            failpoints.hit("download.after_verify")  # verified, not yet a release
            if self._pipe.on_verified is not None:
                self._pipe._token.run_sync_soon(self._pipe.on_verified)
            return
        self.digests.update(item)
        self._view = memoryview(item)

    def seekable(self) -> bool:
        return True  # forward: xz and bz2 readers ask before tarfile skips what it passed

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        target = offset if whence == io.SEEK_SET else self._pos + offset
        if whence not in (io.SEEK_SET, io.SEEK_CUR) or target < self._pos:
            raise io.UnsupportedOperation("a streamed artifact is read forward only")
        while self._pos < target and self.read(min(target - self._pos, 1 << 20)):
            pass
        return self._pos


class StreamStopped(DownloadError):
    """The download under a streaming install stopped for a reason that fetching the artifact
    through the cache may not meet (a cut that could not be resumed, a network failure)."""


def may_stream(run: AppRun, source: Source, artifact: Artifact) -> bool:
    """A tar artifact its source can stream, and no copy of it in the cache: a prefetched
    artifact is used as it is, and a partial one is resumed there."""
    name = artifact.url.rsplit("/", 1)[-1]
    cached = run.cache / name
    return archive.kind_of(name) in STREAMED and source.streams(artifact) \
        and not cached.exists() and not cached.with_name(name + ".part").exists()


async def unpack_as_it_arrives(name: str, expected: Expected,
                               feed: Callable[[Pipe], Awaitable[None]],
                               unpack: Callable[[BinaryIO], T],
                               on_verified: Callable[[], None] | None = None) -> T:
    """`unpack(reader)` on a thread of its own while `feed(pipe)` puts the bytes; returns what
    `unpack` returned, or raises what it raised (the feed's own failures reach `unpack` as
    its reads' errors). The thread is never left running: a feed cancelled (a stop, an
    operator's cancel) ends the pipe and waits for it, as a staging thread is waited for
    today; an `unpack` that ends first (a refused member) stops the feed."""
    token = trio.lowlevel.current_trio_token()
    pipe = Pipe(name, expected, token, on_verified)
    done = trio.Event()
    feeding = trio.CancelScope()
    result: list[tuple[bool, T | BaseException]] = []

    def job() -> None:
        try:
            result.append((True, unpack(cast(BinaryIO, pipe.reader))))
        except BaseException as e:  # handed to the event loop, raised there
            result.append((False, e))
        token.run_sync_soon(finished)

    def finished() -> None:
        feeding.cancel()
        done.set()

    trio.lowlevel.start_thread_soon(job, lambda _outcome: None, name=f"updaterd-unpack {name}")
    try:
        with feeding:
            await _feed_until_done(feed, pipe)
    finally:
        with trio.CancelScope(shield=True):  # the staging folder is the thread's until it ends
            await done.wait()
    ok, value = result[0]
    if not ok:
        assert isinstance(value, BaseException)
        raise value
    return cast(T, value)


async def _feed_until_done(feed: Callable[[Pipe], Awaitable[None]], pipe: Pipe) -> None:
    """The network side: every byte into the pipe, then its end, or why it stopped (the
    reading thread raises that at its next read: nothing is raised here but a cancellation)."""
    ended = False
    try:
        await feed(pipe)
        await pipe.close()
        ended = True
    except UpdaterError as e:
        pipe.fail(e)
        ended = True
    except Exception as e:  # a bug on the way must not leave the reading thread waiting
        log.exception("streaming %s", pipe.name)
        pipe.fail(StreamStopped(f"{type(e).__name__}: {e}"))
        ended = True
    finally:
        if not ended:  # cancelled: a stop, or the reading thread gave up first
            pipe.fail(StreamStopped("the download was stopped"))


async def install_as_it_downloads(run: AppRun, source: Source, release: Release,
                                  artifact: Artifact, progress: ProgressFn) -> Staged | None:
    """`release` staged from its artifact as the artifact downloads (`may_stream` first);
    None when the download stopped in a way the cache's resume may get past (said in the
    log: the caller fetches it through the cache)."""
    name = artifact.url.rsplit("/", 1)[-1]
    kind = archive.kind_of(name)
    expected = Expected(artifact.size, artifact.sha256, artifact.blake3)
    limits, raw_name = run.config.limits.extraction(), run.cfg.executable or run.name

    async def feed(pipe: Pipe) -> None:
        await source.stream_artifact(artifact, expected, pipe.put, progress)

    try:
        return await unpack_as_it_arrives(
            name, expected, feed,
            lambda reader: run.layout.stage(reader, kind, limits, raw_name,
                                            run.cfg.executable, release.version),
            lambda: run.phase("staging", version=release.version))
    except OSError as e:  # a full disk, most often; the staging is removed
        raise LayoutError(f"{run.layout.space_folder}: {e.strerror or e} while staging "
                          f"{release.version} as it downloads") from None
    except DigestMismatch:
        if not source.stream_refused(artifact):
            raise
        log.warning("%s: the bytes of %s streamed from %s did not verify; nothing of them "
                    "was kept, and the artifact is fetched through the cache from the feed's "
                    "other origins", run.name, release.version, source.describe(artifact))
        return None
    except DownloadError as e:
        log.warning("%s: the streaming install of %s stopped (%s); nothing of it was kept, "
                    "and the artifact is fetched through the cache, which resumes across "
                    "restarts", run.name, release.version, e)
        return None
