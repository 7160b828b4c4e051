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
    assert choice.passed_over == {"2.0.0": "outside pin '>=1.4,<2'",
                                  "2.1.0": "on the beta channel; this host follows stable"}
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


def test_non_semver_tags_are_never_chosen_automatically() -> None:
    offers = [Offer("nightly-42", "stable")]
    choice = versions.choose(offers, None, P)
    assert choice.version is None
    assert choice.passed_over == {"nightly-42": versions.explicit_only("nightly-42")}
    assert "--version nightly-42" in choice.passed_over["nightly-42"]
    assert versions.choose(offers, "nightly-42", P).passed_over == {}
    assert versions.choose([Offer("nightly-43", "stable")], "nightly-42", P).version is None
    mixed = [Offer("nightly-43", "stable"), Offer("1.2.0", "stable")]
    assert versions.choose(mixed, "1.0.0", P).version == "1.2.0"
    pinned = Policy(app="demo", host_id="h", pin=">=1")
    assert versions.choose(offers, None, pinned).passed_over["nightly-42"] == \
        versions.explicit_only("nightly-42")


# -- the edges (each of these kills a mutant that the tests above let live) ----------------------

def _host_in_bucket(bucket: int, version: str = "1.1.0") -> str:
    return next(h for i in range(10_000)
                if versions.rollout_bucket(h := f"host-{i}", "demo", version) == bucket)


@pytest.mark.parametrize("rollout", [1, 30, 99])
def test_rollout_edges_a_host_just_inside_gets_it_one_just_outside_does_not(
        rollout: int) -> None:
    offer = [Offer("1.1.0", "stable", rollout=rollout)]
    inside = Policy(app="demo", host_id=_host_in_bucket(rollout - 1))
    outside = Policy(app="demo", host_id=_host_in_bucket(rollout))
    assert versions.choose(offer, "1.0.0", inside).version == "1.1.0"
    choice = versions.choose(offer, "1.0.0", outside)
    assert choice.version is None
    assert choice.passed_over == {"1.1.0": f"available to {rollout}% of hosts, not this one yet"}


def test_a_full_rollout_reaches_the_last_bucket_and_zero_reaches_none() -> None:
    last = Policy(app="demo", host_id=_host_in_bucket(99))
    assert versions.choose([Offer("1.1.0", "stable", 100)], "1.0.0", last).version == "1.1.0"
    first = Policy(app="demo", host_id=_host_in_bucket(0))
    assert versions.choose([Offer("1.1.0", "stable", 0)], "1.0.0", first).version is None


def test_the_bucket_depends_on_host_app_and_version() -> None:
    b = versions.rollout_bucket
    assert 0 <= b("h", "a", "1.0.0") < 100
    spread = {b(f"h{i}", "a", "1.0.0") for i in range(500)}
    assert min(spread) == 0 and max(spread) == 99
    assert [b("h", "a", f"1.0.{i}") for i in range(20)] != [b("h", "a", "1.0.0")] * 20
    assert [b("h", f"a{i}", "1.0.0") for i in range(20)] != [b("h", "a", "1.0.0")] * 20


def test_the_same_version_spelled_differently_is_not_an_update() -> None:
    assert versions.choose([Offer("v1.0.0", "stable")], "1.0.0", P).version is None
    assert versions.choose([Offer("1.0.0+build.7", "stable")], "1.0.0", P).version is None


def test_of_two_spellings_of_the_newest_the_first_offered_wins() -> None:
    offers = [Offer("1.1.0", "stable"), Offer("v1.1.0", "stable"), Offer("1.0.5", "stable")]
    assert versions.choose(offers, "1.0.0", P).version == "1.1.0"
    assert versions.choose(offers[::-1], "1.0.0", P).version == "v1.1.0"


def test_passed_over_keeps_only_what_is_newer_than_the_choice() -> None:
    offers = [Offer("1.1.0", "stable"), Offer("1.2.0", "stable"), Offer("1.3.0", "stable"),
              Offer("nightly", "stable")]
    policy = Policy(app="demo", host_id="h", skipped=frozenset({"1.1.0", "1.3.0", "nightly"}))
    choice = versions.choose(offers, "1.0.0", policy)
    assert choice.version == "1.2.0"
    assert choice.passed_over == {"1.3.0": "skipped by the operator"}


def test_refusal_reasons_in_their_order() -> None:
    both = Policy(app="demo", host_id="h", skipped=frozenset({"1.1.0"}),
                  blocked=frozenset({"1.1.0"}), pin="<1")
    offer = [Offer("1.1.0", "stable", rollout=0)]
    assert versions.choose(offer, "1.0.0", both).passed_over == \
        {"1.1.0": "blocked after a failed health check"}
    skipped = Policy(app="demo", host_id="h", skipped=frozenset({"1.1.0"}), pin="<1")
    assert versions.choose(offer, "1.0.0", skipped).passed_over == \
        {"1.1.0": "skipped by the operator"}
    pinned = Policy(app="demo", host_id="h", pin="<1")
    assert versions.choose(offer, "1.0.0", pinned).passed_over == {"1.1.0": "outside pin '<1'"}
    tag = [Offer("nightly", "stable")]
    assert versions.choose(tag, None, Policy(app="demo", host_id="h",
                                             blocked=frozenset({"nightly"}))).passed_over == \
        {"nightly": "blocked after a failed health check"}


def test_h146_a_tag_that_cannot_be_ordered_is_never_a_fallback() -> None:
    offers = [Offer("nightly-1", "stable"), Offer("tool-1.0.0", "stable")]
    for installed in (None, "nightly-9", "1.5.0"):
        choice = versions.choose(offers, installed, P)
        assert choice.version is None
        assert set(choice.passed_over) == {"nightly-1", "tool-1.0.0"}, installed
    assert versions.choose([Offer("nightly-1", "beta")], None, P).passed_over == {}


def test_h146_the_floor_is_the_highest_version_that_can_be_ordered() -> None:
    assert versions.highest("nightly-9", "1.5.0") == "1.5.0"
    assert versions.highest("1.5.0", "nightly-9") == "1.5.0"
    assert versions.highest("1.5.0", "2.0.0") == "2.0.0"
    assert versions.highest("nightly-9", "nightly-8") == "nightly-9"
    assert versions.highest(None, "nightly-8") == "nightly-8"
    assert versions.is_newer("2.0.0", "1.0.0") and not versions.is_newer("1.0.0", "2.0.0")
    assert not versions.is_newer("1.0.0", "v1.0.0")
    assert not versions.is_newer("1.0.0", "nightly") and not versions.is_newer("nightly", "1.0.0")


def test_an_installed_tag_lets_any_semantic_version_through() -> None:
    assert versions.choose([Offer("0.0.1", "stable")], "nightly-9", P).version == "0.0.1"


@pytest.mark.parametrize(("pin", "allowed", "refused"), [
    (">=1.4,<2", ["1.4.0", "1.9.9"], ["1.3.9", "2.0.0"]),
    ("<=1.4", ["1.4.0", "1.0.0"], ["1.4.1"]),
    (">1.4", ["1.4.1"], ["1.4.0"]),
    ("==1.4.2", ["1.4.2", "v1.4.2"], ["1.4.3"]), ("=1.4.2", ["1.4.2"], ["1.4.1"]),
    ("1.4.2", ["1.4.2"], ["1.4.1"]), ("!=1.4.2", ["1.4.1"], ["1.4.2"]),
    (" >= v1 , < 2 ", ["1.0.0"], ["2.0.0"])])
def test_pin_comparisons(pin: str, allowed: list[str], refused: list[str]) -> None:
    for v in allowed:
        assert versions.pin_allows(pin, v), (pin, v)
    for v in refused:
        assert not versions.pin_allows(pin, v), (pin, v)
    assert versions.pin_allows(None, "0.0.1")


@pytest.mark.parametrize(("pin", "message"), [
    (">=1.x", "bad version '1.x' in pin '>=1.x'"), ("~>1", "bad version constraint '~>1'"),
    (">=1,", "bad version constraint '' in pin '>=1,'"), ("1.2.3.4", "bad version '1.2.3.4'")])
def test_bad_pins_name_the_part(pin: str, message: str) -> None:
    with pytest.raises(ValueError) as e:
        versions.parse_pin(pin)
    assert message in str(e.value)


@pytest.mark.parametrize(("name", "safe"), [
    ("1.2.3", True), ("v1.2.3-rc.1+b_7", True), ("a" * 128, True), ("a" * 129, False),
    ("1..2", False), ("..", False), (".hidden", False), ("1/2", False), ("", False),
    ("1.2\0", False), ("1.2 3", False), ("-1", False), ("1.2.3\n", False)])
def test_is_safe_name(name: str, safe: bool) -> None:
    assert versions.is_safe_name(name) is safe


def test_highest() -> None:
    assert versions.highest(None, None) is None
    assert versions.highest("1.0.0", None) == "1.0.0"
    assert versions.highest(None, "1.0.0") == "1.0.0"
    assert versions.highest("1.0.0", "1.1.0") == "1.1.0"
    assert versions.highest("1.1.0", "1.0.0") == "1.1.0"
    assert versions.highest("1.0.0", "v1.0.0") == "1.0.0"
    assert versions.highest("nightly", "1.0.0") == "1.0.0"  # H146: the orderable one
    assert versions.highest("1.0.0", "nightly") == "1.0.0"


def test_parse_accepts_a_capital_v_and_refuses_other_types() -> None:
    assert versions.parse("V2.0.0") == versions.parse("2.0.0")
    assert versions.key("1.0.0") < versions.key("1.0.1")
    with pytest.raises(ValueError, match=r"'x1\.0\.0' is not a semantic version"):
        versions.parse("x1.0.0")


def test_the_lottery_is_the_same_in_every_updaterd_version() -> None:
    """Fixed values: an updaterd upgrade must not move a host in or out of a rollout."""
    b = versions.rollout_bucket
    assert [b("host-1", "demo", "1.0.0"), b("web-7", "api", "2.3.4"), b("a", "b", "c")] == \
        [30, 64, 71]


def test_offers_and_policies_are_values() -> None:
    import dataclasses

    with pytest.raises(dataclasses.FrozenInstanceError):
        Offer("1.0.0", "stable").rollout = 5  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        P.pin = ">=0"  # type: ignore[misc]


def test_an_offer_without_a_rollout_reaches_every_host() -> None:
    last = Policy(app="demo", host_id=_host_in_bucket(99))
    assert versions.choose([Offer("1.1.0", "stable")], "1.0.0", last).version == "1.1.0"


@pytest.mark.parametrize("channel", ["alpha", "testing", "zz"])
def test_another_channel_is_never_offered(channel: str) -> None:
    assert versions.choose([Offer("9.0.0", channel)], "1.0.0", P).version is None


def test_an_older_offer_does_not_stop_the_search() -> None:
    offers = [Offer("1.0.0", "stable"), Offer("1.1.0", "stable"), Offer("1.2.0", "stable")]
    assert versions.choose(offers, "1.1.0", P).version == "1.2.0"


def test_a_refused_spelling_of_the_chosen_version_is_not_passed_over() -> None:
    offers = [Offer("1.2.0", "stable"), Offer("v1.2.0", "stable")]
    policy = Policy(app="demo", host_id="h", skipped=frozenset({"v1.2.0"}))
    choice = versions.choose(offers, "1.0.0", policy)
    assert choice.version == "1.2.0" and choice.passed_over == {}


def test_same_version_however_spelled_and_tags_as_text() -> None:
    assert versions.same("1.0.0", "v1.0.0") and versions.same("V1.0.0", "1.0.0")
    assert versions.same("1.0.0", "1.0.0+build.7")
    assert not versions.same("1.0.0", "1.0.1") and not versions.same("1.0.1", "1.0.0")
    assert versions.same("nightly", "nightly") and not versions.same("nightly", "Nightly")
    assert not versions.same("1.0.0", "nightly") and not versions.same("nightly", "1.0.0")


def test_orderable_is_true_for_semantic_versions_only() -> None:
    assert versions.orderable("1.2.3") and versions.orderable("v1.2.3-rc.1")
    assert not versions.orderable("nightly-42") and not versions.orderable("tool-1.0.0")
    assert not versions.orderable("")


def test_a_yanked_release_is_passed_over_with_the_publishers_reason() -> None:
    """Even the newest, at a full rollout; the next one down is chosen instead. A yanked
    tag is passed over for the same reason, not as a tag."""
    offers = [Offer("1.1.0", "stable"), Offer("1.2.0", "stable", 100, "breaks the cache"),
              Offer("nightly-3", "stable", 100, "a bad night")]
    choice = versions.choose(offers, "1.0.0", P)
    assert choice.version == "1.1.0"
    assert choice.passed_over == {"1.2.0": "yanked by the publisher: breaks the cache"}
    choice = versions.choose(offers, "1.2.0", P)
    assert choice.version is None
    assert choice.passed_over["nightly-3"] == "yanked by the publisher: a bad night"
    assert versions.choose([Offer("1.3.0", "stable", 100, None)], "1.2.0", P).version == "1.3.0"


@pytest.mark.parametrize("channel,offered,taken", [
    ("stable", "stable", True), ("stable", "beta", False), ("stable", "alpha", False),
    ("beta", "stable", True), ("beta", "beta", True), ("beta", "alpha", False),
    ("alpha", "stable", True), ("alpha", "beta", True), ("alpha", "alpha", True),
    ("alpha", "nightly", False), ("nightly", "beta", True), ("nightly", "alpha", False),
    ("testing", "beta", True), ("testing", "stable", True)])  # a name after "stable" too
def test_channels_are_a_ladder(channel: str, offered: str, taken: bool) -> None:
    """updaterd.toml(5): stable follows stable; beta follows beta and stable; any other name
    follows itself, beta and stable."""
    assert versions.follows(channel, offered) is taken


def test_a_beta_host_takes_the_final_release_of_its_beta() -> None:
    """Issue 30: a host on 1.2.0-beta.1 (channel beta) was told `up to date` when 1.2.0 came
    out on stable, and passed_over was empty."""
    beta = Policy(app="demo", host_id="h", channel="beta")
    offers = [Offer("1.2.0-beta.1", "beta"), Offer("1.2.0", "stable")]
    assert versions.choose(offers, "1.2.0-beta.1", beta).version == "1.2.0"
    alpha = Policy(app="demo", host_id="h", channel="alpha")
    offers += [Offer("1.3.0-beta.1", "beta"), Offer("1.4.0-alpha.1", "alpha")]
    assert versions.choose(offers, "1.2.0", alpha).version == "1.4.0-alpha.1"
    choice = versions.choose(offers, "1.2.0", beta)
    assert choice.version == "1.3.0-beta.1"
    assert choice.passed_over == {"1.4.0-alpha.1": "on the alpha channel; this host follows beta"}


def test_a_newer_release_on_a_channel_not_followed_is_explained() -> None:
    choice = versions.choose([Offer("1.1.0", "stable"), Offer("1.2.0-beta.1", "beta")], "1.0.0",
                             P)
    assert choice.version == "1.1.0"
    assert choice.passed_over == {"1.2.0-beta.1": "on the beta channel; this host follows stable"}
    older = versions.choose([Offer("0.9.0-beta.1", "beta")], "1.0.0", P)
    assert older == versions.Choice(version=None), "only newer versions are news"


@pytest.mark.parametrize("pin,version,allowed", [
    ("<1.2", "1.2.0-beta.1", False), ("<1.2", "1.1.9", True), ("<1.2", "1.1.0-rc.1", False),
    (">=1.2.0-beta.1,<1.3", "1.2.0-beta.2", True), (">=1.2.0-beta.1,<1.3", "1.2.1-beta.1", False),
    (">=1.2.0-beta.1,<1.3", "1.2.0", True), ("==1.2.0-rc.1", "1.2.0-rc.1", True),
    (">=1.0", "2.0.0-alpha.1", False), ("<1.3.0-rc.1", "1.2.0-beta.1", False),
    ("<1.3.0-rc.1", "1.3.0-beta.1", True)])
def test_a_pin_lets_a_pre_release_through_only_when_a_bound_names_one(
        pin: str, version: str, allowed: bool) -> None:
    """Issue 30: `pin = "<1.2"` let 1.2.0-beta.1 through (it sorts below 1.2.0); cargo and npm
    exclude it unless a bound is a pre-release of the same major.minor.patch."""
    assert versions.pin_allows(pin, version) is allowed


def test_versions_are_ordered_as_versions_and_tags_last() -> None:
    """Issue 30: `list-backups` put 1.2.0 before 1.2.0-beta.1 (and 1.10.0 before 1.9.0)."""
    assert versions.ordered(["1.2.0", "nightly-7", "1.10.0", "1.2.0-beta.1", "1.9.0", "a-tag"]) \
        == ["1.2.0-beta.1", "1.2.0", "1.9.0", "1.10.0", "a-tag", "nightly-7"]


def test_what_is_passed_over_is_listed_in_version_order() -> None:
    offers = [Offer("2.0.0", "stable", rollout=0), Offer("1.10.0", "stable", rollout=0),
              Offer("1.9.0", "stable", rollout=0), Offer("1.10.0-rc.1", "beta")]
    choice = versions.choose(offers, "1.0.0", Policy(app="demo", host_id=_host_in_bucket(99)))
    assert list(choice.passed_over) == ["1.9.0", "1.10.0-rc.1", "1.10.0", "2.0.0"]


def test_a_held_offer_is_passed_over_with_its_reason_after_a_yank() -> None:
    """A guarded rollout that holds a release (halted, recalled, not started) says why; a yank
    is said first."""
    policy = Policy(app="demo", host_id="h")
    held = [Offer("1.1.0", "stable", held="rollout halted at 5%: gate 'x': 1 > 0")]
    assert versions.choose(held, "1.0.0", policy).passed_over == \
        {"1.1.0": "rollout halted at 5%: gate 'x': 1 > 0"}
    both = [Offer("1.1.0", "stable", yanked="bad", held="halted")]
    assert versions.choose(both, "1.0.0", policy).passed_over == \
        {"1.1.0": "yanked by the publisher: bad"}
    assert versions.choose([Offer("1.1.0", "stable")], "1.0.0", policy).version == "1.1.0"


def test_would_take_is_every_refusal_but_the_share() -> None:
    policy = Policy(app="demo", host_id="h", pin="<2", skipped=frozenset({"1.2.0"}))
    assert versions.would_take(Offer("1.1.0", "stable", rollout=0), policy)
    assert not versions.would_take(Offer("2.0.0", "stable"), policy)
    assert not versions.would_take(Offer("1.2.0", "stable"), policy)
    assert not versions.would_take(Offer("1.1.0", "beta"), policy)
    assert not versions.would_take(Offer("1.1.0", "stable", yanked="bad"), policy)
    assert versions.would_take(Offer("1.1.0", "stable", held="halted"), policy)


def test_would_take_ignores_the_share_even_for_the_last_place() -> None:
    """Host h228's place in demo 1.1.0 is 99, the last: only a full share reaches it, and
    would_take must not ask the lottery at all."""
    assert versions.rollout_bucket("h228", "demo", "1.1.0") == 99
    policy = Policy(app="demo", host_id="h228")
    assert versions.would_take(Offer("1.1.0", "stable", rollout=0), policy)
    assert versions.choose([Offer("1.1.0", "stable", rollout=99)], "1.0.0", policy).version \
        is None
