"""`updaterd feed check URL|DIR...`: read a served feed as a host would, and check every byte.

For a publisher after an upload or a CDN change: the signature with the keys given, the strict
schema, the expiry (a warning within 7 days), then every artifact, descriptor and pack against
its signed size and digests, and rollout.json where releases name rollout keys; given several
origins of one feed (its URL and mirrors), each, and then each against the newest. One line
per problem; nothing is written anywhere.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Protocol
from urllib.parse import urljoin

from updaterd import fsutil
from updaterd.errors import (
    DigestMismatch,
    DownloadError,
    FeedError,
    SignatureError,
    UpdaterError,
)
from updaterd.host.config import Limits
from updaterd.install import delta
from updaterd.trust import digests, feed, minisign, rollout, tlstrust, urlpolicy

if TYPE_CHECKING:
    import httpx

WARN_BEFORE = timedelta(days=7)
MAX_MANIFEST = 4 << 20


class Readable(Protocol):
    def read(self, n: int = -1, /) -> bytes: ...


@dataclass
class Report:
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    serial: int | None = None  # of a manifest that verified
    digest: str | None = None  # sha256 of its bytes
    rollout_serial: int | None = None  # of a rollout.json that verified


class _Folder:
    """A feed folder, read as hosts read one: plain files only, never through a link."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def where(self, name: str) -> str:
        return str(self.root / name)

    @contextmanager
    def open(self, name: str) -> Iterator[Readable]:
        try:
            fd = os.open(self.root / name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK
                         | os.O_CLOEXEC)
        except FileNotFoundError:
            raise FileNotFoundError("missing") from None
        except OSError as e:
            why = "a symbolic link" if e.errno == errno.ELOOP else e.strerror
            raise OSError(f"{why}; hosts read plain files only") from None
        with os.fdopen(fd, "rb") as f:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise OSError("not a plain file; hosts read plain files only")
            yield f


class _Web:
    """A served feed, fetched as hosts fetch it: the host's trust store, redirects followed by
    hand with every hop under the URL policy, so a CDN that sends hosts to plain http, a
    metadata address or round in circles is a problem here too, not a pass."""

    def __init__(self, base: str, ca_file: str | None = None) -> None:
        import httpx  # only a check of a served feed needs it

        self.base = base if base.endswith("/") else base + "/"
        self.client = httpx.Client(timeout=30, follow_redirects=False,
                                   verify=tlstrust.context(ca_file))
        self.max_redirects = Limits().max_redirects

    def where(self, name: str) -> str:
        return urljoin(self.base, name)

    @contextmanager
    def open(self, name: str) -> Iterator[Readable]:
        import httpx

        url = self.where(name)
        try:
            with self._get(url) as r:  # the caller names the URL: the errors do not
                if r.status_code in (404, 410):
                    raise FileNotFoundError(f"missing (HTTP {r.status_code})")
                if r.status_code != 200:
                    raise OSError(f"HTTP {r.status_code}")
                yield _Stream(r.iter_raw(fsutil.COPY_CHUNK))
        except httpx.HTTPError as e:
            raise OSError(str(e) or type(e).__name__) from None
        except DownloadError as e:  # the URL policy's word, as a host would log it
            raise OSError(str(e).removeprefix(f"{url}: ")) from None

    @contextmanager
    def _get(self, url: str) -> Iterator[httpx.Response]:
        # plain http passes only to loopback, as on a host with allow_insecure = true
        for _hop in range(self.max_redirects + 1):
            urlpolicy.require_allowed(url, allow_insecure=True)
            with self.client.stream("GET", url) as r:
                if r.status_code not in urlpolicy.REDIRECT_STATUS:
                    yield r
                    return
                location = r.headers.get("location", "")
            url = urlpolicy.redirect_target(url, location)
        raise DownloadError(f"{url}: more than {self.max_redirects} redirects")


class _Stream:
    """Just enough of a file over an iterator of chunks: read(n)."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self.chunks, self.left = chunks, b""

    def read(self, n: int = -1, /) -> bytes:
        while n < 0 or len(self.left) < n:
            chunk = next(self.chunks, b"")
            if not chunk:
                break
            self.left += chunk
        out, self.left = (self.left, b"") if n < 0 else (self.left[:n], self.left[n:])
        return out


def _read(place: _Folder | _Web, name: str, cap: int) -> bytes:
    with place.open(name) as f:
        data = f.read(cap + 1)
    if len(data) > cap:
        raise FeedError(f"{place.where(name)} is larger than {cap} bytes")
    return data


def _hash(place: _Folder | _Web, name: str, limit: int) -> digests.Digests:
    d = digests.Digests()
    with place.open(name) as f:
        while chunk := f.read(fsutil.COPY_CHUNK):
            d.update(chunk)
            if d.size > limit:  # no more than one byte past what was signed
                break
    return d


def check(target: str, public_keys: list[str], threshold: int = 1,
          now: datetime | None = None, ca_file: str | None = None) -> Report:
    """Every problem a host would meet with the feed at `target` (a URL or a folder), for a
    host trusting `public_keys`: the feed's key rotations are followed from them, as a host
    configured with them follows them."""
    now = now or datetime.now(UTC)
    report = Report()
    place: _Folder | _Web = _Web(target, ca_file) if "://" in target else \
        _Folder(Path(target))
    try:
        keys = [minisign.PublicKey.parse(k) for k in public_keys]
    except ValueError as e:
        report.problems.append(f"public key: {e}")
        return report
    try:
        raw = _read(place, feed.MANIFEST, MAX_MANIFEST)
        sig = _read(place, feed.SIGNATURE, 64 << 10)
        keys, threshold = _rotated(place, _app(raw), keys, threshold, report)
        minisign.verify_threshold(raw, sig, keys, threshold)  # before anything is decoded
        trusted = feed.verify_manifest(raw, sig, keys=keys, threshold=threshold, app=_app(raw),
                                       stored_serial=None, stored_digest=None,
                                       cycle_start=now, require_signature=True)
    except SignatureError as e:
        report.problems.append(f"{place.where(feed.MANIFEST)}: signature refused: {e}")
        return report
    except (OSError, UpdaterError) as e:
        report.problems.append(f"{place.where(feed.MANIFEST)}: {e}")
        return report
    m = trusted.manifest
    report.serial, report.digest = m.serial, trusted.digest
    left = m.expires - now
    report.notes.append(f"{m.app}: serial {m.serial}, {len(m.releases)} releases, expires "
                        f"{m.expires:%Y-%m-%d %H:%M} UTC")
    if left < WARN_BEFORE:
        report.problems.append(f"the manifest expires in {left.days}d {left.seconds // 3600}h: "
                               "hosts refuse it then (`updaterd feed resign`)")
    _check_rollout(place, m, now, report)
    for release in m.releases:
        for a in release.artifacts:
            if feed.is_marker(a):  # no file: a yank or a rollout key (`feed list` shows them)
                continue
            name = a.url
            what = f"{release.version} {a.platform}: {place.where(name)}"
            try:
                d = _hash(place, name, a.size)
                d.require_match(what, a.size, a.sha256, a.blake3)
            except FileNotFoundError:
                report.problems.append(f"{what}: missing")
                continue
            except (OSError, DigestMismatch) as e:
                report.problems.append(str(e) if isinstance(e, DigestMismatch) else
                                       f"{what}: {e}")
                continue
            if a.platform.endswith(delta.SUFFIX):
                _check_packs(place, release.version, m.app, name, report)
    return report


def _check_rollout(place: _Folder | _Web, m: feed.Manifest, now: datetime,
                   report: Report) -> None:
    """rollout.json, when the manifest's releases name rollout keys: as hosts check it (a
    missing one is no problem: guarded releases then reach no new host)."""
    keys = rollout.declared(m)
    if not keys:
        return
    try:
        raw = _read(place, rollout.DOCUMENT, rollout.MAX_DOCUMENT)
    except FileNotFoundError:
        report.notes.append(f"{rollout.DOCUMENT}: none (guarded releases reach no new host)")
        return
    except (OSError, UpdaterError) as e:
        report.problems.append(f"{place.where(rollout.DOCUMENT)}: {e}")
        return
    try:
        sig = _read(place, rollout.DOCUMENT + ".minisig", 64 << 10)
    except FileNotFoundError:
        sig = None
    except (OSError, UpdaterError) as e:
        report.problems.append(f"{place.where(rollout.DOCUMENT + '.minisig')}: {e}")
        return
    try:
        accepted = rollout.verify(raw, sig, keys, app=m.app, mark=None, cycle_start=now)
    except (FeedError, SignatureError) as e:
        report.problems.append(f"{place.where(rollout.DOCUMENT)}: {e} (hosts move no release "
                               "by it)")
        return
    report.rollout_serial = accepted.doc.serial
    report.notes.append(f"{rollout.DOCUMENT}: serial {accepted.doc.serial}, expires "
                        f"{accepted.doc.expires:%Y-%m-%d %H:%M} UTC")


def compare_origins(reports: dict[str, Report]) -> None:
    """The origins of one feed (its URL and mirrors) against each other, as a host that has
    seen the newest sees them: an origin behind it is passed over (stale), and one with other
    bytes under the same serial is refused by every host that saw the first. Each problem is
    added to that origin's report."""
    serials = {t: r.serial for t, r in reports.items() if r.serial is not None}
    if not serials:
        return
    newest = max(serials.values())
    ahead = next(t for t, n in serials.items() if n == newest)
    for target, report in reports.items():
        if report.serial is None:
            continue
        if report.serial < newest:
            report.problems.append(f"{target}: stale: serial {report.serial}, where {ahead} has "
                                   f"{newest}; hosts that saw {newest} pass this origin over")
        elif report.digest != reports[ahead].digest:
            report.problems.append(f"{target}: serial {newest} with other bytes than {ahead}; "
                                   "hosts that saw one refuse the other (publish to one place, "
                                   "then copy)")
    marks = {t: r.rollout_serial for t, r in reports.items() if r.rollout_serial is not None}
    if not marks:
        return
    newest_mark = max(marks.values())
    ahead = next(t for t, n in marks.items() if n == newest_mark)
    for target, n in marks.items():
        if n < newest_mark:
            reports[target].problems.append(
                f"{target}: {rollout.DOCUMENT} serial {n}, where {ahead} has {newest_mark}: "
                "a recall, halt or share signed since reaches the hosts that ask this origin "
                "only when it is synced")


def _check_packs(place: _Folder | _Web, version: str, app: str, name: str,
                 report: Report) -> None:
    try:
        desc = delta.decode(_read(place, name, delta.MAX_DESCRIPTOR), app, version)
    except (OSError, UpdaterError) as e:
        report.problems.append(f"{place.where(name)}: {e}")
        return
    for pack in desc.packs:
        what = f"{version} delta from {pack.base}: {place.where(pack.url)}"
        try:
            d = _hash(place, pack.url, pack.size)
            d.require_match(what, pack.size, None, pack.blake3)
        except FileNotFoundError:
            report.problems.append(f"{what}: missing")
        except (OSError, DigestMismatch) as e:
            report.problems.append(str(e) if isinstance(e, DigestMismatch) else f"{what}: {e}")


def _rotated(place: _Folder | _Web, app: str, keys: list[minisign.PublicKey], threshold: int,
             report: Report) -> tuple[list[minisign.PublicKey], int]:
    """The keys a host that trusts `keys` verifies the manifest with: `keys.json` and the
    rotations before it, walked as a host walks them (`sources.keys.follow` into a trusted
    set); a rotation a host would refuse is a problem here."""
    from datetime import UTC, datetime

    import trio

    from updaterd.sources import keys as rotations
    from updaterd.trust.rotation import KEYS, MAX_KEYS_SIZE, Keys
    from updaterd.trust.trustedset import TrustedSet

    trust = TrustedSet(app, Keys(keys, threshold, 0), now=datetime.now(UTC))

    async def fetch(name: str) -> tuple[bytes, bytes | None] | None:
        try:
            doc = _read(place, name, MAX_KEYS_SIZE)
        except FileNotFoundError:
            return None
        try:
            sig: bytes | None = _read(place, f"{name}.minisig", minisign.MAX_SIGNATURE_FILE)
        except FileNotFoundError:
            sig = None
        return doc, sig

    walk = trio.run(rotations.follow, trust, fetch)
    if walk.stopped is not None:
        report.problems.append(f"{place.where(KEYS)}: {walk.stopped}")
    use = trust.keys
    assert use is not None  # a set opened with keys keeps keys
    if use.version:
        report.notes.append(f"{KEYS}: the keys given rotate to version {use.version} "
                            f"({len(use.keys)} keys, threshold {use.threshold}), as on a host")
    return use.keys, use.threshold


def _app(raw: bytes) -> str:
    """The app the manifest names (the signature is what proves anything)."""
    import msgspec

    class _Named(msgspec.Struct):
        app: str = ""

    try:
        return msgspec.json.decode(raw, type=_Named).app
    except (msgspec.DecodeError, msgspec.ValidationError):
        return ""
