"""The feed's trust checks (pure): signature on raw bytes first, strict schema, app, expiry
against the cycle start, serial high-water mark, safe names."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from updaterd import feed, minisign
from updaterd.errors import FeedError
from updaterd.publish import keygen

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
DIGEST = "ab" * 32


def manifest(**over: Any) -> dict[str, Any]:
    m: dict[str, Any] = {
        "schema": 1, "app": "demo", "serial": 5, "expires": "2026-12-28T00:00:00Z",
        "releases": [{"version": "1.3.0", "published": "2026-11-28T12:00:00Z",
                      "channel": "stable", "notes": "n", "rollout": 100,
                      "artifacts": [{"platform": "linux-x86_64", "url": "demo-1.3.0.tar.zst",
                                     "size": 10, "sha256": DIGEST, "blake3": DIGEST}]}]}
    m.update(over)
    return m


@pytest.fixture
def key(tmp_path: Path) -> minisign.SecretKey:
    _, k = keygen(str(tmp_path / "k"))
    return minisign.SecretKey.parse(k.read_text())


def check(key: minisign.SecretKey, raw: bytes, *, serial: int | None = None,
          digest: str | None = None, at: datetime = NOW, sig: bytes | None = None,
          app: str = "demo") -> feed.TrustedFeed:
    signature = sig if sig is not None else key.sign(raw, "t").encode()
    return feed.verify_manifest(raw, signature, keys=[key.public], app=app, stored_serial=serial,
                                stored_digest=digest, cycle_start=at, require_signature=True)


def raw_of(m: dict[str, Any]) -> bytes:
    return json.dumps(m).encode()


def test_good_manifest_is_trusted(key: minisign.SecretKey) -> None:
    t = check(key, raw_of(manifest()))
    assert t.manifest.serial == 5 and not t.unchanged


def test_a02_signature_checked_on_raw_bytes_before_decode(key: minisign.SecretKey) -> None:
    raw = raw_of(manifest())
    sig = key.sign(raw, "t").encode()
    with pytest.raises(FeedError, match="signature"):
        check(key, raw + b" ", sig=sig)  # same JSON meaning, other bytes


def test_a03_missing_signature_rejected(key: minisign.SecretKey) -> None:
    with pytest.raises(FeedError, match="missing"):
        feed.verify_manifest(raw_of(manifest()), None, keys=[key.public], app="demo",
                             stored_serial=None, stored_digest=None, cycle_start=NOW,
                             require_signature=True)


def test_a06_lower_serial_rejected(key: minisign.SecretKey) -> None:
    with pytest.raises(FeedError, match="below 6"):
        check(key, raw_of(manifest()), serial=6)


def test_a07_same_serial_other_bytes_rejected_same_bytes_unchanged(
        key: minisign.SecretKey) -> None:
    raw = raw_of(manifest())
    first = check(key, raw)
    assert check(key, raw, serial=5, digest=first.digest).unchanged
    with pytest.raises(FeedError, match="different content"):
        check(key, raw_of(manifest(expires="2026-12-29T00:00:00Z")), serial=5,
              digest=first.digest)


def test_a09_expired_at_cycle_start_rejected(key: minisign.SecretKey) -> None:
    raw = raw_of(manifest())
    with pytest.raises(FeedError, match="expired"):
        check(key, raw, at=datetime(2026, 12, 28, tzinfo=UTC))
    # expiry crossed after the cycle started: the fixed start time decides
    assert check(key, raw, at=datetime(2026, 12, 27, 23, 59, tzinfo=UTC))


def test_a10_clock_in_1970_still_enforces_serial(key: minisign.SecretKey) -> None:
    with pytest.raises(FeedError, match="below"):
        check(key, raw_of(manifest()), serial=9, at=datetime(1970, 1, 1, tzinfo=UTC))
    with pytest.raises(FeedError, match="expired"):
        check(key, raw_of(manifest()), at=datetime(2100, 1, 1, tzinfo=UTC))


@pytest.mark.parametrize("change", [
    {"schema": 2}, {"extra": 1}, {"serial": "5"}, {"releases": "x"}, {"expires": "soon"},
], ids=["schema", "unknown-field", "mistyped", "releases", "expires"])
def test_a11_strict_schema(key: minisign.SecretKey, change: dict[str, Any]) -> None:
    with pytest.raises(FeedError, match="schema"):
        check(key, raw_of(manifest(**change)))


def test_a11_missing_field(key: minisign.SecretKey) -> None:
    m = manifest()
    del m["serial"]
    with pytest.raises(FeedError, match="serial"):
        check(key, raw_of(m))


def test_a12_duplicate_keys_rejected(key: minisign.SecretKey) -> None:
    raw = raw_of(manifest()).replace(b'"serial": 5', b'"serial": 5, "serial": 99')
    with pytest.raises(FeedError, match="twice"):
        check(key, raw)


def test_a16_artifact_without_known_digest_rejected(key: minisign.SecretKey) -> None:
    m = manifest()
    m["releases"][0]["artifacts"][0] = {"platform": "linux-x86_64", "url": "a.tar.gz",
                                        "size": 1}
    with pytest.raises(FeedError, match="no known digest"):
        check(key, raw_of(m))


def test_a19_manifest_for_another_app_rejected(key: minisign.SecretKey) -> None:
    with pytest.raises(FeedError, match="for app 'demo', not 'other'"):
        check(key, raw_of(manifest()), app="other")


@pytest.mark.parametrize("version", ["../1.0", "1.0/x", ".1.0", "a\0b", "x" * 300, "1 0"])
def test_a20_unsafe_version_rejected(key: minisign.SecretKey, version: str) -> None:
    m = manifest()
    m["releases"][0]["version"] = version
    with pytest.raises(FeedError):
        check(key, raw_of(m))


@pytest.mark.parametrize("url", ["../x.tar.gz", "sub/.hidden", "a b.tar.gz"])
def test_a20_unsafe_artifact_name_rejected(key: minisign.SecretKey, url: str) -> None:
    m = manifest()
    m["releases"][0]["artifacts"][0]["url"] = url
    with pytest.raises(FeedError, match="not a safe name"):
        check(key, raw_of(m))


def test_a13_nesting_bomb_rejected_cleanly(key: minisign.SecretKey) -> None:
    with pytest.raises(FeedError):
        check(key, b"[" * 100_000)


def test_unsigned_feed_refused_when_signature_required() -> None:
    with pytest.raises(FeedError, match="must be signed"):
        feed.verify_manifest(raw_of(manifest()), None, keys=[], app="demo", stored_serial=None,
                             stored_digest=None, cycle_start=NOW - timedelta(days=1),
                             require_signature=True)


def test_publishing_twice_in_a_second_still_changes_the_validators(tmp_path: Path) -> None:
    """nginx's ETag is mtime (seconds) and size: two quick publishes must not look the same."""
    from updaterd.publish import publish

    _, key = keygen(str(tmp_path / "k"))
    art = tmp_path / "a-linux-x86_64.tar.gz"
    art.write_bytes(b"x")
    feed_dir = tmp_path / "feed"
    mtimes = []
    for version in ("1.0.0", "1.0.1", "1.0.2"):
        publish(feed_dir=feed_dir, key_path=key, app="a", version=version, artifacts=[art])
        mtimes.append(int((feed_dir / "manifest.json").stat().st_mtime))
    assert mtimes[0] < mtimes[1] < mtimes[2]
