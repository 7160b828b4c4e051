"""host/outcome.py in this process: what each event means for the stored state, one function at
a time (until now only the end-to-end suites held it). The rollback endings are one
table: a failed check, a recall, an operator going back or forward, data alone."""

from __future__ import annotations

import pytest

from updaterd.host import outcome
from updaterd.host.state import AppState, Transaction, TrustRoot
from updaterd.trust.feed import RolloutMark

LIMIT = 50


def on(version: str = "1.1.0", previous: str | None = "1.0.0", **kw: object) -> AppState:
    return AppState(installed=version, previous=previous, **kw)  # type: ignore[arg-type]


def tx(kind: str = "rollback", frm: str | None = "1.1.0", to: str = "1.0.0",
       **kw: object) -> Transaction:
    return Transaction(kind=kind, from_version=frm, to_version=to,  # type: ignore[arg-type]
                       started_at=0.0, **kw)  # type: ignore[arg-type]


def test_a_check_records_what_it_proved_and_clears_the_last_error() -> None:
    st = on(last_error="old", recalled={"0.9.0": "x"}, yanked={"0.9.0": "y"})
    mark = RolloutMark(keys="k", serial=3, digest="d")
    outcome.checked(st, serial=7, digest="m", available="1.2.0", passed_over={"2.0.0": "pin"},
                    at=5.0, downloads=["a.tar.gz"], yanked={"1.1.0": "bad\x1b[31m"},
                    rollout_mark=mark, rollout_buckets={"1.2.0": 42},
                    recalled={"1.1.0": "corrupts"})
    assert (st.serial, st.manifest_digest, st.available, st.last_check) == (7, "m", "1.2.0", 5.0)
    assert st.downloads == ["a.tar.gz"] and st.rollout_mark == mark
    assert st.yanked == {"1.1.0": "bad\\x1b[31m"}  # a server's text, escaped
    assert st.recalled == {"1.1.0": "corrupts"} and st.rollout_buckets == {"1.2.0": 42}
    assert st.last_error is None
    outcome.checked(st, serial=8, digest="n", available=None, passed_over={}, at=6.0,
                    downloads=[])
    assert st.rollout_mark == mark  # none accepted this time: the last one stays the mark
    assert st.yanked == {} and st.recalled == {} and st.rollout_buckets == {}


@pytest.mark.parametrize("of,stays", [("check", False), (None, False), ("update", True),
                                      ("rollback", True)])
def test_a_good_check_clears_a_checks_error_only(of: str | None, stays: bool) -> None:
    """An install that failed (a download a cache changed, a release that failed its health
    check) stays in `status` through the good checks after it, until an install succeeds."""
    st = on(last_error="it failed", last_error_of=of)
    outcome.checked(st, serial=1, digest="m", available="1.2.0", passed_over={}, at=5.0,
                    downloads=[])
    assert st.last_error == ("it failed" if stays else None)
    assert st.last_error_of == (of if stays else None)
    outcome.committed(st, "1.2.0", "1.0.0")
    assert (st.last_error, st.last_error_of) == (None, None)


def test_a_release_that_failed_its_checks_is_an_updates_error() -> None:
    st = on("1.0.0", None)
    outcome.switched_back(st, tx("update", "1.1.0", "1.0.0", block=True, reason="health"),
                          "1.0.0", 10)
    assert (st.last_error, st.last_error_of) == ("1.1.0 failed: health", "update")
    outcome.interrupted(st, tx("update", "1.0.0", "1.2.0"), "gave up", 10)
    assert (st.last_error, st.last_error_of) == ("gave up", "update")


def test_a_rotation_starts_the_high_water_mark_again() -> None:
    st = on(serial=90, manifest_digest="d", etag='"e"', last_modified="lm")
    root = TrustRoot(origin="o", version=2, keys=["k"], threshold=1)
    outcome.trust_rotated(st, root)
    assert st.trust == root
    assert (st.serial, st.manifest_digest, st.etag, st.last_modified) == (None,) * 4


def test_failures_count_and_a_success_or_the_operator_clears_them() -> None:
    st = on()
    outcome.failed(st, "one", "check")
    outcome.failed(st, "two\nlines", "update")
    assert st.consecutive_failures == 2 and st.last_error == "two\\nlines"
    assert st.last_error_of == "update"
    outcome.failure_cleared(st)
    assert (st.consecutive_failures, st.last_error, st.last_error_of) == (0, None, None)
    outcome.failed(st, "three", "check")
    outcome.succeeded(st)
    assert st.consecutive_failures == 0 and st.last_success is not None
    assert st.last_error == "three"  # a success of a check says nothing about the last error


def test_a_cut_operation_is_counted_until_one_ends() -> None:
    st = on()
    outcome.began(st, "update")
    assert st.in_progress == "update"
    assert [outcome.found_cut(st) for _ in range(3)] == [1, 2, 3]
    outcome.ended(st)
    assert (st.in_progress, st.cuts) == (None, 0)


def test_forced_drops_the_validators_and_the_servers_wait() -> None:
    st = on(etag='"e"', last_modified="lm", rate_limited_until=99.0)
    outcome.forced(st)
    assert (st.etag, st.last_modified, st.rate_limited_until) == (None, None, None)


def test_a_commit_makes_the_version_installed_and_remembers_the_highest() -> None:
    st = on("1.0.0", None, available="1.2.0", highest_installed="1.5.0", last_error="x")
    st.pending = tx("update", "1.0.0", "1.2.0")
    outcome.committed(st, "1.2.0", "1.0.0")
    assert (st.installed, st.previous, st.pending, st.available) == ("1.2.0", "1.0.0", None,
                                                                     None)
    assert st.highest_installed == "1.5.0" and st.last_error is None
    for other in ("1.1.0", "1.3.0"):  # another version on offer stays on offer
        st = on("1.0.0", None, available=other)
        outcome.committed(st, "1.2.0", "1.0.0")
        assert st.available == other


# one row per way a rollback ends: (transaction, installed, previous, blocked, skipped,
# recall_blocked, rollbacks_from, failed_checks, last_error is set)
ENDINGS = {
    "failed its check": (tx(block=True, reason="exit 1"), "1.0.0", "1.0.0", ["1.1.0"], [], [],
                         {"1.1.0": 1}, {"1.1.0": 1}, True),
    "recalled": (tx(block=True, recall=True, reason="corrupts"), "1.0.0", "1.0.0", ["1.1.0"],
                 [], ["1.1.0"], {"1.1.0": 1}, {}, True),
    "the operator went back": (tx(), "1.0.0", "1.1.0", [], ["1.1.0"], [], {"1.1.0": 1}, {},
                               False),
    "the operator went forward": (tx(frm="1.0.0", to="1.1.0", skip_left=False), "1.1.0",
                                  "1.0.0", [], [], [], {"1.0.0": 1}, {}, False),
    "data alone": (tx(frm="1.1.0", to="1.1.0", with_data=True, skip_left=False), "1.1.0",
                   "1.0.0", [], [], [], {}, {}, False),
    "back with data": (tx(with_data=True), "1.0.0", "1.1.0", [], ["1.1.0"], [], {"1.1.0": 1},
                       {}, False),
    "forward with data": (tx(frm="1.0.0", to="1.1.0", skip_left=False, with_data=True),
                          "1.1.0", "1.0.0", [], [], [], {"1.0.0": 1}, {}, False),
}
ERRORS = {"failed its check": "1.1.0 failed: exit 1", "recalled": "left 1.1.0: corrupts"}


@pytest.mark.parametrize("name", list(ENDINGS))
def test_each_way_a_rollback_ends(name: str) -> None:
    t, installed, previous, blocked, skipped, recall_blocked, counted, failed, error = \
        ENDINGS[name]
    st = on("1.1.0" if t.from_version == "1.1.0" else "1.0.0",
            "1.0.0" if t.from_version == "1.1.0" else None, available=t.from_version,
            skipped=[t.to_version], last_error="old")
    st.pending = t
    outcome.switched_back(st, t, t.to_version, LIMIT)
    assert st.pending is None and st.installed == installed
    if name != "data alone":
        assert st.previous == previous
        assert st.available is None  # the version left is no longer on offer
        assert st.skipped == skipped  # back on a version: no longer skipped
    assert (st.blocked, st.recall_blocked) == (blocked, recall_blocked)
    assert (st.rollbacks_from, st.failed_checks) == (counted, failed)
    assert (st.last_error is not None) == error
    assert st.last_error == ERRORS.get(name)
    assert st.history[-1].action == ("blocked" if t.block else "rolled_back")


def test_a_recall_lifted_unblocks_only_what_a_recall_blocked() -> None:
    st = on(blocked=["1.1.0", "1.2.0"], recall_blocked=["1.1.0", "1.3.0"])
    assert outcome.recalls_lifted(st, {"1.1.0", "1.2.0"}) == ["1.1.0"]
    assert st.blocked == ["1.2.0"]  # blocked after a failed check: stays
    assert st.recall_blocked == []  # 1.3.0 was unblocked by hand since: forgotten


def test_rollbacks_are_counted_for_the_newest_32_versions() -> None:
    st = on()
    for i in range(40):
        outcome.switched_back(st, tx(frm=f"1.{i}.0", to="1.0.0"), "1.0.0", LIMIT)
    assert len(st.rollbacks_from) == 32
    assert "1.39.0" in st.rollbacks_from and "1.0.0" not in st.rollbacks_from


def test_an_interrupted_switch_leaves_the_old_version_and_a_launcher_verdict_blocks() -> None:
    st = on("1.0.0", None)
    outcome.interrupted(st, tx("update", "1.0.0", "1.1.0"), None, LIMIT)
    assert st.installed == "1.0.0" and st.blocked == []
    assert st.history[-1].action == "interrupted"
    outcome.interrupted(st, tx("update", "1.0.0", "1.1.0"), "would not start", LIMIT)
    assert st.blocked == ["1.1.0"] and st.last_error == "would not start"


def test_found_on_disk_is_a_first_sighting_only_once() -> None:
    st = AppState()
    assert outcome.found_on_disk(st, "0.1.0", LIMIT) is True
    assert st.history[-1].action == "found" and st.installed == "0.1.0"
    assert outcome.found_on_disk(st, "0.2.0", LIMIT) is False and st.installed == "0.2.0"
    assert outcome.found_on_disk(AppState(installed="0.1.0"), "0.2.0", LIMIT) is False
    st = AppState()
    assert outcome.found_on_disk(st, None, LIMIT) is True and st.history[-1].version == ""


def test_a_failed_first_install_rolls_back_to_nothing_and_says_so() -> None:
    st = AppState()
    t = Transaction(kind="rollback", from_version="1.0.0", to_version="", started_at=0.0,
                    block=True, reason="exit 1")
    outcome.switched_back(st, t, None, LIMIT)
    assert st.installed is None and st.blocked == ["1.0.0"]
    assert [(h.action, h.version) for h in st.history] == [("rolled_back", ""),
                                                           ("blocked", "1.0.0")]


def test_a_rollback_keeps_another_version_on_offer() -> None:
    st = on(available="1.2.0")
    outcome.switched_back(st, tx(), "1.0.0", LIMIT)
    assert st.available == "1.2.0"


def test_skip_and_unskip() -> None:
    st = on(available="1.2.0", blocked=["1.2.0"])
    outcome.skipped(st, "1.2.0", LIMIT)
    outcome.skipped(st, "1.2.0", LIMIT)
    assert st.skipped == ["1.2.0"] and st.available is None
    outcome.unskipped(st, "1.2.0", LIMIT)
    assert st.skipped == [] and st.blocked == []
    assert [h.action for h in st.history] == ["skipped", "skipped", "unskipped"]


def test_staged_digests_go_with_pruned_versions() -> None:
    st = on()
    outcome.staged(st, "1.1.0", "b3")
    outcome.staged(st, "1.2.0", "b4")
    outcome.pruned(st, ["1.1.0", "0.9.0"])
    assert st.release_digests == {"1.2.0": "b4"}


def test_the_journal_reason_is_cleaned_as_it_is_written() -> None:
    st = on()
    outcome.journaled(st, tx(reason="a\x1b]0;evil\x07b"))
    assert st.pending is not None and "\x1b" not in st.pending.reason
    outcome.journaled(st, None)
    assert st.pending is None
