"""The yank marker (yank.py): what it carries survives the trip, what cannot be read still
yanks, and the release it marks is never offered automatically."""

from __future__ import annotations

from datetime import UTC, datetime

from updaterd import versions
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
