"""Named crash points for tests: inert unless UPDATERD_FAILPOINTS names them.

`UPDATERD_FAILPOINTS="switch.after_rename=kill,stage.after_extract=exit"`: `kill` sends SIGKILL to
this process (like a power cut for the process, no cleanup); `exit` calls os._exit(99);
`raise` raises a FailpointError (tests of error paths); `stop` sends SIGSTOP to this process, so
that a test can act at that exact instant (an attacker's race) and then send SIGCONT; `hang`
blocks the whole process (what the watchdog catches).
"""

from __future__ import annotations

import os
import signal
import time

ENV = "UPDATERD_FAILPOINTS"

# Every failpoint of the update and rollback transactions, in the order they are reached.
ALL = (
    "download.after_verify",
    "stage.after_extract",
    "stage.after_fsync",
    "release.after_rename",
    "inplace.after_backup",
    "journal.after_write",
    "switch.after_temp_link",
    "switch.after_rename",
    "switch.after_bin_links",
    "restart.after",
    "health.after",
    "commit.before_state",
    "state.after_tmp_write",
    "commit.after_state",
    "rollback.after_journal",
    "rollback.after_temp_link",
    "rollback.after_rename",
    "rollback.after_restart",
    "rollback.after_state",
)

# Removing an old release (`retain`): after it left `releases/`, before its files are deleted.
PRUNE = ("prune.after_rename",)

# `rollback --with-data`: the restored data made, and the old data moved out (before the swap).
DATA = ("data.after_copy", "data.after_left")

# The daemon's watchdog ping (`watchdog.ping=hang`: a daemon that stops feeding it).
WATCHDOG = ("watchdog.ping",)

# `updaterd publish`: between the two renames (signature, then manifest).
PUBLISH = ("publish.after_signature",)

# updaterd updating itself: between the trial mark and the re-execution.
HANDOVER = ("handover.after_trial", "handover.before_exec")


class FailpointError(RuntimeError):
    """Raised by a failpoint whose action is `raise`."""


def _parse(text: str) -> dict[str, str]:
    actions = {}
    for item in text.split(","):
        name, _, action = item.strip().partition("=")
        if name:
            actions[name] = action or "exit"
    return actions


def hit(name: str) -> None:
    """Do what the environment asks at this point; nothing when it names no failpoint here."""
    spec = os.environ.get(ENV)
    if not spec:
        return
    action = _parse(spec).get(name)
    if action is None:
        return
    if action == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    elif action == "exit":
        os._exit(99)
    elif action == "stop":
        os.kill(os.getpid(), signal.SIGSTOP)
    elif action == "hang":
        time.sleep(1e9)  # a hung process (the event loop blocked), as a watchdog sees it
    elif action == "raise":
        raise FailpointError(f"failpoint {name}")
