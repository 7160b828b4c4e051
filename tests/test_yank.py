"""The yank marker (yank.py): what it carries survives the trip, what cannot be read still
yanks, and the release it marks is never offered automatically."""

from __future__ import annotations

from datetime import UTC, datetime

import msgspec
import pytest

from updaterd import versions
from updaterd.errors import FeedError
from updaterd.trust import feed, yank
from updaterd.trust.feed import Artifact, Release


def _release(rollout: int = 40) -> Release:
    return Release(version="1.2.0", published=datetime(2026, 1, 1, tzinfo=UTC), rollout=rollout,
                   artifacts=[Artifact(platform="linux-x86_64", url="a.tar.gz", size=1,
                                       sha256="0" * 64)])


def test_a_yank_carries_its_reason_and_the_rollout_it_held_and_undoes_cleanly() -> None:
    r = _release(40)
    yank.apply(r, "  breaks ünïcode\n names  ")
    assert yank.reason(r) == "breaks ünïcode names" and r.rollout == 0
    assert yank.rollout_before(r) == 40
    feed.validate_release(r)  # a safe file name and a digest: every daemon accepts it
    yank.apply(r, "a better reason")  # a new reason keeps the rollout held
    assert [a.platform for a in r.artifacts].count("yanked") == 1
    assert yank.rollout_before(r) == 40
    yank.undo(r)
    assert yank.reason(r) is None and r.rollout == 40 and len(r.artifacts) == 1


def test_a_marker_that_cannot_be_read_still_yanks() -> None:
    r = _release()
    r.artifacts.append(Artifact(platform="yanked", url="something-else", size=0,
                                sha256="0" * 64))
    assert yank.reason(r) == "(the reason cannot be read)"
    assert yank.rollout_before(r) == r.rollout
    offer = versions.Offer("1.2.0", "stable", 100, yank.reason(r))
    policy = versions.Policy(app="a", host_id="h", channel="stable", pin=None,
                             skipped=frozenset(), blocked=frozenset())
    choice = versions.choose([offer], "1.0.0", policy)
    assert choice.version is None
    assert choice.passed_over == {"1.2.0": "yanked by the publisher: (the reason cannot be read)"}


def _marked(url: str, rollout: int = 0) -> Release:
    r = _release(rollout)
    r.artifacts.append(Artifact(platform="yanked", url=url, size=0, sha256="0" * 64))
    return r


def test_a_marker_whose_base64_is_broken_still_yanks_with_its_rollout() -> None:
    r = _marked("yanked.100.A")  # one base64 character: no whole byte
    assert yank.reason(r) == "(the reason cannot be read)"
    assert yank.rollout_before(r) == 100
    r = _marked("yanked.30.__8")  # decodes, but not to UTF-8
    assert yank.reason(r) == "(the reason cannot be read)"
    assert yank.rollout_before(r) == 30


def test_a_rollout_above_100_in_a_marker_unyanks_to_100() -> None:
    r = _marked("yanked.250.eA")
    assert yank.reason(r) == "x"
    yank.undo(r)
    assert r.rollout == 100 and yank.reason(r) is None
    r = _marked("yanked.1000.eA")  # four digits: not a marker this daemon reads
    assert yank.reason(r) == "(the reason cannot be read)" and yank.rollout_before(r) == 0


def test_a_reason_of_180_bytes_is_taken_and_181_refused() -> None:
    r = _release()
    yank.apply(r, "é" * 90)  # 180 bytes in 90 characters
    assert yank.reason(r) == "é" * 90
    feed.validate_release(r)
    with pytest.raises(FeedError, match="181 bytes; a yank reason holds at most 180"):
        yank.apply(_release(), "x" * 181)
    with pytest.raises(FeedError, match="must say why"):
        yank.apply(_release(), " \n\t ")


def test_only_the_yanked_platform_is_a_marker_and_a_marker_holds_no_bytes() -> None:
    after = Artifact(platform="zos-s390x", url="a.bin", size=1, sha256="0" * 64)
    assert not yank.is_marker(after)  # a platform that sorts after "yanked" is a platform
    m = yank.marker("bad", 40)
    assert yank.is_marker(m) and m.size == 0
    r = _release()
    yank.apply(r, "bad")
    r.artifacts.insert(0, after)
    raw = feed.encode(feed.Manifest(schema=1, app="a", serial=1,
                                    expires=datetime(2027, 1, 1, tzinfo=UTC), releases=[r]))
    decoded = msgspec.json.decode(raw, type=feed.Manifest)  # as every host decodes it
    assert yank.reason(decoded.releases[0]) == "bad"
