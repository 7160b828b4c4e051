"""FeedSimulator: an in-memory signed feed that the engine reads through its own refresh, for
in-process tests of the engine and the transaction that run in milliseconds (as python-tuf's
RepositorySimulator). It builds releases, signs the manifest with its own key, serves the feed
and the artifacts as a transport (below the sources: the engine's `refresh`, kept copy, "not
modified" answers and key rotations all run), and counts what was asked of it.

The real-process tests (nginx, the daemon, kill -9) stay the end-to-end proof; these test one
behaviour of the engine at a time.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import tarfile
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, BinaryIO

import blake3
import msgspec
import trio
import zstandard

from tests.helpers import release_files, write_config
from updaterd.engine.engine import Engine
from updaterd.errors import FeedError
from updaterd.host import configfile
from updaterd.host.config import AppConfig, Config
from updaterd.install import delta
from updaterd.net.cachefile import Expected, ProgressFn, write_verified
from updaterd.net.document import Document, Validators
from updaterd.release.publish import delta_files
from updaterd.trust import minisign
from updaterd.trust.feed import MANIFEST, SIGNATURE, Artifact, Manifest, Release, is_marker

PLATFORM = "linux-x86_64"


def tar_gz(files: dict[str, tuple[bytes, int]], top: str) -> bytes:
    """A .tar.gz of `files` (path -> (content, mode)) under the folder `top`, in memory."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name, (data, mode) in files.items():
            info = tarfile.TarInfo(f"{top}/{name}")
            info.size, info.mode = len(data), mode
            tf.addfile(info, io.BytesIO(data))
    return gzip.compress(buf.getvalue(), mtime=0)


@dataclass
class FeedSimulator:
    """A signed feed held in memory. `release` adds a version and signs again; `requests`
    counts the manifest fetches ("manifest") and each artifact's (by name)."""

    app: str = "hello"
    key: minisign.SecretKey = field(default_factory=minisign.SecretKey.generate)
    serial: int = 0
    expires: datetime = field(default_factory=lambda: datetime.now(UTC) + timedelta(days=7))
    releases: list[Release] = field(default_factory=list)
    blobs: dict[str, bytes] = field(default_factory=dict)
    requests: Counter[str] = field(default_factory=Counter)
    documents: dict[str, bytes] = field(default_factory=dict)  # beside the manifest: keys.json
    documents_asked: Counter[str] = field(default_factory=Counter)
    documents_not_modified: Counter[str] = field(default_factory=Counter)
    not_modified: int = 0  # manifest requests answered "not modified"
    # a cache in front: what it serves for a name (the signature, a document) unless the
    # request says no-cache; and the names asked with no-cache
    stale: dict[str, bytes] = field(default_factory=dict)
    fresh_asked: Counter[str] = field(default_factory=Counter)
    raw: bytes = b""
    signature: bytes = b""

    @property
    def public_key(self) -> str:
        return self.key.public.to_base64()

    def release(self, version: str, *, healthy: bool = True, rollout: int = 100,
                files: dict[str, tuple[bytes, int]] | None = None,
                deltas: int = 0) -> Artifact:
        """Add `version` (the sample app of the tests unless `files` are given), signed; with
        `deltas`, a delta descriptor and packs from that many releases before it, as
        `updaterd publish` writes them."""
        data = tar_gz(files or release_files(version, healthy), f"{self.app}-{version}")
        name = f"{self.app}-{version}-{PLATFORM}.tar.gz"
        artifact = self.add_blob(name, data, PLATFORM)
        release = Release(version=version, published=datetime.now(UTC), rollout=rollout,
                          artifacts=[artifact])
        with tempfile.TemporaryDirectory(prefix="feed-simulator-") as tmp:
            folder = Path(tmp)
            for r in self.releases:
                for a in r.artifacts:
                    if not is_marker(a):
                        (folder / a.url).write_bytes(self.blobs[a.url])
            (folder / name).write_bytes(data)
            for blob, raw in delta_files(folder, self.app, version, artifact, self.releases,
                                     deltas):
                added = self.add_blob(blob, raw, delta.descriptor_platform(PLATFORM))
                if blob.endswith(".delta.zst"):
                    release.artifacts.append(added)
        self.releases.append(release)
        self.sign()
        return artifact

    def add_blob(self, name: str, data: bytes, platform: str) -> Artifact:
        """Serve `data` as `name`; returns it as the manifest lists it."""
        self.blobs[name] = data
        return Artifact(platform=platform, url=name, size=len(data),
                        sha256=hashlib.sha256(data).hexdigest(),
                        blake3=blake3.blake3(data).hexdigest())

    def replace_signed(self, name: str, data: bytes) -> None:
        """Serve other bytes as `name` and list their digests in the manifest, signed: what a
        publisher who made a mistake (or whose build machine was taken) would serve."""
        for r in self.releases:
            r.artifacts = [self.add_blob(name, data, a.platform) if a.url == name else a
                           for a in r.artifacts]
        self.sign()

    def descriptor_name(self, version: str) -> str:
        return f"{self.app}-{version}-{PLATFORM}.tar.gz.delta.zst"

    def descriptor(self, version: str) -> delta.Descriptor:
        return delta.decode(self.blobs[self.descriptor_name(version)], self.app, version)

    def replace_descriptor(self, version: str, desc: delta.Descriptor | bytes) -> None:
        """Serve another descriptor (or other JSON), signed."""
        raw = desc if isinstance(desc, bytes) else msgspec.json.encode(desc)
        self.replace_signed(self.descriptor_name(version),
                            zstandard.ZstdCompressor().compress(raw))

    def sign(self, key: minisign.SecretKey | None = None, serial: int | None = None) -> None:
        """Encode the manifest with the next serial (or `serial`) and sign it."""
        self.serial = self.serial + 1 if serial is None else serial
        manifest = Manifest(schema=1, app=self.app, serial=self.serial, expires=self.expires,
                            releases=self.releases)
        self.raw = msgspec.json.encode(manifest)
        comment = f"timestamp:0\tfile:manifest.json\tapp:{self.app}"
        self.signature = (key or self.key).sign(self.raw, comment).encode()

    def etag(self) -> str:
        """What a web server would send as the manifest's ETag: it changes with its bytes."""
        return '"' + hashlib.sha256(self.raw).hexdigest()[:16] + '"'

    # -- the Transport protocol -----------------------------------------------------------------

    def transport(self, app: str, cfg: AppConfig) -> SimulatedTransport:
        """What the engine's `transports` hook returns for an app."""
        return SimulatedTransport(self)


@dataclass
class SimulatedTransport:
    """The simulator as a web server would serve its feed: the manifest and its signature
    (answering "not modified" to the ETag of the same bytes), documents beside it (a key set
    in `sim.documents`), and the artifacts. Everything the engine does with a real feed
    (`refresh`, the kept copy, key rotations) runs on it."""

    sim: FeedSimulator
    remote = True
    origin: str | None = None

    async def document(self, name: str, cap: int, *, missing_ok: bool = False,
                       validators: Validators | None = None, fresh: bool = False) -> Document:
        await trio.lowlevel.checkpoint()
        if fresh:
            self.sim.fresh_asked[name] += 1
        if name == MANIFEST:
            self.sim.requests["manifest"] += 1
            if validators is not None and validators[0] == self.sim.etag():
                self.sim.not_modified += 1
                return Document(not_modified=True, etag=validators[0])
            return Document(self.sim.raw, etag=self.sim.etag())
        self.sim.documents_asked[name] += 1
        body = self.sim.signature if name == SIGNATURE else self.sim.documents.get(name)
        if name in self.sim.stale and not fresh:
            body = self.sim.stale[name]
        if body is None:
            if missing_ok:
                return Document(missing=True)
            raise FeedError(f"{name}: not in the simulated feed")
        if len(body) > cap:
            raise FeedError(f"{name}: more than {cap} bytes")
        etag = '"' + hashlib.sha256(body).hexdigest()[:16] + '"'
        if validators is not None and validators[0] == etag:
            self.sim.documents_not_modified[name] += 1
            return Document(not_modified=True, etag=etag)
        return Document(body, etag=etag)

    def describe(self, name: str) -> str:
        return f"the simulator's {name}"

    async def file(self, name: str, dest: Path, expected: Expected,
                   progress: ProgressFn | None) -> BinaryIO:
        """The bytes held for this artifact, written and checked as a real download is."""
        self.sim.requests[name] += 1
        await trio.lowlevel.checkpoint()
        data = self.sim.blobs.get(name)
        if data is None:
            raise FeedError(f"{name}: not in the simulated feed")
        f = write_verified([data], dest, expected, name)
        if progress is not None:
            progress(len(data), len(data))
        return f


@dataclass
class SimHost:
    """A temporary host (prefix, state, cache) whose one app follows a FeedSimulator, and the
    engine that serves it, in this process."""

    base: Path
    sim: FeedSimulator
    events: list[Any] = field(default_factory=list)

    @property
    def prefix(self) -> Path:
        return self.base / "opt" / "hello"

    def configure(self, **app: Any) -> Config:
        feed_dir = self.base / "feed"  # never read: the simulator is the source
        feed_dir.mkdir(parents=True, exist_ok=True)
        table = {"source": "directory", "path": str(feed_dir), "prefix": str(self.prefix),
                 "public_keys": [self.sim.public_key], "health_check": ["bin/hello"],
                 "health_timeout": "10s", **app}
        daemon = {"state_dir": str(self.base / "state"), "cache_dir": str(self.base / "cache"),
                  "lock_file": str(self.base / "updaterd.lock"),
                  "socket": str(self.base / "updaterd.sock"), "host_id": "test-host",
                  "platform": PLATFORM}
        path = write_config(self.base / "updaterd.toml", daemon, {"hello": table})
        return configfile.load(path)

    def engine(self, **app: Any) -> Engine:
        return Engine(self.configure(**app), self.events.append, transports=self.sim.transport)

    def current(self) -> str | None:
        link = self.prefix / "current"
        return os.readlink(link).split("/")[-1] if link.is_symlink() else None

    def releases(self) -> list[str]:
        folder = self.prefix / "releases"
        return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []

    def leftovers(self) -> list[str]:
        """What a finished operation must not leave: staging folders, temp and part files."""
        found = [str(p) for p in (self.prefix / ".staging").glob("*")]
        cache = self.base / "cache" / "hello"
        if cache.is_dir():
            found += [str(p) for p in cache.iterdir() if p.name.endswith(".part")]
        return found
