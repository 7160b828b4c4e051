"""Per-app state: one msgspec Struct in `<state_dir>/<app>/state.json`, written atomically.

A corrupt file is moved aside with a warning (never a crash); the serial high-water mark is then
recovered from the moved file when it can be read, so a broken state never resets it to zero.
"""

from __future__ import annotations

import errno
import logging
import os
import re
from pathlib import Path
from typing import Literal

import msgspec
from msgspec import Struct

from updaterd import fsutil
from updaterd.errors import StateError
from updaterd.trust.feed import RolloutMark

log = logging.getLogger("updaterd.state")
SCHEMA = 1


class Transaction(Struct, kw_only=True):
    """The journal of a switch in progress: written before the switch, cleared at the end."""

    kind: Literal["update", "rollback"]
    from_version: str | None
    to_version: str
    started_at: float
    reason: str = ""
    block: bool = False  # rollback: block the version left (it failed its checks)
    to_digest: str = ""  # inplace: BLAKE3 of the new file, to recognise it after a crash
    backup: str = ""  # inplace: the copy of the file being replaced
    skip_left: bool = True  # rollback by the operator: skip the version left (not forward)
    recall: bool = False  # rollback: the rollout key recalled the version left (it did not fail)
    with_data: bool = False  # rollback: the data snapshot of to_version replaces shared/


class TrustRoot(Struct, kw_only=True):
    """Keys adopted through a rotation (trust/rotation.py), and the configured keys they descend
    from (a fingerprint: when the configuration changes, the configured keys rule again)."""

    origin: str
    version: int
    keys: list[str]
    threshold: int


class HistoryEntry(Struct, kw_only=True):
    """One line of what happened to the app."""

    at: float
    action: Literal["installed", "rolled_back", "blocked", "failed", "interrupted", "skipped",
                    "unskipped", "found", "cancelled"]
    version: str
    from_version: str | None = None
    reason: str = ""


class AppState(Struct, kw_only=True):
    """Everything updaterd remembers about one app between runs."""

    schema: int = SCHEMA
    installed: str | None = None
    previous: str | None = None
    available: str | None = None
    etag: str | None = None
    last_modified: str | None = None
    # the origin (`url` or one of `mirrors`) these validators and rollout.json's came from:
    # only that origin is asked conditionally
    feed_origin: str | None = None
    last_check: float | None = None
    last_success: float | None = None
    consecutive_failures: int = 0
    last_error: str | None = None
    # what the last error came from: a check's is cleared by the next good check; an update's
    # (or a rollback's) stays in `status` until an update installs or the operator clears it
    last_error_of: str | None = None
    skipped: list[str] = []
    blocked: list[str] = []
    paused: bool = False
    serial: int | None = None
    manifest_digest: str | None = None
    pending: Transaction | None = None
    history: list[HistoryEntry] = []
    release_digests: dict[str, str] = {}  # version -> blake3 of the artifact it came from
    passed_over: dict[str, str] = {}  # newer versions the last check did not pick, and why
    rate_limited_until: float | None = None  # GitHub said: no request before this time
    trust: TrustRoot | None = None  # keys from a rotation in the feed, in place of public_keys
    # the newest version ever committed: for `github`, automatic updates never go below it
    highest_installed: str | None = None
    # the artifact names the last check still wants in the cache; the rest is removed (H149)
    downloads: list[str] = []
    # the releases the feed says are yanked, and why (a host running one says so in status)
    yanked: dict[str, str] = {}
    # the releases a valid rollout.json recalls, and why (the same, for a recall)
    recalled: dict[str, str] = {}
    # the operation under way ("check", "update"...): still set at a start, it was cut (a stop,
    # a crash, a power cut), and the app is checked at once; `cuts`: how many starts in a row
    # found one, so that an operation that brings the daemon down is not retried for ever
    in_progress: str | None = None
    cuts: int = 0
    # guarded rollout (trust/rollout.py): the newest rollout.json accepted, and this host's
    # place in the rollout of each guarded release it does not run yet (the metrics show it)
    rollout_mark: RolloutMark | None = None
    # the server's validators of that rollout.json (its copy is kept beside feed.json): the
    # next check and every look ask for it conditionally
    rollout_etag: str | None = None
    rollout_last_modified: str | None = None
    rollout_buckets: dict[str, int] = {}
    # the versions in `blocked` that a recall blocked: a rollout key that sets one active again
    # lifts its block (J173); a block after a failed check stays
    recall_blocked: list[str] = []
    # per version left: rollbacks of any kind, and those after failed checks (the metrics a
    # rollout's gates read; kept across restarts so that a counter never falls back)
    rollbacks_from: dict[str, int] = {}
    failed_checks: dict[str, int] = {}


def app_dir(state_dir: Path, app: str) -> Path:
    return state_dir / app


def load(state_dir: Path, app: str) -> AppState:
    """The stored state, or a fresh one; a corrupt file is moved aside with a warning."""
    path = app_dir(state_dir, app) / "state.json"
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        return AppState()
    except OSError as e:
        why = "it is a symbolic link, which updaterd never follows here" \
            if e.errno == errno.ELOOP else e.strerror or str(e)
        raise StateError(f"cannot open {path}: {why}; remove it to start afresh") from None
    with os.fdopen(fd, "rb") as f:
        data = f.read()
    try:
        state = msgspec.json.decode(data, type=AppState)
        if state.schema != SCHEMA:
            raise msgspec.ValidationError(f"unknown state schema {state.schema}")
        return state
    except (msgspec.DecodeError, msgspec.ValidationError) as e:
        stamp = fsutil.utc_stamp()
        aside = path.with_name(f"state.json.corrupt-{stamp}")
        os.replace(path, aside)
        fsutil.fsync_dir(path.parent)
        log.error("%s: state file %s is corrupt (%s); moved to %s; automatic updates are "
                    "paused until `updaterctl resume %s`", app, path, e, aside, app)
        # Paused: the blocked and skipped versions were in the lost file, so an automatic
        # update now could reinstall a version that failed; an operator looks first.
        fresh = AppState(paused=True,
                         last_error=f"state file was corrupt and moved to {aside.name}; "
                                    f"automatic updates paused until `updaterctl resume {app}`")
        m = re.search(rb'"serial"\s*:\s*(\d{1,19})', data)
        if m:
            fresh.serial = int(m.group(1))
        save(state_dir, app, fresh)  # the pause and the serial must outlive this run
        return fresh


def save(state_dir: Path, app: str, state: AppState) -> None:
    """Write the state durably (temp file, fsync, rename, fsync of the folder)."""
    folder = app_dir(state_dir, app)
    fsutil.ensure_private_dir(folder, 0o755)
    data = msgspec.json.format(msgspec.json.encode(state), indent=1) + b"\n"
    try:
        fsutil.atomic_write(folder / "state.json", data, failpoint="state.after_tmp_write")
    except OSError as e:
        raise StateError(f"{app}: cannot write state: {e}") from None


def record(state: AppState, entry: HistoryEntry, limit: int) -> None:
    """Append to the history, keeping the newest `limit` entries."""
    state.history.append(entry)
    del state.history[:-limit]
