"""The look between checks (`watch_interval`): has the signed feed changed since this host
last accepted it? A recall, a yank or a halt must reach a host in minutes, not at its next
check hours away, and asking must cost next to nothing: a conditional request of the manifest
and, where a rollout.json was ever accepted, of that; both answered 304 is the usual answer.

Nothing here decides or trusts anything: a change is only a reason for a real check (every
trust step of `refresh`) at once. A change already examined (a new manifest whose check
failed, a rollout.json that was refused) is not a reason again: the scheduled check and its
back-off retry it, so a broken feed costs one check, not one every look.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from updaterd.host.config import Limits
from updaterd.host.state import AppState
from updaterd.sources.refresh import Transport
from updaterd.trust import rollout
from updaterd.trust.feed import MANIFEST
from updaterd.units import parse_size


@dataclass
class Seen:
    """What the looks of one app remember (in memory): the digests of the last changes
    already handed to a check. The validators are the state's, from the last check."""

    examined: tuple[str, ...] = ()


def _digest(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


async def changed(transport: Transport, state: AppState, limits: Limits,
                  seen: Seen, conditional: bool = True) -> str | None:
    """Why the feed must be checked now (None: nothing changed that this host has not seen).
    `conditional` False: the validators kept are another origin's (a mirror asked in its
    stead), so the documents are asked whole and compared by digest."""
    conditional = conditional and state.serial is not None and bool(
        state.etag or state.last_modified)
    doc = await transport.document(
        MANIFEST, parse_size(limits.max_manifest_size),
        validators=(state.etag, state.last_modified) if conditional else None)
    if not doc.not_modified:
        digest = _digest(doc.body)
        if digest != state.manifest_digest and digest not in seen.examined:
            return _examine(seen, digest, "the manifest changed")
    mark = state.rollout_mark
    if mark is None:  # no rollout.json was ever accepted: nothing it could recall or halt
        return None
    asked = (state.rollout_etag, state.rollout_last_modified)
    found = await transport.document(rollout.DOCUMENT, rollout.MAX_DOCUMENT, missing_ok=True,
                                     validators=asked if conditional and any(asked) else None)
    if found.not_modified or found.missing:  # a missing one moves no host (docs/rollout.md)
        return None
    digest = _digest(found.body)
    if digest in (mark.digest, *seen.examined):  # the one accepted, or one looked into
        return None
    return _examine(seen, digest, "rollout.json changed")


def _examine(seen: Seen, digest: str, why: str) -> str:
    """Remember that this change goes to a check (the newest two: a manifest and a
    rollout.json may change together)."""
    seen.examined = (*seen.examined[-1:], digest)
    return why
