"""`source = "github"`: the GitHub Releases REST API (and GitHub Enterprise through `api_url`).

The latest release (or, with `prerelease = true`, the newest non-draft one) is fetched
conditionally; its first asset matching `asset` is the artifact. When it is to be installed, it
is trusted through a checksum
asset (`checksums`, sha256sum or b3sum form, signed by `public_keys` when keys are set) and/or a
detached minisign signature (`signature`, e.g. "{asset}.minisig"). The token goes only to the API
host, never to the storage host an asset download redirects to, and is never logged.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, BinaryIO

import msgspec
import trio

from updaterd import versions
from updaterd.errors import DigestMismatch, DownloadError, FeedError, RateLimited, SignatureError
from updaterd.host import tokens
from updaterd.host.config import AppConfig, Limits
from updaterd.host.state import AppState
from updaterd.net.cachefile import Expected, ProgressFn
from updaterd.net.fetcher import Fetcher
from updaterd.sources import verified
from updaterd.trust import checksums, minisign, urlpolicy
from updaterd.trust.feed import SAFE_FILE_NAME, Artifact, Manifest, Release, TrustedFeed
from updaterd.trust.trustedset import TrustedSet
from updaterd.units import parse_size

CACHED = "github.json"
SMALL = 1 << 20  # checksum files and signatures
# Caps on what the API says (H148): GitHub itself allows 1,000 assets a release and names
# of 255 characters; a longer one is never matched against the operator's pattern.
MAX_ASSETS = 1000
MAX_NAME = 1024
MAX_URL = 2048
Name = Annotated[str, msgspec.Meta(max_length=MAX_NAME)]
Url = Annotated[str, msgspec.Meta(max_length=MAX_URL)]


class GitHubAsset(msgspec.Struct):
    """The fields of a release asset that updaterd uses (the API sends many more)."""

    name: Name
    url: Url
    size: Annotated[int, msgspec.Meta(ge=0)]
    browser_download_url: Url = ""
    content_type: Name = ""


class GitHubRelease(msgspec.Struct):
    tag_name: Annotated[str, msgspec.Meta(max_length=256)]
    draft: bool = False
    prerelease: bool = False
    published_at: Annotated[str, msgspec.Meta(max_length=64)] | None = None
    assets: Annotated[list[GitHubAsset], msgspec.Meta(max_length=MAX_ASSETS)] = []


def binds_version(text: str, tag: str) -> bool:
    """Whether signed text (a trusted comment, an asset name from a signed checksum file) names
    this release by its version token: the tag less a leading `v`, starting with a digit, found
    as a whole token, so `1.0.0` is not found in `11.0.0`, `1.0.0.1` or `1.0.0rc1` (G133).

    The rest of a tag binds nothing: the API chooses tags, so a tag `tool-1.0.0` (or one spelled
    as a whole asset name) would otherwise be "named" by any old signed asset (H146)."""
    version = version_token(tag)
    if version is None:
        return False
    pattern = rf"(?<![0-9A-Za-z.])[vV]?{re.escape(version)}(?![0-9A-Za-z]|\.[0-9])"
    return re.search(pattern, text) is not None


def version_token(tag: str) -> str | None:
    """The version number a tag carries (`v1.2.3` -> `1.2.3`), None when it carries none."""
    version = tag_version(tag)
    return version if version[:1].isdigit() else None


def tag_version(tag: str) -> str:
    """A tag becomes a version by dropping a leading `v`."""
    return tag[1:] if tag[:1] in ("v", "V") and tag[1:2].isdigit() else tag


class GitHubSource:
    """One repository's releases."""

    def __init__(self, app: str, cfg: AppConfig, limits: Limits, fetcher: Fetcher,
                 state_folder: Path) -> None:
        assert cfg.repo is not None
        self.app, self.cfg, self.limits, self.fetcher = app, cfg, limits, fetcher
        self.state_folder = state_folder
        self.base = f"{cfg.api_url.rstrip('/')}/repos/{cfg.repo}"
        self.keys = [minisign.PublicKey.parse(k) for k in cfg.public_keys] \
            if cfg.verify == "required" else []
        if cfg.allowed_hosts is not None:  # the API host, and the storage hosts listed
            fetcher.allowed_hosts = {urlpolicy.origin(cfg.api_url)[1], *cfg.allowed_hosts}
        self.assets: dict[str, GitHubAsset] = {}
        self.signatures: dict[str, bytes] = {}
        self.release: GitHubRelease | None = None

    def _token(self) -> str | None:
        return tokens.get(self.cfg)

    def _headers(self, url: str, accept: str = "application/vnd.github+json") -> dict[str, str]:
        """The token goes to the configured API origin only, whatever URL the API's JSON
        names for an asset (G134)."""
        headers = {"Accept": accept, "X-GitHub-Api-Version": "2022-11-28"}
        token = self._token()
        if token and urlpolicy.origin(url) == urlpolicy.origin(self.cfg.api_url):
            headers["Authorization"] = f"Bearer {token}"
        return headers

    async def _small_asset(self, asset: GitHubAsset) -> bytes:
        if asset.size > SMALL:
            raise FeedError(f"{asset.name}: {asset.size} bytes is too large for a checksum "
                            "file or a signature")
        doc = await self.fetcher.fetch_small(asset.url, max_bytes=SMALL,
                                             headers=self._headers(asset.url,
                                                                   "application/octet-stream"))
        return doc.body

    async def fetch(self, state: AppState, trust: TrustedSet) -> TrustedFeed:
        """The newest release as a one-release manifest. `trust` is not used: a release here
        has no signed manifest, serial or rotation; its checksums and signatures are checked
        with the configured keys when its artifact is fetched."""
        if state.rate_limited_until and state.rate_limited_until > time.time():
            when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(state.rate_limited_until))
            raise RateLimited(f"GitHub rate limit: no request until {when} (`updaterctl "
                              f"check {self.app} --force` asks again now)",
                              state.rate_limited_until)
        url = self.base + ("/releases?per_page=30" if self.cfg.prerelease else "/releases/latest")
        copy = verified.load_copy(self.state_folder, CACHED)
        cached = copy[0] if copy is not None else None
        doc = await self.fetcher.fetch_small(
            url, max_bytes=parse_size(self.limits.max_manifest_size),
            etag=state.etag if cached is not None else None,
            last_modified=state.last_modified if cached is not None else None,
            headers=self._headers(url))
        body = cached if doc.not_modified and cached is not None else doc.body
        release = self._pick(body)
        # the operator's pattern may be slow on odd names: never on the event loop (H148)
        asset = await trio.to_thread.run_sync(self._choose_asset, release)
        cap = parse_size(self.cfg.max_artifact_size)
        if asset.size > cap:
            raise FeedError(f"{self.cfg.repo} {release.tag_name}: {asset.name} announces "
                            f"{asset.size} bytes, more than max_artifact_size "
                            f"({self.cfg.max_artifact_size}); nothing was downloaded")
        version = tag_version(release.tag_name)
        if not versions.is_safe_name(version):
            raise FeedError(f"tag {release.tag_name!r} cannot name a release folder")
        self.release = release
        if not doc.not_modified:
            verified.keep_copy(self.state_folder, body, None, CACHED)
        published = _parse_time(release.published_at)
        manifest = Manifest(schema=1, app=self.app, serial=0,
                            expires=datetime.now(UTC) + timedelta(days=3650),
                            releases=[Release(version=version, published=published,
                                              channel=self.cfg.channel,
                                              artifacts=[Artifact(platform="any", url=asset.name,
                                                                  size=asset.size)])])
        return TrustedFeed(manifest=manifest, digest=hashlib.sha256(body).hexdigest(),
                           unchanged=doc.not_modified,
                           validators=None if doc.not_modified else
                           (doc.etag, doc.last_modified))

    def _pick(self, body: bytes) -> GitHubRelease:
        try:
            if self.cfg.prerelease:
                listed = msgspec.json.decode(body, type=list[GitHubRelease])
                candidates = [r for r in listed if not r.draft]
                if not candidates:
                    raise FeedError(f"{self.cfg.repo} has no published release")
                return candidates[0]
            release = msgspec.json.decode(body, type=GitHubRelease)
        except (msgspec.DecodeError, msgspec.ValidationError) as e:
            raise FeedError(f"{self.cfg.repo}: unexpected answer from the releases API: {e}") \
                from None
        if release.draft or release.prerelease:
            raise FeedError(f"{self.cfg.repo} {release.tag_name}: a draft or prerelease, and "
                            "prerelease = false")
        return release

    def _choose_asset(self, release: GitHubRelease) -> GitHubAsset:
        assert self.cfg.asset is not None
        pattern = re.compile(self.cfg.asset)
        self.assets = {a.name: a for a in release.assets}
        for a in release.assets:
            if not SAFE_FILE_NAME.fullmatch(a.name):
                continue  # never a file name of ours, so never matched (and never slow)
            if pattern.search(a.name):
                return a
        raise FeedError(f"{self.cfg.repo} {release.tag_name}: no asset matches "
                        f"{self.cfg.asset!r}")

    def _unbound(self, signed: str, tag: str) -> str:
        if version_token(tag) is None:
            return (f"{self.cfg.repo} {tag}: the tag has no version number that the signed "
                    f"{signed} could name, so its age cannot be proven: refused (tag releases "
                    "as v1.2.3 or 1.2.3)")
        return (f"{self.cfg.repo} {tag}: the signed {signed} does not name {tag}: an older "
                "signed release republished under a new tag is refused (put the version in "
                "the asset's name or in the signature's trusted comment, minisign -t)")

    async def _trusted_digest(self, release: GitHubRelease,
                              asset: GitHubAsset) -> tuple[str | None, str | None]:
        """The asset's digest from a (signed) checksum file, and/or its signature fetched.

        Signed material must name this release's tag or version (G133)."""
        sha256 = blake3 = None
        signed = False
        if self.cfg.checksums:
            pattern = re.compile(self.cfg.checksums)
            listing = next((a for a in release.assets if SAFE_FILE_NAME.fullmatch(a.name)
                            and pattern.search(a.name)), None)
            if listing is None:
                raise FeedError(f"{self.cfg.repo} {release.tag_name}: no checksum asset "
                                f"matches {self.cfg.checksums!r}")
            text = await self._small_asset(listing)
            if self.keys:
                sig_asset = self.assets.get(listing.name + ".minisig")
                if sig_asset is not None:
                    try:
                        verified = minisign.verify_threshold(
                            text, await self._small_asset(sig_asset), self.keys,
                            self.cfg.threshold)
                    except SignatureError as e:
                        raise FeedError(f"{listing.name}: signature refused: {e}") from None
                    # The signed file names the asset exactly, so a version in the asset's
                    # name is signed too; else the trusted comment must name it.
                    comments = [v.trusted_comment for v in verified]
                    if not binds_version(asset.name, release.tag_name) and \
                            not all(binds_version(c, release.tag_name) for c in comments):
                        raise FeedError(self._unbound(listing.name, release.tag_name))
                    signed = True
            digest = checksums.digest_for(text.decode("utf-8", "replace"), listing.name,
                                          asset.name)
            if checksums.algorithm(listing.name) == "blake3":
                blake3 = digest
            else:
                sha256 = digest
        if self.cfg.signature and self.keys:
            name = self.cfg.signature.replace("{asset}", asset.name)
            sig_asset = self.assets.get(name)
            if sig_asset is None:
                raise FeedError(f"{self.cfg.repo} {release.tag_name}: signature asset {name} "
                                "is missing")
            self.signatures[asset.name] = await self._small_asset(sig_asset)
            signed = True
        if self.cfg.verify == "required":
            if self.keys and not signed:
                raise FeedError(f"{asset.name}: public_keys are set but neither a signed "
                                "checksum file (<checksums>.minisig) nor an asset signature "
                                "was found")
            if sha256 is None and blake3 is None and not signed:
                raise FeedError(f"{asset.name}: nothing to verify it with; configure "
                                "checksums = 'SHA256SUMS' and/or signature = '{asset}.minisig' "
                                "with public_keys (or verify = \"skip\", which is unsafe)")
        return sha256, blake3

    def streams(self, artifact: Artifact) -> bool:
        return False  # the checksums and signature assets are checked on the whole file

    async def stream_artifact(self, artifact: Artifact, expected: Expected,
                              consume: Callable[[bytes], Awaitable[None]],
                              progress: ProgressFn | None) -> None:
        raise DownloadError(f"{self.describe(artifact)}: a GitHub asset is not streamed")

    def stream_refused(self, artifact: Artifact) -> bool:
        return False

    def describe(self, artifact: Artifact) -> str:
        asset = self.assets.get(artifact.url)
        return asset.url if asset else artifact.url

    async def fetch_artifact(self, artifact: Artifact, dest: Path, expected: Expected,
                       progress: ProgressFn | None) -> BinaryIO:
        """Establish trust (checksum file, signatures) only now that something is installed."""
        asset = self.assets[artifact.url]
        assert self.release is not None
        sha256, blake3 = await self._trusted_digest(self.release, asset)
        signature = self.signatures.get(asset.name)
        verify_signature = None
        if signature is not None:
            keys, threshold = self.keys, self.cfg.threshold
            tag = self.release.tag_name
            unbound = self._unbound(f"signature of {asset.name}", tag)

            def verify_signature(prehash: bytes) -> None:
                try:
                    verified = minisign.verify_prehashed(prehash, signature, keys, threshold)
                except SignatureError as e:
                    raise DigestMismatch(f"{asset.name}: signature refused: {e}") from None
                if not all(binds_version(v.trusted_comment, tag) for v in verified):
                    raise DigestMismatch(unbound)

        exp = Expected(asset.size, sha256, blake3, signature=verify_signature)
        return await self.fetcher.fetch_file(asset.url, dest, exp, progress,
                                           headers=self._headers(asset.url,
                                                                 "application/octet-stream"))


def _parse_time(text: str | None) -> datetime:
    if text:
        try:
            return datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            pass
    return datetime.now(UTC)
