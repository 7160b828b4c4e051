"""Every change to an app's state, by name: the one module that writes `AppState` fields.

The engine, the transaction, the sources, key rotation and the control socket say what
happened (`checked`, `committed`, `rolled_back`, `skipped` ...); what that means for the stored
state is decided here alone, so a reader finds every consequence of an event in one place.
Storing the state (`state.save`) and the journal of a switch in progress (`journaled`) are
the primitives the transaction calls at its fixed steps.
"""

from __future__ import annotations

import time

from updaterd import logtext, versions
from updaterd.host.state import AppState, HistoryEntry, Transaction, TrustRoot, record
from updaterd.trust.feed import RolloutMark


def _text(text: str) -> str:
    """Text from a server, a feed or an app (a tag, an error, a health check's output) as it
    may enter the state: one line, control characters escaped, capped (H152)."""
    return logtext.clean(text)


def remember(st: AppState, action: str, version: str, from_version: str | None, reason: str,
             limit: int) -> None:
    """One line of the history, the newest `limit` kept."""
    entry = HistoryEntry(at=time.time(), action=action, version=version,  # type: ignore[arg-type]
                         from_version=from_version, reason=_text(reason))
    record(st, entry, limit)


# -- what a check learns --------------------------------------------------------------------

def checked(st: AppState, *, serial: int, digest: str, available: str | None,
            passed_over: dict[str, str], at: float, downloads: list[str],
            yanked: dict[str, str] | None = None, rollout_mark: RolloutMark | None = None,
            rollout_buckets: dict[str, int] | None = None,
            recalled: dict[str, str] | None = None,
            rollout_validators: tuple[str | None, str | None] | None = None) -> None:
    """The feed passed every check: its serial is the new high-water mark, and the cache is
    for `downloads` only. `yanked`: the releases the publisher withdrew, and why.
    `rollout_mark`: the rollout.json accepted (None: none was, and the last one stays the
    mark), `rollout_validators` the server's for it when it came whole; `rollout_buckets`:
    this host's place in each guarded rollout; `recalled`: the releases the rollout key
    recalls, and why."""
    st.serial, st.manifest_digest = serial, digest
    if rollout_mark is not None:
        st.rollout_mark = rollout_mark
    if rollout_validators is not None:  # fetched whole: the copy kept has these validators
        st.rollout_etag, st.rollout_last_modified = rollout_validators
    st.rollout_buckets = dict(rollout_buckets or {})
    st.available, st.downloads = available, downloads
    st.passed_over = {_text(v): _text(why) for v, why in passed_over.items()}
    st.yanked = {_text(v): _text(why) for v, why in (yanked or {}).items()}
    st.recalled = {_text(v): _text(why) for v, why in (recalled or {}).items()}
    st.last_check = at
    if st.last_error_of in (None, "check"):  # an install's failure outlives a good check
        st.last_error = st.last_error_of = None


def began(st: AppState, kind: str) -> None:
    """An operation starts: until it ends, a start of the daemon finds it cut."""
    st.in_progress = kind


def ended(st: AppState) -> None:
    """An operation ended, however: nothing to resume."""
    st.in_progress, st.cuts = None, 0


def found_cut(st: AppState) -> int:
    """At a start: the operation left in progress was cut; how many starts in a row say so."""
    st.cuts += 1
    return st.cuts


def check_attempted(st: AppState, at: float) -> None:
    """A check that failed still counts for the schedule (the failure itself: `failed`)."""
    st.last_check = at


def validators(st: AppState, etag: str | None, last_modified: str | None,
               origin: str | None = None) -> None:
    """The server's validators for the next conditional request, and which origin gave
    them (a feed with mirrors asks only that one conditionally)."""
    st.etag, st.last_modified, st.feed_origin = etag, last_modified, origin


def forced(st: AppState) -> None:
    """`check --force`: the whole feed again, whatever the server said about waiting."""
    st.etag = st.last_modified = None
    st.rollout_etag = st.rollout_last_modified = None
    st.rate_limited_until = None


def rate_limited(st: AppState, until: float | None) -> None:
    """The server asked for no request before `until` (None: it answers again)."""
    st.rate_limited_until = until


def trust_rotated(st: AppState, root: TrustRoot) -> None:
    """Keys adopted from a rotation; the serial high-water mark belonged to the keys now gone."""
    st.trust = root
    st.serial = st.manifest_digest = None
    st.etag = st.last_modified = None


# -- how an operation ends --------------------------------------------------------------------

def succeeded(st: AppState) -> None:
    st.consecutive_failures = 0
    st.last_success = time.time()


def failed(st: AppState, message: str, of: str) -> None:
    """Counted for the scheduler's backoff, shown by `status`; `of`: the operation that
    failed (a check, an update, a rollback)."""
    st.consecutive_failures += 1
    st.last_error, st.last_error_of = _text(message), of


# -- the transaction --------------------------------------------------------------------------

def staged(st: AppState, version: str, digest: str) -> None:
    st.release_digests[version] = digest


def pruned(st: AppState, removed: list[str]) -> None:
    for v in removed:
        st.release_digests.pop(v, None)


def journaled(st: AppState, tx: Transaction | None) -> None:
    """The journal of a switch: written before it, cleared when it is finished or undone."""
    if tx is not None:
        tx.reason = _text(tx.reason)
    st.pending = tx


def committed(st: AppState, version: str, from_version: str | None) -> None:
    """The new version passed its checks and is the installed one."""
    st.installed = version
    st.highest_installed = versions.highest(st.highest_installed, version)
    st.previous = from_version
    st.pending = None
    if st.available == version:
        st.available = None
    st.last_error = st.last_error_of = None


def switched_back(st: AppState, tx: Transaction, to_version: str | None, limit: int) -> None:
    """A rollback finished: back on `to_version`, the version left blocked (it failed its
    checks) or skipped (the operator left it; not when going forward)."""
    left = tx.from_version
    st.installed = to_version
    st.pending = None
    if tx.with_data and left == to_version:  # only the data went back: no version was left
        st.last_error = st.last_error_of = None
        remember(st, "rolled_back", to_version or "", left, tx.reason, limit)
        return
    if left is not None:
        _count(st.rollbacks_from, left)
        if tx.block and not tx.recall:
            _count(st.failed_checks, left)
    if left is not None and st.available == left:
        st.available = None  # blocked or skipped now: not on offer any more
    if to_version is not None and to_version in st.skipped:
        st.skipped.remove(to_version)  # back on it: it is no longer skipped
    if tx.block and left is not None:
        if left not in st.blocked:
            st.blocked.append(left)
            if tx.recall:
                st.recall_blocked.append(left)
        st.last_error = _text(f"left {left}: {tx.reason}" if tx.recall else
                              f"{left} failed: {tx.reason}")
        st.last_error_of = tx.kind
        remember(st, "rolled_back", to_version or "", left, tx.reason, limit)
        remember(st, "blocked", left, to_version, tx.reason, limit)
    else:
        st.previous = left
        if tx.skip_left and left is not None and left not in st.skipped:
            st.skipped.append(left)
        st.last_error = st.last_error_of = None  # the operator's move succeeded
        remember(st, "rolled_back", to_version or "", left, tx.reason, limit)


def recalls_lifted(st: AppState, active: set[str]) -> list[str]:
    """The versions a recall blocked that their rollout sets active again: unblocked (J173;
    a block after a failed check is never lifted this way). Returns them."""
    lifted = [v for v in st.recall_blocked if v in active]
    for v in lifted:
        st.recall_blocked.remove(v)
        if v in st.blocked:
            st.blocked.remove(v)
    st.recall_blocked = [v for v in st.recall_blocked if v in st.blocked]
    return lifted


MAX_COUNTED = 32  # versions whose rollbacks are counted; the oldest counted goes first


def _count(counts: dict[str, int], version: str) -> None:
    counts[version] = counts.pop(version, 0) + 1  # the newest counted last
    while len(counts) > MAX_COUNTED:
        del counts[next(iter(counts))]


def found_on_disk(st: AppState, on_disk: str | None, limit: int) -> bool:
    """The disk says which version is current (the state lost it, or never knew: a release
    made by self-install). Returns True when updaterd is seeing the app for the first time."""
    first = st.installed is None and not st.history
    if first:
        remember(st, "found", on_disk or "", None,
                 "installed before updaterd managed it (self-install or by hand)", limit)
    st.installed = on_disk
    return first


def interrupted(st: AppState, tx: Transaction, gave_up_why: str | None, limit: int) -> None:
    """A switch that never happened, undone: still on the old version. With `gave_up_why`,
    the launcher had given up on the new version (updaterd itself): it is blocked."""
    st.installed = tx.from_version
    st.pending = None
    if gave_up_why is not None:
        st.blocked.append(tx.to_version)
        st.last_error, st.last_error_of = _text(gave_up_why), tx.kind
        remember(st, "blocked", tx.to_version, tx.from_version, gave_up_why, limit)
    else:
        remember(st, "interrupted", tx.to_version, tx.from_version,
                 "interrupted before the switch", limit)


# -- an operator's edits (they never wait for a running operation) ------------------------------

def skipped(st: AppState, version: str, limit: int) -> None:
    if version not in st.skipped:
        st.skipped.append(version)
    if st.available == version:
        st.available = None
    remember(st, "skipped", version, None, "by the operator", limit)


def unskipped(st: AppState, version: str, limit: int) -> None:
    for held in (st.skipped, st.blocked):
        if version in held:
            held.remove(version)
    remember(st, "unskipped", version, None, "by the operator", limit)


def failure_cleared(st: AppState) -> None:
    """`updaterctl reset-failed`: the operator has seen the failure; no backoff, no error."""
    st.consecutive_failures = 0
    st.last_error = st.last_error_of = None


def paused(st: AppState, paused: bool) -> None:
    st.paused = paused
