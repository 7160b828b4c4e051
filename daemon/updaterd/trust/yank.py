"""How a yank travels in a manifest that every daemon, old or new, accepts (docs/feed.md).

The manifest's schema is strict: a new `yanked` field would make every daemon older than yanking
refuse the whole feed, so a yank is written where those daemons already look away, as deltas
did: an artifact entry of the platform `yanked`, which no host installs. Its name carries the
reason (base64url, so it is a safe file name to any daemon's check) and the release's rollout
before the yank; the release's own rollout becomes 0, so that older daemons never install it
automatically either (only on purpose, as SPEC asks), and `unyank` restores it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re

from updaterd.errors import FeedError
from updaterd.trust.feed import Artifact, Release

PLATFORM = "yanked"  # the marker's platform: reserved, never an artifact's
# A safe file name is at most 255 characters: "yanked.100." leaves 244 for base64, 183 bytes.
MAX_REASON = 180
_MARKER = re.compile(r"^yanked\.(\d{1,3})\.([A-Za-z0-9_-]*)$")


def is_marker(artifact: Artifact) -> bool:
    return artifact.platform == PLATFORM


def normalised(reason: str) -> str:
    """A reason as the marker carries it: on one line, single-spaced."""
    return " ".join(reason.split())


def marker(reason: str, rollout: int) -> Artifact:
    """The entry that says a release is yanked, why, and its rollout before the yank."""
    text = normalised(reason)
    if not text:
        raise FeedError("--why must say why the release is yanked (hosts show it)")
    raw = text.encode()
    if len(raw) > MAX_REASON:
        raise FeedError(f"--why is {len(raw)} bytes; a yank reason holds at most {MAX_REASON} "
                        "(it travels inside the signed manifest, in a form every daemon "
                        "accepts): say it shorter, and put the rest in the next release's notes")
    encoded = base64.urlsafe_b64encode(raw).decode().rstrip("=")
    return Artifact(platform=PLATFORM, url=f"yanked.{rollout}.{encoded}", size=0,
                    sha256=hashlib.sha256(raw).hexdigest())


def _marker_of(release: Release) -> tuple[Artifact | None, re.Match[str] | None]:
    """The release's yank marker, and its name parsed (None when there is none, or it cannot
    be read)."""
    found = next((a for a in release.artifacts if is_marker(a)), None)
    return found, _MARKER.fullmatch(found.url) if found is not None else None


def reason(release: Release) -> str | None:
    """Why `release` is yanked (None: it is not). A marker this daemon cannot read still
    yanks: the publisher meant it."""
    found, m = _marker_of(release)
    if found is None:
        return None
    if m is None:
        return "(the reason cannot be read)"
    try:
        data = base64.urlsafe_b64decode(m.group(2) + "=" * (-len(m.group(2)) % 4))
        return data.decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return "(the reason cannot be read)"


def rollout_before(release: Release) -> int:
    """The rollout the release had before it was yanked (its own when it is not yanked)."""
    _found, m = _marker_of(release)
    return min(int(m.group(1)), 100) if m is not None else release.rollout


def apply(release: Release, why: str) -> None:
    """Mark `release` yanked (or give a yanked one a new reason)."""
    held = rollout_before(release)
    release.artifacts = [a for a in release.artifacts if not is_marker(a)]
    release.artifacts.append(marker(why, held))
    release.rollout = 0


def undo(release: Release) -> None:
    """Lift the yank: the marker goes, the rollout comes back."""
    release.rollout = rollout_before(release)
    release.artifacts = [a for a in release.artifacts if not is_marker(a)]
