"""Rows A5 and A23-A25 of the catalogue: signature thresholds, key rotation signed by old and
new keys, revocation. The end-to-end rows run the real `updaterd` against a feed nginx serves."""

from __future__ import annotations

import base64
import json
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import Host, Nginx
from tests.helpers import Feed, run_updaterd
from updaterd.errors import FeedError, SignatureError
from updaterd.host import trustroot
from updaterd.host.config import AppConfig
from updaterd.host.state import AppState
from updaterd.release.publish import keygen, publish, rotate_keys
from updaterd.trust import minisign
from updaterd.trust.feed import MANIFEST, SIGNATURE


def _key(tmp_path: Path, name: str) -> tuple[Path, Path, minisign.SecretKey]:
    pub, key = keygen(str(tmp_path / name), force=True)
    return pub, key, minisign.SecretKey.parse(key.read_text())


def _pub_line(pub: Path) -> str:
    return pub.read_text().splitlines()[1]


def _with_key_id(sig_text: str, key_id: bytes) -> str:
    """The same signature block, claiming another key id."""
    lines = sig_text.splitlines()
    blob = base64.b64decode(lines[1])
    lines[1] = base64.b64encode(blob[:2] + key_id + blob[10:]).decode()
    return "\n".join(lines) + "\n"


# -- A5: thresholds ----------------------------------------------------------------------------

def test_a05_threshold_two_met_by_one_key_twice_is_rejected(tmp_path: Path) -> None:
    pub, _, secret = _key(tmp_path, "a")
    data = b"manifest bytes\n"
    block = secret.sign(data, "t")
    with pytest.raises(SignatureError, match="1 distinct trusted keys, 2 needed"):
        minisign.verify_threshold(data, (block + block).encode(),
                                  [minisign.PublicKey.parse(pub.read_text())], 2)
    # two signatures of the same key made at different times are still one key
    again = secret.sign(data, "other comment")
    with pytest.raises(SignatureError, match="2 needed"):
        minisign.verify_threshold(data, (block + again).encode(),
                                  [minisign.PublicKey.parse(pub.read_text())], 2)


def test_a05_one_public_key_under_two_ids_counts_once(tmp_path: Path) -> None:
    pub, _, secret = _key(tmp_path, "a")
    key = minisign.PublicKey.parse(pub.read_text())
    alias = minisign.PublicKey(key_id=b"\x01" * 8, raw=key.raw)
    data = b"manifest bytes\n"
    block = secret.sign(data, "t")
    twice = block + _with_key_id(block, alias.key_id)
    with pytest.raises(SignatureError, match="1 distinct trusted keys, 2 needed"):
        minisign.verify_threshold(data, twice.encode(), [key, alias], 2)
    # and the configuration refuses such a pair as two keys toward a threshold
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[apps.x]\nsource = "directory"\npath = "{tmp_path}"\nprefix = "/opt/x"\n'
                   f'public_keys = ["{key.to_base64()}", "{alias.to_base64()}"]\n'
                   'threshold = 2\n')
    r = run_updaterd("--config", cfg, "check-config")
    assert r.returncode == 2
    assert "apps.x.threshold: 2 signatures needed but public_keys holds 1 distinct keys" \
        in r.stderr


def test_a05_two_distinct_keys_meet_the_threshold(tmp_path: Path) -> None:
    pa, _, a = _key(tmp_path, "a")
    pb, _, b = _key(tmp_path, "b")
    ring = [minisign.PublicKey.parse(p.read_text()) for p in (pa, pb)]
    data = b"manifest bytes\n"
    both = (a.sign(data, "t") + b.sign(data, "t")).encode()
    assert len(minisign.verify_threshold(data, both, ring, 2)) == 2
    # a malformed block anywhere fails the file, even when enough others verify
    with pytest.raises(SignatureError, match="malformed"):
        minisign.verify_threshold(data, both + b"untrusted comment: x\n!!\n", ring, 1)


def test_a05_threshold_feed_end_to_end(host: Host, nginx: Nginx, served_feed: Feed,
                                       tmp_path: Path) -> None:
    """threshold = 2: a feed signed by one key is refused, by both it installs."""
    pb, kb, _ = _key(tmp_path, "second")
    art = served_feed.release("1.0.0")
    host.follow(nginx, served_feed, public_keys=[served_feed.pub, _pub_line(pb)],
                threshold=2)
    r = run_updaterd("--config", host.config, "--once")
    assert r.returncode == 1
    assert "signed by 1 distinct trusted keys, 2 needed" in r.stderr
    assert host.current() is None
    # the same release signed by both: a re-signature (publishing the same bytes again is a
    # no-op since H155)
    assert art.exists()
    r = run_updaterd("feed", "resign", "--feed", served_feed.folder, "--key", served_feed.key,
                     "--key", kb)
    assert r.returncode == 0, r.stderr
    r = run_updaterd("--config", host.config, "--once")
    assert r.returncode == 0, r.stderr
    assert host.current() == "1.0.0"


def test_a05_minisign_tool_reads_the_first_of_several_signatures(tmp_path: Path,
                                                                 served_feed: Feed) -> None:
    """A threshold-signed manifest still verifies with the real minisign (first signer)."""
    _, kb, _ = _key(tmp_path, "second")
    art = served_feed.work / "x-1.0.0-linux-x86_64.tar.gz"
    art.write_bytes(b"not really a tarball")
    publish(feed_dir=served_feed.folder, key_path=[served_feed.key, kb], app="hello",
            version="1.0.0", artifacts=[art])
    pub_file = served_feed.work / "feed.pub"
    r = subprocess.run(["minisign", "-V", "-p", str(pub_file), "-m",
                        str(served_feed.folder / MANIFEST), "-x",
                        str(served_feed.folder / SIGNATURE)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


# -- A23-A25: rotation and revocation ----------------------------------------------------------

def _cfg(pubs: list[str], threshold: int = 1) -> AppConfig:
    return AppConfig(source="directory", path="/x", prefix="/opt/x", public_keys=pubs,
                     threshold=threshold)


def _apply(app: str, cfg: AppConfig, state: AppState, raw: bytes, sig: bytes | None) -> bool:
    """One rotation taken as a host's refresh takes it: by the trusted set the engine opens
    from the app's state, and kept in the state as the engine keeps it."""
    trust = trustroot.trusted_set(app, cfg, state, time.time())
    try:
        return trust.rotate(raw, sig)
    finally:
        trustroot.keep(cfg, state, trust)


def _first_rotation(feed: Path, new: Path, sign_with: list[Path],
                    app: str = "x") -> tuple[bytes, bytes]:
    """keys.json version 1 (and its signature) to `new`, signed by `sign_with`, written by
    hand: `rotate-keys` itself refuses a set that hosts would refuse (H156)."""
    from updaterd.trust import feed as feed_mod
    from updaterd.trust.rotation import KEYS, KeySet
    (feed / KEYS).unlink(missing_ok=True)
    pub = minisign.PublicKey.parse(new.read_text()).to_base64()
    raw = feed_mod.encode(KeySet(schema=1, app=app, version=1, keys=[pub], threshold=1))
    sig = "".join(minisign.SecretKey.parse(k.read_text()).sign(raw, "test")
                  for k in sign_with).encode()
    return raw, sig


def test_a24_rotation_signed_by_the_new_key_only_is_rejected(tmp_path: Path) -> None:
    p1, k1, _ = _key(tmp_path, "k1")
    p2, k2, _ = _key(tmp_path, "k2")
    cfg, state = _cfg([_pub_line(p1)]), AppState(serial=7)
    feed = tmp_path / "feed"
    with pytest.raises(FeedError, match="not signed by the keys in use"):
        _apply("x", cfg, state, *_first_rotation(feed, p2, [k2]))
    assert state.trust is None and state.serial == 7
    # signed by the old key only: the new keys never agreed to it
    with pytest.raises(FeedError, match="not signed by its own new keys"):
        _apply("x", cfg, state, *_first_rotation(feed, p2, [k1]))
    assert state.trust is None and state.serial == 7
    # signed by both: accepted, serial high-water mark reset
    raw, sig = _first_rotation(feed, p2, [k1, k2])
    assert _apply("x", cfg, state, raw, sig)
    assert state.trust is not None and state.trust.version == 1 and state.serial is None
    assert [k.to_base64() for k in trustroot.in_use(cfg, state).keys] == [_pub_line(p2)]
    assert not _apply("x", cfg, state, raw, sig), "the same rotation again is a no-op"


def test_a24_rotation_for_another_app_or_malformed_is_rejected(tmp_path: Path) -> None:
    p1, k1, s1 = _key(tmp_path, "k1")
    p2, k2, s2 = _key(tmp_path, "k2")
    cfg = _cfg([_pub_line(p1)])
    raw, sig = _first_rotation(tmp_path / "f", p2, [k1, k2], app="other")
    with pytest.raises(FeedError, match="for app 'other'"):
        _apply("x", cfg, AppState(), raw, sig)
    doubled = b'{"schema": 1, "app": "x", "version": 1, "version": 2, "keys": []}'
    both = (s1.sign(doubled, "t") + s2.sign(doubled, "t")).encode()
    with pytest.raises(FeedError, match="twice"):
        _apply("x", cfg, AppState(), doubled, both)
    with pytest.raises(FeedError, match="signature is missing"):
        _apply("x", cfg, AppState(), raw, None)


def test_a23_stolen_key_huge_serial_is_recovered_by_a_rotation(
        host: Host, nginx: Nginx, served_feed: Feed, tmp_path: Path) -> None:
    """The thief's serial 2^53 freezes the honest feed until old+new keys rotate; then the
    honest releases install and the stolen key is worthless (A25)."""
    served_feed.release("1.0.0")
    host.follow(nginx, served_feed)
    assert run_updaterd("--config", host.config, "--once").returncode == 0
    honest = {n: (served_feed.folder / n).read_bytes() for n in (MANIFEST, SIGNATURE)}
    # the thief signs a manifest with a huge serial using the stolen (current) key
    m = served_feed.manifest()
    m["serial"] = 2**53
    (served_feed.folder / MANIFEST).write_text(json.dumps(m))
    served_feed.resign()
    assert run_updaterd("--config", host.config, "--once").returncode == 0
    assert host.state()["serial"] == 2**53
    # the honest publisher's next release is refused: its serial is below the mark
    for name, data in honest.items():
        (served_feed.folder / name).write_bytes(data)
    served_feed.release("1.1.0")
    r = run_updaterd("--config", host.config, "--once")
    assert r.returncode == 1 and "below" in r.stderr
    assert host.current() == "1.0.0"
    # rotation to a new key, signed by the old and the new key; the feed is re-signed by it
    p2, k2, _ = _key(tmp_path, "k2")
    r = run_updaterd("rotate-keys", "--feed", served_feed.folder, "--app", "hello",
                     "--new-key", p2, "--sign", served_feed.key, "--sign", k2)
    assert r.returncode == 0 and "key set version 1" in r.stdout, r.stderr
    old_key, served_feed.key = served_feed.key, k2
    served_feed.release("1.2.0")
    r = run_updaterd("--config", host.config, "--once", "-v")
    assert r.returncode == 0, r.stderr
    assert "key rotation to version 1 accepted" in r.stderr
    assert host.current() == "1.2.0"
    state = host.state()
    assert state["trust"]["version"] == 1 and state["trust"]["keys"] == [_pub_line(p2)]
    assert state["serial"] < 2**53
    # A25: the revoked (stolen) key signs a newer manifest: refused, nothing changes
    m = served_feed.manifest()
    m["serial"] = 2**53 + 1
    m["releases"][-1]["version"] = "6.6.6"
    (served_feed.folder / MANIFEST).write_text(json.dumps(m))
    served_feed.key = old_key
    served_feed.resign()
    r = run_updaterd("--config", host.config, "--once")
    assert r.returncode == 1 and "unknown key" in r.stderr
    assert host.current() == "1.2.0" and host.state()["serial"] == state["serial"]


def test_a25_revoked_key_signs_a_newer_manifest(host: Host, nginx: Nginx, served_feed: Feed,
                                                 tmp_path: Path) -> None:
    """Keys left out of a rotation are revoked, even though the configuration lists them."""
    served_feed.release("1.0.0")
    p2, k2, _ = _key(tmp_path, "k2")
    host.follow(nginx, served_feed)
    assert run_updaterd("--config", host.config, "--once").returncode == 0
    rotate_keys(feed_dir=served_feed.folder, app="hello", new_keys=[p2],
                sign_with=[served_feed.key, k2])
    # still signed by the old key, after the rotation (as a thief would, past publish's check)
    served_feed.release("1.1.0", new_key=True)
    r = run_updaterd("--config", host.config, "--once")
    assert r.returncode == 1 and "unknown key" in r.stderr
    assert host.current() == "1.0.0"
    assert host.state()["trust"]["version"] == 1


def test_missed_rotations_are_walked_one_by_one(host: Host, nginx: Nginx, served_feed: Feed,
                                                tmp_path: Path) -> None:
    """k1 -> k2 -> k3 while the host was away: keys-1.json then keys.json (version 2)."""
    served_feed.release("1.0.0")
    host.follow(nginx, served_feed)
    assert run_updaterd("--config", host.config, "--once").returncode == 0
    p2, k2, _ = _key(tmp_path, "k2")
    p3, k3, _ = _key(tmp_path, "k3")
    rotate_keys(feed_dir=served_feed.folder, app="hello", new_keys=[p2],
                sign_with=[served_feed.key, k2])
    rotate_keys(feed_dir=served_feed.folder, app="hello", new_keys=[p3], sign_with=[k2, k3])
    served_feed.key = k3
    served_feed.release("1.1.0")
    r = run_updaterd("--config", host.config, "--once", "-v")
    assert r.returncode == 0, r.stderr
    assert "rotation to version 1 accepted" in r.stderr
    assert "rotation to version 2 accepted" in r.stderr
    assert host.current() == "1.1.0"


def test_re_pinning_in_the_configuration_starts_the_chain_again(tmp_path: Path) -> None:
    p1, k1, _ = _key(tmp_path, "k1")
    p2, k2, _ = _key(tmp_path, "k2")
    p3, _, _ = _key(tmp_path, "k3")
    state = AppState()
    _apply("x", _cfg([_pub_line(p1)]), state, *_first_rotation(tmp_path / "f", p2, [k1, k2]))
    assert trustroot.in_use(_cfg([_pub_line(p1)]), state).version == 1
    repinned = trustroot.in_use(_cfg([_pub_line(p3)]), state)
    assert repinned.version == 0 and [k.to_base64() for k in repinned.keys] == [_pub_line(p3)]


def test_rotation_lookup_costs_nothing_on_an_unchanged_feed(host: Host, nginx: Nginx,
                                                            served_feed: Feed) -> None:
    """keys.json is asked for only when the manifest changed (before it is verified); an
    up-to-date check stays one conditional request."""
    served_feed.release("1.0.0")
    host.follow(nginx, served_feed)
    mine = f"/{served_feed.folder.name}/"

    def uris() -> list[tuple[str, int]]:
        return [(r["uri"].removeprefix(mine), r["status"]) for r in nginx.requests()
                if r["uri"].startswith(mine)]

    assert run_updaterd("--config", host.config, "--once").returncode == 0
    first = uris()
    assert first[:2] == [("manifest.json", 200), ("keys.json", 404)]
    assert run_updaterd("--config", host.config, "--once").returncode == 0
    assert uris()[len(first):] == [("manifest.json", 304)]
