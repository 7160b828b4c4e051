"""The trusted set of one refresh (trust/trustedset.py, trust/rotation.py, trust/signed.py), in
this process and without I/O: key rotations as one table of cases (keys in use, threshold,
signatures, expected), as python-tuf tests its root rotations; then the order of a refresh
(rotations, manifest, rollout.json) and the marks a rotation resets. The walk that fetches
rotations is in tests/test_keys.py; the end-to-end rows in tests/security/test_keys_rows.py."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from updaterd.errors import FeedError
from updaterd.trust import minisign, rollout, rotation
from updaterd.trust.feed import RolloutMark
from updaterd.trust.rotation import Keys
from updaterd.trust.trustedset import TrustedSet

K = [minisign.SecretKey.generate() for _ in range(5)]
NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)


def b64(k: minisign.SecretKey) -> str:
    return k.public.to_base64()


def in_use(*holders: int, threshold: int = 1, version: int = 0) -> Keys:
    return Keys([K[i].public for i in holders], threshold, version)


def key_set(version: int, new: list[int], *, threshold: int | None = 1, app: str = "x",
            change: dict[str, Any] | None = None) -> bytes:
    body: dict[str, Any] = {"schema": 1, "app": app, "version": version,
                            "keys": [b64(K[i]) for i in new]}
    if threshold is not None:
        body["threshold"] = threshold
    body.update(change or {})
    return json.dumps(body).encode()


def offer(version: int, new: list[int], *by: int) -> tuple[bytes, bytes]:
    """A rotation to the keys `new` and its signatures by `by`."""
    raw = key_set(version, new)
    return raw, signatures(raw, *by)


def signatures(raw: bytes, *by: int) -> bytes:
    return "".join(K[i].sign(raw, "t") for i in by).encode()


@dataclass
class Case:
    """A rotation offered to a host: the keys it uses, the document and who signed it, and
    what the host must make of it: the keys it then uses (`new`, `new_threshold`), None when
    the document is not newer, or the refusal (`refused`, a regular expression)."""

    name: str
    using: Keys
    raw: bytes
    signed_by: tuple[int, ...]
    new: list[int] | None = None
    new_threshold: int = 1
    refused: str | None = None
    signature: bytes | None = field(default=None)


CASES = [
    # accepted
    Case("signed by the old key and the new", in_use(0), key_set(1, [1]), (0, 1), new=[1]),
    Case("two new keys, threshold two, both sign", in_use(0),
         key_set(1, [1, 2], threshold=2), (0, 1, 2), new=[1, 2], new_threshold=2),
    Case("a threshold of two in use, both sign", in_use(0, 1, threshold=2),
         key_set(1, [2]), (0, 1, 2), new=[2]),
    Case("without a threshold the new set needs one", in_use(0),
         key_set(1, [1, 2], threshold=None), (0, 1), new=[1, 2]),
    Case("the largest version", in_use(0), key_set(2**31, [1]), (0, 1), new=[1]),
    Case("a jump of versions signed by the keys in use", in_use(0, version=3),
         key_set(9, [1]), (0, 1), new=[1]),
    # not newer: nothing changes, nothing is refused
    Case("the same version again", in_use(1, version=1), key_set(1, [2]), (1, 2)),
    Case("an older version", in_use(1, version=2), key_set(1, [2]), (1, 2)),
    # refused: the keys in use
    Case("signed by the new key only", in_use(0), key_set(1, [1]), (1,),
         refused=r"^keys\.json: not signed by the keys in use \(version 0\): "),
    Case("one of a threshold of two", in_use(0, 1, threshold=2), key_set(1, [2]), (0, 2),
         refused=r"not signed by the keys in use \(version 0\)"),
    Case("one key counted twice for a threshold of two", in_use(0, 1, threshold=2),
         key_set(1, [2]), (0, 0, 2), refused=r"not signed by the keys in use"),
    Case("a rotated set names its own version", in_use(3, version=4), key_set(5, [2]), (0, 2),
         refused=r"not signed by the keys in use \(version 4\)"),
    Case("no signature", in_use(0), key_set(1, [1]), (),
         refused=r"^keys\.json: signature is missing$"),
    # refused: the new keys
    Case("signed by the old key only", in_use(0), key_set(1, [1]), (0,),
         refused=r"^keys\.json version 1: not signed by its own new keys: "),
    Case("one of the new threshold of two", in_use(0), key_set(1, [1, 2], threshold=2),
         (0, 1), refused=r"version 1: not signed by its own new keys"),
    Case("a threshold above the distinct new keys", in_use(0),
         key_set(1, [1, 2, 1], threshold=3), (0, 1, 2),
         refused=r"^keys\.json version 1: threshold 3 is more than its distinct keys$"),
    Case("a new key that does not parse", in_use(0),
         key_set(1, [], change={"keys": ["RWQbad"]}), (0,), refused=r"^keys\.json version 1: "),
    # refused: the document
    Case("another app", in_use(0), key_set(1, [1], app="a"), (0, 1),
         refused=r"^keys\.json is for app 'a', not 'x'$"),
    Case("another app, sorting after", in_use(0), key_set(1, [1], app="zzz"), (0, 1),
         refused=r"^keys\.json is for app 'zzz', not 'x'$"),
    Case("a key twice in the object", in_use(0),
         b'{"schema": 1, "app": "x", "version": 1, "version": 2, "keys": []}', (0,),
         refused=r"has the key 'version' twice"),
    Case("not JSON", in_use(0), b"{", (0,), refused=r"^keys\.json is not valid JSON"),
    *(Case(f"schema: {change}", in_use(0), key_set(1, [1], change=change), (0, 1),
           refused=r"^keys\.json does not match schema 1")
      for change in ({"version": 0}, {"version": 2**31 + 1}, {"version": "2"}, {"keys": []},
                     {"threshold": 0}, {"threshold": 17}, {"schema": 2}, {"surprise": True},
                     {"keys": ["RWQ"] * 17})),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_a_rotation(case: Case) -> None:
    trust = TrustedSet("x", case.using, now=NOW, serial=7, digest="d")
    sig = signatures(case.raw, *case.signed_by) if case.signed_by else None
    if case.refused is not None:
        with pytest.raises(FeedError, match=case.refused):
            trust.rotate(case.raw, sig)
        assert trust.keys == case.using and not trust.rotated
        return
    taken = trust.rotate(case.raw, sig)
    if case.new is None:
        assert not taken and not trust.rotated and trust.keys == case.using
        return
    assert taken and trust.rotated
    version = json.loads(case.raw)["version"]
    assert trust.keys == Keys([K[i].public for i in case.new], case.new_threshold, version)


def test_sixteen_keys_and_a_threshold_of_sixteen_are_the_most() -> None:
    # a signature file holds at most 16 blocks: the old key must be one of the sixteen
    sixteen = [K[0]] + [minisign.SecretKey.generate() for _ in range(15)]
    raw = json.dumps({"schema": 1, "app": "x", "version": 1, "threshold": 16,
                      "keys": [k.public.to_base64() for k in sixteen]}).encode()
    trust = TrustedSet("x", in_use(0), now=NOW)
    assert trust.rotate(raw, "".join(k.sign(raw, "t") for k in sixteen).encode())
    assert trust.keys is not None and trust.keys.threshold == 16


def test_rotations_chain_each_against_the_last() -> None:
    trust = TrustedSet("x", in_use(0), now=NOW)
    assert trust.rotate(*offer(1, [1], 0, 1))
    with pytest.raises(FeedError, match=r"keys in use \(version 1\)"):
        trust.rotate(*offer(2, [2], 0, 2))  # the revoked key
    assert trust.rotate(*offer(2, [2], 1, 2))
    assert trust.keys == Keys([K[2].public], 1, 2)


def test_the_keys_in_use_and_the_kinds_of_document_are_values() -> None:
    import dataclasses

    with pytest.raises(dataclasses.FrozenInstanceError):
        in_use(0).version = 9  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        rotation.KIND.name = "manifest"  # type: ignore[misc]


def test_versioned_names() -> None:
    assert rotation.versioned(7) == "keys-7.json"


# -- the order of a refresh, and what a rotation resets --------------------------------------

def manifest(serial: int, *, app: str = "x", expires: datetime = NOW + timedelta(days=1),
             releases: list[dict[str, Any]] | None = None) -> bytes:
    return json.dumps({"schema": 1, "app": app, "serial": serial,
                       "expires": expires.isoformat(), "releases": releases or []}).encode()


def test_a_rotation_resets_the_serial_mark_the_stolen_key_raised() -> None:
    """TUF's fast-forward recovery: the thief's huge serial belonged to the keys now gone."""
    raw = manifest(3)
    held = TrustedSet("x", in_use(0), now=NOW, serial=2**40, digest="d")
    with pytest.raises(FeedError, match="below"):
        held.manifest(raw, signatures(raw, 0), remote=True)
    trust = TrustedSet("x", in_use(0), now=NOW, serial=2**40, digest="d")
    assert trust.rotate(*offer(1, [1], 0, 1))
    feed_ = trust.manifest(raw, signatures(raw, 1), remote=True)
    assert feed_.manifest.serial == 3 and not feed_.unchanged


def test_the_manifest_is_checked_with_the_keys_the_rotations_left() -> None:
    trust = TrustedSet("x", in_use(0), now=NOW)
    assert trust.rotate(*offer(1, [1], 0, 1))
    raw = manifest(1)
    with pytest.raises(FeedError, match="manifest signature refused"):
        trust.manifest(raw, signatures(raw, 0), remote=True)


def test_the_same_manifest_again_is_unchanged_and_other_bytes_under_its_serial_are_not() \
        -> None:
    raw = manifest(4)
    digest = hashlib.sha256(raw).hexdigest()
    assert TrustedSet("x", in_use(0), now=NOW, serial=4, digest=digest).manifest(
        raw, signatures(raw, 0), remote=True).unchanged
    other = manifest(4, app="x", expires=NOW + timedelta(days=2))
    with pytest.raises(FeedError, match="serial 4 was seen before with different content"):
        TrustedSet("x", in_use(0), now=NOW, serial=4, digest=digest).manifest(
            other, signatures(other, 0), remote=True)


@pytest.mark.parametrize("keys,remote,signature,refused", [
    (None, True, None, None),  # verify = "skip": not checked, wherever it comes from
    (Keys([], 1, 0), False, None, None),  # a folder feed with no key configured
    (Keys([], 1, 0), True, None, "no public_keys configured, and this feed must be signed"),
    (in_use(0), False, None, "manifest signature is missing"),  # keys: a folder's too
])
def test_when_a_manifest_must_be_signed(keys: Keys | None, remote: bool,
                                        signature: bytes | None, refused: str | None) -> None:
    trust = TrustedSet("x", keys, now=NOW)
    if refused is None:
        assert trust.manifest(manifest(1), signature, remote=remote).manifest.serial == 1
    else:
        with pytest.raises(FeedError, match=refused):
            trust.manifest(manifest(1), signature, remote=remote)


def test_without_keys_there_is_nothing_to_rotate_from() -> None:
    for keys in (None, Keys([], 1, 0)):
        trust = TrustedSet("x", keys, now=NOW)
        assert not trust.has_keys
        with pytest.raises(RuntimeError, match="no keys in use"):
            trust.rotate(b"{}", None)
    assert TrustedSet("x", in_use(0), now=NOW).has_keys


def test_steps_out_of_order_are_refused() -> None:
    trust = TrustedSet("x", in_use(0), now=NOW)
    with pytest.raises(RuntimeError, match="after the manifest"):
        trust.rollout(b"{}", None)
    raw = manifest(1)
    trust.manifest(raw, signatures(raw, 0), remote=True)
    with pytest.raises(RuntimeError, match="before the manifest"):
        trust.rotate(*offer(1, [1], 0, 1))
    with pytest.raises(RuntimeError, match="one manifest per refresh"):
        trust.manifest(raw, signatures(raw, 0), remote=True)


def guarded_manifest(steering: minisign.SecretKey | None) -> bytes:
    artifacts = [{"platform": "linux-x86_64", "url": "a.tar.gz", "size": 1,
                  "sha256": "0" * 64}]
    if steering is not None:
        marker = rollout.marker(steering.public)
        artifacts.append({"platform": marker.platform, "url": marker.url, "size": 0,
                          "sha256": marker.sha256})
    return manifest(1, releases=[{"version": "1.1.0", "published": NOW.isoformat(),
                                  "artifacts": artifacts}])


def rollout_document(serial: int) -> bytes:
    return json.dumps({"schema": 1, "app": "x", "serial": serial,
                       "expires": (NOW + timedelta(hours=1)).isoformat(),
                       "releases": {"1.1.0": {"share": 10, "since": NOW.isoformat()}}}).encode()


def test_rollout_json_is_checked_with_the_rollout_keys_the_manifest_names() -> None:
    raw = guarded_manifest(K[3])
    trust = TrustedSet("x", in_use(0), now=NOW)
    trust.manifest(raw, signatures(raw, 0), remote=True)
    doc = rollout_document(5)
    accepted = trust.rollout(doc, signatures(doc, 3))
    assert accepted.doc.serial == 5 and accepted.signer == K[3].public
    with pytest.raises(FeedError, match="not signed by a rollout key the manifest names"):
        trust.rollout(doc, signatures(doc, 0))  # the publisher's key does not steer


def test_rollout_json_is_checked_against_the_mark_this_host_keeps() -> None:
    raw = guarded_manifest(K[3])
    mark = RolloutMark(keys=rollout.fingerprint([K[3].public]), serial=6, digest="d")
    trust = TrustedSet("x", in_use(0), now=NOW, rollout_mark=mark)
    trust.manifest(raw, signatures(raw, 0), remote=True)
    doc = rollout_document(5)
    with pytest.raises(FeedError, match="serial 5 is below 6 already seen"):
        trust.rollout(doc, signatures(doc, 3))


def test_a_manifest_that_names_no_readable_rollout_key_has_none_to_check_with() -> None:
    raw = guarded_manifest(None)
    trust = TrustedSet("x", in_use(0), now=NOW)
    trust.manifest(raw, signatures(raw, 0), remote=True)
    with pytest.raises(FeedError, match="no rollout key the manifest names can be read"):
        trust.rollout(rollout_document(1), None)


def test_a_refused_manifest_is_not_taken_and_the_next_origins_may_be() -> None:
    """A feed with mirrors: the first origin's manifest was refused (a stale mirror), the
    next is asked in the same refresh; a rotation accepted on the way stays accepted."""
    trust = TrustedSet("x", in_use(0), now=NOW, serial=5, digest="d")
    stale = manifest(4)
    with pytest.raises(FeedError, match="below"):
        trust.manifest(stale, signatures(stale, 0), remote=True)
    assert trust.rotate(*offer(1, [1], 0, 1))  # rotations before the next manifest: still
    new = manifest(6)
    with pytest.raises(FeedError, match="manifest signature refused"):
        trust.manifest(new, signatures(new, 0), remote=True)  # key 0 is revoked
    assert trust.manifest(new, signatures(new, 1), remote=True).manifest.serial == 6
    with pytest.raises(RuntimeError, match="one manifest per refresh"):
        trust.manifest(new, signatures(new, 1), remote=True)
