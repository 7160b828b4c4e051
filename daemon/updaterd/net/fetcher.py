"""HTTP with httpx on trio: small conditional fetches (feeds) and verified artifact downloads.

Artifact bytes are written to `<cache>/<name>.part` and hashed (SHA-256 and BLAKE3) as they
arrive; a partial file is resumed with Range + If-Range; the finished file is checked against the
signed size and digests, renamed into place, and handed on as the same open file descriptor so
that what is extracted is exactly what was verified. Redirects are followed by hand so that each
hop passes the URL policy, and credentials never cross to another host.
"""

from __future__ import annotations

import contextlib
import dataclasses
import email.utils
import logging
import os
import random
import re
import ssl
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC
from pathlib import Path
from typing import BinaryIO, TypeVar

import httpx
import msgspec
import trio

from updaterctl._version import __version__
from updaterd import fsutil, logtext
from updaterd.errors import DigestMismatch, DownloadError, RateLimited, Retryable
from updaterd.host.config import Limits
from updaterd.net import cachefile
from updaterd.net.cachefile import Expected, ProgressFn
from updaterd.net.document import Document
from updaterd.net.netguard import GuardedTransport
from updaterd.net.ratecap import TokenBucket
from updaterd.trust import tlstrust, urlpolicy
from updaterd.trust.digests import Digests
from updaterd.units import parse_duration, parse_size

log = logging.getLogger("updaterd.fetcher")
RETRY_STATUS = frozenset({408, 429, 500, 502, 503, 504})
_CONTENT_RANGE = re.compile(r"^bytes (\d+)-(\d+)/(\d+|\*)$")


class _PartMeta(msgspec.Struct):
    """Beside a partial download: which artifact it belongs to, and the server's validator."""

    url: str
    size: int
    sha256: str | None
    blake3: str | None
    etag: str | None = None
    last_modified: str | None = None


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Retry-After as seconds, from either of its two forms; None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    base = now if now is not None else time.time()
    return max(when.timestamp() - base, 0.0)


T = TypeVar("T")


def _causes(e: BaseException) -> Iterator[BaseException]:
    seen: BaseException | None = e
    while seen is not None:
        yield seen
        seen = seen.__cause__ or seen.__context__


def _certificate_error(e: BaseException) -> str | None:
    """The verification message when a TLS certificate was refused (httpx wraps it)."""
    for cause in _causes(e):
        if isinstance(cause, ssl.SSLCertVerificationError):
            return cause.verify_message or str(cause)
    return None


def _why(e: BaseException) -> str:
    """The first non-empty message along the cause chain (httpx's own may be empty)."""
    return next((str(c) for c in _causes(e) if str(c)), "network error")


class Fetcher:
    """One HTTP client with updaterd's timeouts, retries and URL policy."""

    def __init__(self, limits: Limits, *, allow_insecure: bool = False,
                 proxy: str | None = None, rng: random.Random | None = None,
                 transport: httpx.AsyncBaseTransport | None = None,
                 rate_caps: list[TokenBucket] | None = None,
                 allowed_hosts: set[str] | None = None, ca_file: str | None = None,
                 moved: dict[str, str] | None = None) -> None:
        self.limits = limits
        # attempts after the first on a Retryable failure (a feed with mirrors asks its
        # origins once each but the last: the next origin is the retry)
        self.retries = limits.retries
        # URLs a server moved for good (301, 308) -> where to: asked there at once, by every
        # fetcher that shares the map (the daemon's, for its run)
        self.moved = moved if moved is not None else {}
        self.rate_caps = rate_caps or []
        self.allow_insecure = allow_insecure
        # None: any host the URL policy allows; else only these, checked at every hop
        self.allowed_hosts = allowed_hosts
        # told of every retry, so that a client sees "retrying in 8s" instead of silence
        self.on_retry: Callable[[str], None] = lambda text: log.info("%s", text)
        from urllib.request import getproxies  # what httpx reads too; heavy, so here

        if transport is None and proxy is None and not getproxies():
            # The connected address is checked too. Through a proxy (configured, or from the
            # *_proxy variables, which httpx honours only with its own transport) the proxy
            # connects, and the URL policy is what applies.
            # Under a rate cap, large reads would arrive as bursts the cap then sleeps off.
            transport = GuardedTransport(context=tlstrust.context(ca_file),
                                         large_reads=not self.rate_caps)
        self.rng = rng or random.Random()
        connect = parse_duration(limits.connect_timeout)
        read = parse_duration(limits.read_timeout)
        self.client = httpx.AsyncClient(
            timeout=httpx.Timeout(connect=connect, read=read, write=read, pool=connect),
            follow_redirects=False,
            headers={"User-Agent": f"updaterd/{__version__}", "Accept-Encoding": "identity"},
            proxy=proxy,
            trust_env=proxy is None,
            transport=transport,
            verify=tlstrust.context(ca_file),  # for a proxy's transport too
        )

    async def aclose(self) -> None:
        await self.client.aclose()

    # -- plumbing ----------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _open(self, url: str, headers: dict[str, str]) -> AsyncIterator[httpx.Response]:
        """GET with redirects followed by hand, each hop checked; yields the streaming response."""
        hops = 0
        origin = urlpolicy.origin(url)
        if (moved := self.moved.get(url)) is not None:
            url = moved
            if urlpolicy.origin(moved) != origin:
                headers = {k: v for k, v in headers.items() if k.lower() != "authorization"}
        while True:
            urlpolicy.require_allowed(url, self.allow_insecure, self.allowed_hosts)
            try:
                request = self.client.build_request("GET", url, headers=headers)
                response = await self.client.send(request, stream=True)
            except httpx.RemoteProtocolError as e:
                if "location header" in str(e):  # httpx parses a redirect's target itself
                    raise DownloadError(f"{url}: redirect with a bad Location header: "
                                        f"{e}") from None
                raise Retryable(f"{url}: {type(e).__name__}: {e or 'network error'}") from None
            except httpx.TransportError as e:
                cert = _certificate_error(e)
                if cert is not None:  # permanent: never retried, never downgraded
                    raise DownloadError(f"{url}: TLS certificate refused "
                                        f"(CERTIFICATE_VERIFY_FAILED): {cert}") from None
                raise Retryable(f"{url}: {type(e).__name__}: {_why(e)}") from None
            if response.status_code not in urlpolicy.REDIRECT_STATUS:
                break
            location = response.headers.get("location", "")
            await response.aclose()
            hops += 1
            if hops > self.limits.max_redirects:
                raise DownloadError(f"{url}: more than {self.limits.max_redirects} redirects")
            target = urlpolicy.redirect_target(url, location)
            if response.status_code in (301, 308) and self.moved.get(url) != target:
                self.moved[url] = target
                log.warning("%s moved for good (HTTP %d) to %s: asked there until updaterd "
                            "restarts; write the new address in the configuration (url) or "
                            "the feed", url, response.status_code, target)
            if urlpolicy.origin(target) != origin:
                headers = {k: v for k, v in headers.items() if k.lower() != "authorization"}
            url = target
        try:
            yield response
        finally:
            await response.aclose()

    async def _retrying(self, what: str, attempt_fn: Callable[[int], Awaitable[T]]) -> T:
        """Run `attempt_fn` with exponential backoff and full jitter on Retryable failures."""
        base = parse_duration(self.limits.backoff_base)
        cap = parse_duration(self.limits.backoff_cap)
        after_cap = parse_duration(self.limits.retry_after_cap)
        attempt = 0
        while True:
            try:
                return await attempt_fn(attempt)
            except Retryable as e:
                if attempt >= self.retries:
                    tries = f"{attempt + 1} attempt{'s' if attempt else ''}"
                    raise DownloadError(f"{e} (gave up after {tries})") from None
                delay = self.rng.uniform(0, min(cap, base * 2**attempt))
                if e.retry_after is not None:
                    delay = min(e.retry_after, after_cap)
                log.debug("%s: %s; retrying in %.1fs", what, e, delay)
                self.on_retry(f"retrying in {delay:.0f}s (attempt {attempt + 2} of "
                              f"{self.retries + 1}): {e}")
                await trio.sleep(delay)
                attempt += 1

    def _status_error(self, url: str, response: httpx.Response,
                      detail: str = "") -> DownloadError:
        status = response.status_code
        h = response.headers
        if status in (403, 429) and (h.get("x-ratelimit-remaining") == "0"
                                     or (status == 403 and "retry-after" in h)):
            now = time.time()
            until = now + (parse_retry_after(h.get("retry-after")) or 60.0)
            reset = h.get("x-ratelimit-reset", "")
            if reset.isdigit():
                until = max(until if "retry-after" in h else 0.0, float(reset))
            # A server's word is capped: one answer must not stop the app for years (G139).
            until = min(until, now + parse_duration(self.limits.retry_after_cap))
            when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(until))
            return RateLimited(f"{url}: rate limited (HTTP {status}); no request until {when} "
                               f"(in {max(until - now, 0):.0f}s; `updaterctl check APP "
                               "--force` asks again now)", until)
        if status in RETRY_STATUS:
            return Retryable(f"{url}: HTTP {status}",
                             parse_retry_after(response.headers.get("retry-after")))
        return DownloadError(f"{url}: HTTP {status}" + (f": {detail}" if detail else ""))

    # -- small documents ---------------------------------------------------------------------

    async def fetch_small(self, url: str, *, max_bytes: int, etag: str | None = None,
                          last_modified: str | None = None,
                          headers: dict[str, str] | None = None,
                          missing_ok: bool = False) -> Document:
        """GET a document of at most `max_bytes`, conditionally when validators are given;
        with `missing_ok`, a 404 or 410 answers `missing` instead of raising."""
        headers = dict(headers or {})
        if etag:
            headers["If-None-Match"] = etag
        if last_modified:
            headers["If-Modified-Since"] = last_modified

        async def attempt(_n: int) -> Document:
            async with self._open(url, headers) as r:
                if r.status_code == 304:
                    return Document(not_modified=True, etag=etag, last_modified=last_modified)
                if missing_ok and r.status_code in (404, 410):
                    return Document(missing=True)
                if r.status_code != 200:
                    raise self._status_error(url, r, await _error_detail(r))
                declared = r.headers.get("content-length")
                if declared and declared.isdigit() and int(declared) > max_bytes:
                    raise DownloadError(f"{url}: {declared} bytes is over the limit {max_bytes}")
                body = bytearray()
                try:
                    async for chunk in r.aiter_raw():
                        body += chunk
                        if len(body) > max_bytes:
                            raise DownloadError(f"{url}: more than {max_bytes} bytes; aborted")
                except httpx.TransportError as e:
                    raise Retryable(f"{url}: {type(e).__name__}: {e}") from None
                return Document(bytes(body), etag=r.headers.get("etag"),
                                last_modified=r.headers.get("last-modified"))

        return await self._retrying(url, attempt)

    # -- artifacts ---------------------------------------------------------------------------

    async def fetch_file(self, url: str, dest: Path, expected: Expected,
                       progress: ProgressFn | None = None,
                       headers: dict[str, str] | None = None) -> BinaryIO:
        """Download to `dest` (resuming `dest.part`), verify, and return it open for reading.

        The returned file is the very descriptor that was hashed; the caller closes it.
        """
        if dest.exists():
            f = await trio.to_thread.run_sync(cachefile.open_verified, dest, expected)
            if f is not None:
                return f
        deadline = parse_duration(self.limits.download_deadline)
        with trio.move_on_after(deadline) as scope:
            result = await self._retrying(url, lambda n: self._attempt(
                url, dest, expected, progress, n, headers or {}))
        if scope.cancelled_caught:
            raise DownloadError(f"{url}: not finished within {self.limits.download_deadline}")
        return result

    async def _attempt(self, url: str, dest: Path, expected: Expected,
                       progress: ProgressFn | None, attempt: int,
                       extra_headers: dict[str, str]) -> BinaryIO:
        part = dest.with_name(dest.name + ".part")
        meta_path = dest.with_name(dest.name + ".part.json")
        meta = _load_meta(meta_path)
        wanted = _PartMeta(url=url, size=expected.size, sha256=expected.sha256,
                           blake3=expected.blake3)
        fd = cachefile.open_partial(part)
        keep_fd = False
        offset = 0
        encoding: str | None = None
        try:
            offset = os.fstat(fd).st_size
            same = meta is not None and (meta.size, meta.sha256, meta.blake3) == (
                wanted.size, wanted.sha256, wanted.blake3)
            validator = _range_validator(meta) if meta and same else None
            if offset and (not same or offset > expected.size or not validator):
                log.info("%s: discarding partial download of %d bytes", dest.name, offset)
                os.ftruncate(fd, 0)
                offset = 0
            prehash = expected.signature is not None
            digests = Digests(prehash)
            if offset:
                await trio.to_thread.run_sync(digests.update_from_fd, fd, offset)
            headers = dict(extra_headers)
            if offset and validator:
                headers.update({"Range": f"bytes={offset}-", "If-Range": validator})
            async with self._open(url, headers) as r:
                if r.status_code == 416 and offset == expected.size:
                    pass  # the partial is already whole; checked below
                elif r.status_code == 206 and offset:
                    if not _content_range_ok(r.headers.get("content-range"), offset,
                                             expected.size):
                        os.ftruncate(fd, 0)
                        raise Retryable(f"{url}: wrong Content-Range "
                                        f"{r.headers.get('content-range')!r}; partial discarded")
                elif r.status_code == 200:
                    if offset:
                        log.info("%s: the server ignored the range (%s); starting over",
                                 dest.name, _why_no_range(r, validator))
                        os.ftruncate(fd, 0)
                        offset = 0
                        digests = Digests(prehash)
                else:
                    raise self._status_error(url, r, await _error_detail(r))
                wanted.etag = r.headers.get("etag")
                wanted.last_modified = r.headers.get("last-modified")
                encoding = _encoding_of(r)
                _save_meta(meta_path, wanted)
                if r.status_code != 416:
                    declared = r.headers.get("content-length")
                    if declared and declared.isdigit() and offset + int(declared) > expected.size:
                        raise DigestMismatch(f"{url}: server announces {offset + int(declared)} "
                                             f"bytes, more than the signed {expected.size}")
                    os.lseek(fd, offset, os.SEEK_SET)
                    await self._receive(url, r, fd, digests, expected, progress)
            if digests.size < expected.size and encoding is not None:
                raise DigestMismatch(f"{url}: the answer ended at {digests.size} of the signed "
                                     f"{expected.size} bytes")
            if digests.size < expected.size:
                raise Retryable(f"{url}: connection closed at {digests.size} of "
                                f"{expected.size} bytes")
            cachefile.verify_expected(dest.name, digests, expected)
            await trio.to_thread.run_sync(os.fsync, fd)
            done = cachefile.commit(fd, part, dest, [meta_path])
            keep_fd = True
            return done
        except DigestMismatch as e:
            # Nothing that failed verification is kept; a resumed file gets one fresh try.
            cachefile.discard(part)
            cachefile.discard(meta_path)
            if offset and attempt == 0:
                raise Retryable(f"{url}: resumed file failed verification; "
                                "starting over") from None
            raise self._encoded(e, encoding) from None
        except OSError as e:
            # A full or failing disk: not worth retrying now, and the partial only takes space.
            cachefile.discard(part)
            cachefile.discard(meta_path)
            raise DownloadError(f"{dest.parent}: {e.strerror or e} while downloading "
                                f"{dest.name}") from None
        finally:
            if not keep_fd:
                os.close(fd)

    async def _receive(self, url: str, r: httpx.Response, fd: int, digests: Digests,
                       expected: Expected, progress: ProgressFn | None) -> None:
        """Stream the body into `fd`, hashing as it arrives; enforce length and minimum speed."""
        sink = _Sink(fd, digests)
        try:
            # what was hashed before (a resumed partial) plus what arrives
            await self._body(url, r, digests.size, expected, progress, sink.add)
        finally:
            await sink.close()  # everything received is hashed and on disk, in order

    async def _body(self, url: str, r: httpx.Response, received: int, expected: Expected,
                    progress: ProgressFn | None,
                    consume: Callable[[bytes], Awaitable[None]]) -> int:
        """Hand each chunk of the body to `consume`, after `received` bytes already had;
        enforce the signed size, the rate caps and the minimum speed. Returns the bytes
        received in all."""
        window = parse_duration(self.limits.min_speed_window)
        min_bytes = parse_size(self.limits.min_speed) * window
        window_start, window_bytes = trio.current_time(), 0
        try:
            async for chunk in r.aiter_raw():
                if received + len(chunk) > expected.size:
                    raise DigestMismatch(f"{url}: more bytes than the signed {expected.size}; "
                                         "aborted")
                received += len(chunk)
                await consume(chunk)
                for cap in self.rate_caps:
                    await cap.consume(len(chunk))
                window_bytes += len(chunk)
                now = trio.current_time()
                if now - window_start >= window:
                    if window_bytes < min_bytes:
                        raise Retryable(f"{url}: slower than {self.limits.min_speed}/s "
                                        f"over {self.limits.min_speed_window}")
                    window_start, window_bytes = now, 0
                if progress is not None:
                    progress(received, expected.size)
        except httpx.TransportError as e:
            raise Retryable(f"{url}: {type(e).__name__}: {e or 'connection lost'}") from None
        return received

    # -- streaming installs ------------------------------------------------------------------

    async def stream(self, url: str, expected: Expected,
                     consume: Callable[[bytes], Awaitable[None]],
                     progress: ProgressFn | None = None) -> None:
        """Hand the artifact's bytes to `consume` in order, once each, as they arrive (a
        streaming install hashes and unpacks them on the way; nothing is kept here). A cut
        connection is resumed with Range and If-Range from the byte it stopped at; a server
        that cannot resume it raises `CannotResume` at once (the consumer has the first bytes
        already: starting over is the caller's choice)."""
        if expected.signature is not None:
            raise CannotResume(f"{url}: a detached signature is checked on the whole file")
        at = _Stream()
        deadline = parse_duration(self.limits.download_deadline)
        with trio.move_on_after(deadline) as scope:
            await self._retrying(url, lambda _n: self._stream_attempt(url, expected, consume,
                                                                      progress, at))
        if scope.cancelled_caught:
            raise DownloadError(f"{url}: not finished within {self.limits.download_deadline}")

    async def _stream_attempt(self, url: str, expected: Expected,
                              consume: Callable[[bytes], Awaitable[None]],
                              progress: ProgressFn | None, at: _Stream) -> None:
        headers: dict[str, str] = {}
        if at.received:
            if at.validator is None:
                raise CannotResume(f"{url}: cut at {at.received} of {expected.size} bytes, and "
                                   "the server gave no strong ETag or Last-Modified date to "
                                   "resume with")
            headers = {"Range": f"bytes={at.received}-", "If-Range": at.validator}
        async with self._open(url, headers) as r:
            if at.received and r.status_code == 200:
                why = _why_no_range(r, at.validator)
                raise CannotResume(f"{url}: cut at {at.received} of {expected.size} bytes, and "
                                   f"the server ignored the range ({why})")
            if at.received and r.status_code == 206:
                if not _content_range_ok(r.headers.get("content-range"), at.received,
                                         expected.size):
                    raise CannotResume(f"{url}: wrong Content-Range "
                                       f"{r.headers.get('content-range')!r} on a resume")
            elif r.status_code != 200:
                raise self._status_error(url, r, await _error_detail(r))
            else:
                at.validator = _range_validator(_PartMeta(
                    url=url, size=expected.size, sha256=None, blake3=None,
                    etag=r.headers.get("etag"), last_modified=r.headers.get("last-modified")))
                at.encoding = _encoding_of(r)
                declared = r.headers.get("content-length")
                if declared and declared.isdigit() and int(declared) > expected.size:
                    raise self._encoded(DigestMismatch(
                        f"{url}: server announces {declared} bytes, more than the signed "
                        f"{expected.size}"), at.encoding)
            try:  # `at.received` counts each chunk consumed: a cut resumes after the last
                await self._body(url, r, at.received, expected, progress,
                                 _counting(consume, at))
            except DigestMismatch as e:
                raise self._encoded(e, at.encoding) from None
        if at.received < expected.size:
            if at.encoding is not None:
                raise self._encoded(DigestMismatch(
                    f"{url}: the answer ended at {at.received} of the signed {expected.size} "
                    "bytes"), at.encoding)
            raise Retryable(f"{url}: connection closed at {at.received} of {expected.size} "
                            "bytes")

    @staticmethod
    def _encoded(e: DigestMismatch, encoding: str | None) -> DigestMismatch:
        """A size or digest refused, with the encoding on the way named when one was."""
        if encoding is None:
            return e
        return DigestMismatch(
            f"{e}; {encoding}: the server, or a cache or proxy in between, changed the file's "
            "encoding (updaterd asks for the file as it is, Accept-Encoding: identity). Serve "
            "artifacts without an encoding (docs/feed.md, Serving a feed)")


class CannotResume(DownloadError):
    """A streaming install's download was cut, and cannot go on from where it stopped."""


@dataclasses.dataclass
class _Stream:
    """How far one streaming download is, across its attempts."""

    received: int = 0
    validator: str | None = None  # what If-Range carries on a resume
    encoding: str | None = None  # what in the first answer says the bytes may be re-encoded


def _counting(consume: Callable[[bytes], Awaitable[None]],
              at: _Stream) -> Callable[[bytes], Awaitable[None]]:
    """`consume`, with `at.received` kept up to date chunk by chunk (a cut resumes there)."""

    async def each(chunk: bytes) -> None:
        await consume(chunk)
        at.received += len(chunk)

    return each


class _Sink:
    """Hashes and writes the received bytes on one worker thread, in order, ~1 MiB at a time.

    SHA-256, BLAKE3 and write(2) release the GIL, so they overlap the next network reads instead
    of taking turns with them on the event-loop thread. Each batch written is handed to the
    disk at once (`fsutil.start_writeback`), so the fsync before the rename does not find the
    whole file still to write (a 1 GiB download spent 0.5-0.8 s in that fsync). At most
    IN_FLIGHT batches wait; a worker error (a full disk) comes back through its future into the
    caller's except clauses. A batch is also written once it has waited HOLD seconds: on a
    slow link 1 MiB takes seconds to fill, and a kill -9 lost it all (at 300 KiB/s, a kill
    after 3 s kept nothing to resume from); at full speed a batch fills long before.
    """

    BATCH = 1 << 20
    IN_FLIGHT = 4
    HOLD = 0.25  # seconds a received byte may wait before write(2) hands it to the kernel

    def __init__(self, fd: int, digests: Digests) -> None:
        self.fd, self.digests = fd, digests
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="updaterd-sink")
        self.pending: deque[Future[None]] = deque()
        self.batch: list[bytes] = []
        self.batch_size = 0
        self.batch_since = 0.0  # when the first byte of the batch arrived

    def _consume(self, chunks: list[bytes]) -> None:
        # One joined buffer: three long calls that release the GIL, instead of many short ones
        # that keep handing it back and forth with the event-loop thread.
        view = memoryview(b"".join(chunks))
        self.digests.update(view)
        fsutil.write_all(self.fd, view)
        fsutil.start_writeback(self.fd, os.lseek(self.fd, 0, os.SEEK_CUR) - len(view), len(view))

    async def add(self, chunk: bytes) -> None:
        now = trio.current_time()
        if not self.batch:
            self.batch_since = now
        self.batch.append(chunk)
        self.batch_size += len(chunk)
        if self.batch_size >= self.BATCH or now - self.batch_since >= self.HOLD:
            await self._submit()

    async def _submit(self) -> None:
        if self.batch:
            self.pending.append(self.pool.submit(self._consume, self.batch))
            self.batch, self.batch_size = [], 0
        while self.pending and self.pending[0].done():
            self.pending.popleft().result()  # raise a worker error as early as it is known
        while len(self.pending) > self.IN_FLIGHT:
            await trio.to_thread.run_sync(self.pending.popleft().result)

    async def close(self) -> None:
        """Write out what was received; raises what the worker raised."""
        try:
            await self._submit()
            while self.pending:
                await trio.to_thread.run_sync(self.pending.popleft().result)
        finally:
            self.pool.shutdown(wait=True)  # a cancelled close still leaves an in-order prefix


def _encoding_of(response: httpx.Response) -> str | None:
    """What in an answer says the bytes may have been re-encoded on the way (None: nothing):
    a Content-Encoding label, or an answer that varies by encoding (Varnish decompresses what
    its origin compressed, drops the label, and keeps Vary and a weak ETag)."""
    label = response.headers.get("content-encoding", "").strip().lower()
    if label not in ("", "identity"):
        return f"the answer was labelled Content-Encoding: {label}"
    vary = response.headers.get("vary", "").lower()
    etag = response.headers.get("etag", "")
    if "accept-encoding" in vary and etag.startswith("W/"):
        return f"the answer varies by encoding (Vary: Accept-Encoding, weak ETag {etag})"
    return None


def _range_validator(meta: _PartMeta) -> str | None:
    """What `If-Range` may carry to resume: a strong ETag, else the Last-Modified date, else
    nothing (no resume). A weak ETag never matches there (RFC 9110 13.1.5): a server or
    cache then answers the whole file every time, and a download on a link that keeps
    breaking never finishes."""
    if meta.etag and not meta.etag.startswith("W/"):
        return meta.etag
    return meta.last_modified


def _why_no_range(response: httpx.Response, validator: str | None) -> str:
    """Why a resume (sent only with a validator) got the whole file, as far as the answer
    tells."""
    ranges = response.headers.get("accept-ranges", "").strip().lower()
    etag, modified = response.headers.get("etag"), response.headers.get("last-modified")
    if ranges == "none":
        return "it serves no ranges: Accept-Ranges: none"
    if validator is not None and validator not in (etag, modified):
        return f"the file changed since: If-Range {validator} no longer matches"
    return "the server or a cache in between answers ranges with the whole file"


def _content_range_ok(value: str | None, offset: int, size: int) -> bool:
    m = _CONTENT_RANGE.match(value or "")
    if not m:
        return False
    start, end, total = int(m.group(1)), int(m.group(2)), m.group(3)
    return start == offset and end == size - 1 and total in ("*", str(size))


class _ErrorBody(msgspec.Struct):
    """What an API says about a refusal (GitHub: {"message": "Bad credentials", ...})."""

    message: str


async def _error_detail(response: httpx.Response, cap: int = 4096) -> str:
    """The `message` of a small JSON error body, for the operator; "" when there is none."""
    if "json" not in response.headers.get("content-type", ""):
        return ""
    body = bytearray()
    with contextlib.suppress(httpx.HTTPError):
        async for chunk in response.aiter_raw():
            body += chunk
            if len(body) > cap:
                return ""
    try:
        return logtext.clean(msgspec.json.decode(bytes(body), type=_ErrorBody).message, 200)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return ""


def _load_meta(path: Path) -> _PartMeta | None:
    try:
        return msgspec.json.decode(path.read_bytes(), type=_PartMeta)
    except (OSError, msgspec.DecodeError, msgspec.ValidationError):
        return None


def _save_meta(path: Path, meta: _PartMeta) -> None:
    """Written by rename of a fresh private file: never through a link planted at `path`."""
    fsutil.atomic_write(path, msgspec.json.encode(meta), mode=0o600)
