"""The feed's trust checks (pure): signature on raw bytes first, strict schema, app, expiry
against the cycle start, serial high-water mark, safe names."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from updaterd.errors import FeedError
from updaterd.release.publish import keygen
from updaterd.trust import feed, minisign, signed

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
    from updaterd.release.publish import publish

    _, key = keygen(str(tmp_path / "k"))
    art = tmp_path / "a-linux-x86_64.tar.gz"
    art.write_bytes(b"x")
    feed_dir = tmp_path / "feed"
    mtimes = []
    for version in ("1.0.0", "1.0.1", "1.0.2"):
        publish(feed_dir=feed_dir, key_path=key, app="a", version=version, artifacts=[art])
        mtimes.append(int((feed_dir / "manifest.json").stat().st_mtime))
    assert mtimes[0] < mtimes[1] < mtimes[2]


# -- the edges (each of these kills a mutant that the tests above let live) ----------------------

@pytest.mark.parametrize("where", ["manifest", "release", "artifact"])
def test_an_unknown_field_is_refused_at_every_level(key: minisign.SecretKey, where: str) -> None:
    m = manifest()
    {"manifest": m, "release": m["releases"][0],
     "artifact": m["releases"][0]["artifacts"][0]}[where]["surprise"] = 1
    with pytest.raises(FeedError, match="schema 1: Object contains unknown field `surprise`"):
        check(key, raw_of(m))


@pytest.mark.parametrize("digests", [{"sha256": DIGEST}, {"blake3": DIGEST},
                                     {"sha256": DIGEST, "blake3": DIGEST}])
def test_one_known_digest_is_enough(key: minisign.SecretKey, digests: dict[str, str]) -> None:
    m = manifest()
    m["releases"][0]["artifacts"][0] = {"platform": "linux-x86_64", "url": "a.tar.gz",
                                        "size": 1, **digests}
    check(key, raw_of(m))


def test_the_digest_check_names_the_artifact_and_release(key: minisign.SecretKey) -> None:
    m = manifest()
    m["releases"][0]["artifacts"].append({"platform": "linux-arm64", "url": "b.tar.gz",
                                          "size": 1})
    with pytest.raises(FeedError, match=r"artifact 'b\.tar\.gz' of 1\.3\.0 lists no known digest"):
        check(key, raw_of(m))


def test_without_keys_an_unsigned_feed_is_accepted_only_when_allowed() -> None:
    t = feed.verify_manifest(raw_of(manifest()), None, keys=[], app="demo", stored_serial=None,
                             stored_digest=None, cycle_start=NOW, require_signature=False)
    assert t.manifest.app == "demo"


def test_a_bad_signature_is_refused_with_the_reason(key: minisign.SecretKey,
                                                    tmp_path: Path) -> None:
    _, other = keygen(str(tmp_path / "other"))
    stranger = minisign.SecretKey.parse(other.read_text())
    raw = raw_of(manifest())
    with pytest.raises(FeedError, match="manifest signature refused: "):
        check(key, raw, sig=stranger.sign(raw, "t").encode())


@pytest.mark.parametrize(("raw", "message"), [
    (b"[" * 100_000, "manifest is nested too deeply"),
    (b'{"schema": 1,', "manifest is not valid JSON: "),
    (b"\xff", "manifest is not valid JSON: ")])
def test_broken_json_is_named_before_the_schema(key: minisign.SecretKey, raw: bytes,
                                                message: str) -> None:
    with pytest.raises(FeedError) as e:
        check(key, raw)
    assert str(e.value).startswith(message)


def test_duplicate_keys_are_refused_at_any_depth_and_named() -> None:
    with pytest.raises(FeedError, match="checksums has the key 'a' twice"):
        signed.reject_duplicate_keys(b'{"x": [{"a": 1, "a": 2}]}', "checksums")
    signed.reject_duplicate_keys(b'{"a": {"a": 1}, "b": [{"a": 2}]}')


def test_expiry_is_exclusive_and_a_naive_time_is_utc(key: minisign.SecretKey) -> None:
    at = datetime(2026, 12, 28, tzinfo=UTC)
    with pytest.raises(FeedError, match=r"expired at 2026-12-28T00:00:00\+00:00"):
        check(key, raw_of(manifest()), at=at)
    check(key, raw_of(manifest()), at=at - timedelta(microseconds=1))
    naive = raw_of(manifest(expires="2026-12-28T00:00:00"))
    with pytest.raises(FeedError, match="expired"):
        check(key, naive, at=at)
    check(key, naive, at=at - timedelta(seconds=1))


def test_serial_edges(key: minisign.SecretKey) -> None:
    raw = raw_of(manifest(serial=5))
    assert not check(key, raw, serial=4).unchanged
    assert check(key, raw, serial=5, digest=None).unchanged
    with pytest.raises(FeedError, match="serial 5 is below 6 already seen"):
        check(key, raw, serial=6)
    assert check(key, raw, serial=0).manifest.serial == 5
    zero = raw_of(manifest(serial=0))
    assert check(key, zero, serial=0).unchanged


def test_the_digest_is_the_sha256_of_the_raw_bytes(key: minisign.SecretKey) -> None:
    import hashlib

    raw = raw_of(manifest())
    assert check(key, raw).digest == hashlib.sha256(raw).hexdigest()


@pytest.mark.parametrize("url", ["https://cdn.example/a/demo.tar.gz",
                                 "demo_1.3.0+b.tar.zst", "a" * 255])
def test_safe_artifact_names_pass(key: minisign.SecretKey, url: str) -> None:
    m = manifest()
    m["releases"][0]["artifacts"][0]["url"] = url
    check(key, raw_of(m))


@pytest.mark.parametrize("url", ["https://cdn.example/../demo.tar.gz", "a" * 256,
                                 "https://cdn.example/a/", ".tar.gz", "x/..?y=/a.tar.gz"])
def test_more_unsafe_artifact_names(key: minisign.SecretKey, url: str) -> None:
    m = manifest()
    m["releases"][0]["artifacts"][0]["url"] = url
    with pytest.raises(FeedError, match="not a safe name"):
        check(key, raw_of(m))


def test_every_release_is_checked_not_only_the_first(key: minisign.SecretKey) -> None:
    m = manifest()
    bad = json.loads(json.dumps(m["releases"][0]))
    bad["version"] = "../2.0.0"
    m["releases"].append(bad)
    with pytest.raises(FeedError, match=r"release version '\.\./2\.0\.0' is not a safe name"):
        check(key, raw_of(m))


def test_release_lookup_by_version_and_channel() -> None:
    import msgspec

    m = manifest()
    beta = json.loads(json.dumps(m["releases"][0]))
    beta["channel"] = "beta"
    beta["version"] = "1.4.0"
    m["releases"].append(beta)
    doc = msgspec.json.decode(raw_of(m), type=feed.Manifest)
    assert doc.release("1.4.0") is doc.releases[1]
    assert doc.release("1.4.0", "beta") is doc.releases[1]
    assert doc.release("1.4.0", "stable") is None
    assert doc.release("1.3.0", "stable") is doc.releases[0]
    assert doc.release("9.9.9") is None


def test_encode_is_canonical() -> None:
    import msgspec

    doc = msgspec.json.decode(raw_of(manifest()), type=feed.Manifest)
    out = feed.encode(doc)
    assert out.endswith(b"}\n") and out.startswith(b'{\n  "app": "demo"')
    assert feed.encode(msgspec.json.decode(out, type=feed.Manifest)) == out


def test_serial_bounds_are_those_of_a_signed_64_bit_integer(key: minisign.SecretKey) -> None:
    assert check(key, raw_of(manifest(serial=2**63 - 1))).manifest.serial == 2**63 - 1
    for bad in (-1, 2**63):
        with pytest.raises(FeedError, match="schema 1"):
            check(key, raw_of(manifest(serial=bad)))


def test_a_lookup_finds_exactly_the_version_and_channel_asked_for() -> None:
    import msgspec

    m = manifest()
    first = m["releases"][0]
    m["releases"] = [dict(first, version=v, channel=c) for v, c in
                     (("1.4.0", "stable"), ("1.3.0", "alpha"), ("1.3.0", "beta"),
                      ("1.3.0", "stable"))]
    doc = msgspec.json.decode(raw_of(m), type=feed.Manifest)
    assert doc.release("1.3.0") is doc.releases[1]
    assert doc.release("1.3.0", "beta") is doc.releases[2]
    assert doc.release("1.3.0", "stable") is doc.releases[3]
    assert doc.release("1.2.0") is None
    m["releases"] = [dict(first, channel="stable"), dict(first, channel="beta")]
    doc = msgspec.json.decode(raw_of(m), type=feed.Manifest)
    assert doc.release("1.3.0", "beta") is doc.releases[1]


def test_a_trusted_feed_cannot_be_changed_after_the_checks(key: minisign.SecretKey) -> None:
    t = check(key, raw_of(manifest()))
    with pytest.raises(AttributeError):
        t.unchanged = True  # type: ignore[misc]


def test_json_that_only_msgspec_refuses_is_named(key: minisign.SecretKey) -> None:
    with pytest.raises(FeedError, match="manifest is not valid JSON: "):
        check(key, b'{"schema": NaN}')


@pytest.mark.parametrize("expected", ["alpha", "zulu"])
def test_another_apps_manifest_is_refused_whatever_the_names(key: minisign.SecretKey,
                                                             expected: str) -> None:
    with pytest.raises(FeedError, match=f"for app 'demo', not '{expected}'"):
        check(key, raw_of(manifest()), app=expected)


@pytest.mark.parametrize("stored", ["0" * 64, "f" * 64])
def test_same_serial_other_content_is_refused_whatever_the_digests(key: minisign.SecretKey,
                                                                   stored: str) -> None:
    with pytest.raises(FeedError, match="seen before with different content"):
        check(key, raw_of(manifest()), serial=5, digest=stored)


def test_an_expiry_with_an_offset_is_compared_as_an_instant(key: minisign.SecretKey) -> None:
    raw = raw_of(manifest(expires="2026-12-28T02:00:00+02:00"))  # midnight UTC
    with pytest.raises(FeedError, match="expired"):
        check(key, raw, at=datetime(2026, 12, 28, 0, 0, tzinfo=UTC))
    check(key, raw, at=datetime(2026, 12, 27, 23, 59, tzinfo=UTC))


def _release_with(**fields: Any) -> dict[str, Any]:
    m = manifest()
    for k, v in fields.items():
        if k in ("url", "size"):
            m["releases"][0]["artifacts"][0][k] = v
        elif v is None:
            del m["releases"][0][k]
        else:
            m["releases"][0][k] = v
    return m


@pytest.mark.parametrize(("field", "good", "bad"), [
    ("url", ["a", "a" * 2048], ["", "a" * 2049]),
    ("size", [0, 2**50], [-1, 2**50 + 1]),
    ("version", ["1", "1" * 128], ["", "1" * 129]),
    ("rollout", [0, 100], [-1, 101])])
def test_schema_bounds_at_their_edges(key: minisign.SecretKey, field: str, good: list[Any],
                                      bad: list[Any]) -> None:
    for value in good:
        m = _release_with(**{field: value})
        if field == "url" and len(value) > 255:
            with pytest.raises(FeedError, match="not a safe name"):  # the schema let it in
                check(key, raw_of(m))
        else:
            check(key, raw_of(m))
    for value in bad:
        with pytest.raises(FeedError, match="schema 1"):
            check(key, raw_of(_release_with(**{field: value})))


def test_a_release_without_rollout_goes_to_every_host(key: minisign.SecretKey) -> None:
    t = check(key, raw_of(_release_with(rollout=None)))
    assert t.manifest.releases[0].rollout == 100


def test_rollout_json_bounds_are_held_by_its_schema() -> None:
    """rollout.json (guarded rollout): every bound of the schema, at and past its edge."""
    import msgspec

    def doc(**over: Any) -> bytes:
        entry = {"share": 100, "state": "active", "since": "2026-12-04T10:00:00Z", "why": ""}
        entry.update(over.pop("entry", {}))
        base = {"schema": 1, "app": "demo", "serial": 0, "expires": "2026-12-05T10:00:00Z",
                "releases": {"1.0.0": entry}}
        base.update(over)
        return json.dumps(base).encode()

    def ok(raw: bytes) -> bool:
        try:
            msgspec.json.decode(raw, type=feed.RolloutDoc, strict=True)
        except msgspec.ValidationError:
            return False
        return True

    assert ok(doc()) and ok(doc(entry={"share": 0})) and ok(doc(serial=2**63 - 1))
    assert not ok(doc(entry={"share": 101})) and not ok(doc(entry={"share": -1}))
    assert ok(doc(entry={"why": "x" * 500})) and not ok(doc(entry={"why": "x" * 501}))
    assert not ok(doc(serial=-1)) and not ok(doc(serial=2**63)) and not ok(doc(schema=2))
    assert not ok(doc(entry={"state": "paused"})) and not ok(doc(entry={"url": "x"}))
    assert not ok(doc(artifacts=[{"url": "evil.tar.gz"}])), "no field but its own, anywhere"
    many = {f"1.0.{i}": {"share": 1, "since": "2026-12-04T10:00:00Z"} for i in range(256)}
    assert ok(doc(releases=many))
    many["1.1.0"] = many["1.0.0"]
    assert not ok(doc(releases=many))
    assert msgspec.json.decode(doc(entry={"state": None}).replace(b', "state": null', b""),
                               type=feed.RolloutDoc).releases["1.0.0"].state == "active"


def test_marker_entries_are_the_yank_and_the_rollout_key_alone() -> None:
    def entry(platform: str) -> feed.Artifact:
        return feed.Artifact(platform=platform, url="x", size=0, sha256="0" * 64)

    assert feed.is_marker(entry("yanked")) and feed.is_marker(entry("rollout-key"))
    assert not feed.is_marker(entry("linux-x86_64"))
    assert not feed.is_marker(entry("linux-x86_64.delta"))
