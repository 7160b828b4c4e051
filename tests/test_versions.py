"""Version policy (pure): semver order, never a downgrade, pin, skip, blocked, channel,
and a rollout lottery that is stable per host, app and version."""

from __future__ import annotations

import pytest

from updaterd import versions
from updaterd.versions import Offer, Policy

P = Policy(app="demo", host_id="host-1")


def test_leading_v_and_order() -> None:
    assert versions.parse("v1.2.3") == versions.parse("1.2.3")
    assert versions.parse("1.10.0") > versions.parse("1.9.9")
    assert versions.parse("2.0.0-rc.1") < versions.parse("2.0.0")
    with pytest.raises(ValueError, match="not a semantic version"):
        versions.parse("1.2")


def test_newest_wins_and_never_downgrades() -> None:
    offers = [Offer("1.0.0", "stable"), Offer("1.2.0", "stable"), Offer("1.1.0", "stable")]
    assert versions.choose(offers, None, P).version == "1.2.0"
    assert versions.choose(offers, "1.2.0", P).version is None
    assert versions.choose(offers, "1.3.0", P).version is None


def test_pin_skip_blocked_channel() -> None:
    offers = [Offer("1.4.0", "stable"), Offer("1.5.0", "stable"), Offer("2.0.0", "stable"),
              Offer("2.1.0", "beta")]
    pinned = Policy(app="demo", host_id="h", pin=">=1.4,<2")
    choice = versions.choose(offers, "1.0.0", pinned)
    assert choice.version == "1.5.0"
    assert choice.passed_over == {"2.0.0": "outside pin '>=1.4,<2'"}
    skip = Policy(app="demo", host_id="h", skipped=frozenset({"2.0.0"}),
                  blocked=frozenset({"1.5.0"}))
    choice = versions.choose(offers, "1.0.0", skip)
    assert choice.version == "1.4.0"
    beta = Policy(app="demo", host_id="h", channel="beta")
    assert versions.choose(offers, "1.0.0", beta).version == "2.1.0"


def test_pin_errors_name_the_part() -> None:
    with pytest.raises(ValueError, match="'~>1'"):
        versions.parse_pin(">=1,~>1")


def test_rollout_is_stable_and_proportional() -> None:
    buckets = [versions.rollout_bucket(f"host-{i}", "demo", "1.0.0") for i in range(2000)]
    assert buckets == [versions.rollout_bucket(f"host-{i}", "demo", "1.0.0") for i in range(2000)]
    share = sum(b < 30 for b in buckets) / len(buckets)
    assert 0.25 < share < 0.35
    offers = [Offer("1.1.0", "stable", rollout=0)]
    choice = versions.choose(offers, "1.0.0", P)
    assert choice.version is None
    assert "not this one yet" in choice.passed_over["1.1.0"]
    assert versions.choose([Offer("1.1.0", "stable", 100)], "1.0.0", P).version == "1.1.0"


def test_non_semver_tags_compare_for_equality_only() -> None:
    offers = [Offer("nightly-42", "stable")]
    choice = versions.choose(offers, None, P)
    assert choice.version == "nightly-42" and "equality only" in choice.note
    assert versions.choose(offers, "nightly-42", P).version is None
    assert versions.choose([Offer("nightly-43", "stable")], "nightly-42", P).version == \
        "nightly-43"
    mixed = [Offer("nightly-43", "stable"), Offer("1.2.0", "stable")]
    assert versions.choose(mixed, "1.0.0", P).version == "1.2.0"
    pinned = Policy(app="demo", host_id="h", pin=">=1")
    assert "cannot apply" in versions.choose(offers, None, pinned).passed_over["nightly-42"]
