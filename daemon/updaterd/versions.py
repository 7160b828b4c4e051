"""Version parsing and the pure policy that picks what to install (no I/O here).

Versions are semantic versions; a leading `v` is ignored. `pin` is a comma-separated list of
comparisons (`>=1.4,<2`), where a partial version such as `2` means `2.0.0`.
"""

from __future__ import annotations

import hashlib
import operator
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace

import semver

_PIN_PART = re.compile(r"^\s*(>=|<=|==|!=|>|<|=)?\s*(v?[0-9][0-9A-Za-z.+-]*)\s*$")
_OPS: dict[str, Callable[[semver.Version, semver.Version], bool]] = {
    ">=": operator.ge, "<=": operator.le, ">": operator.gt, "<": operator.lt,
    "==": operator.eq, "=": operator.eq, "!=": operator.ne,
}
# What a version may look like anywhere it becomes part of a path (release folder names).
SAFE_VERSION = re.compile(r"^[0-9A-Za-z][0-9A-Za-z.+_-]{0,127}$")


def parse(text: str) -> semver.Version:
    """'v1.2.3' -> Version(1, 2, 3); raises ValueError naming the text."""
    candidate = text[1:] if text[:1] in ("v", "V") else text
    try:
        return semver.Version.parse(candidate)
    except (ValueError, TypeError):
        raise ValueError(f"{text!r} is not a semantic version") from None


def is_safe_name(version: str) -> bool:
    """True when `version` can name a folder: no '/', '..', NUL, leading dot, at most 128 bytes."""
    return bool(SAFE_VERSION.fullmatch(version)) and ".." not in version


def key(text: str) -> semver.Version:
    """Sort key for version strings."""
    return parse(text)


def order_key(text: str) -> tuple[int, semver.Version | str]:
    """Sort key of `ordered`: semantic versions in their order, then tags by name."""
    try:
        return (0, parse(text))
    except ValueError:
        return (1, text)


def ordered(texts: Iterable[str]) -> list[str]:
    """Oldest first by semantic version (1.2.0-beta.1 before 1.2.0, 1.10.0 after 1.9.0); tags
    that cannot be ordered come last, by name."""
    return sorted(texts, key=order_key)


Pin = list[tuple[Callable[[semver.Version, semver.Version], bool], semver.Version]]


def parse_pin(text: str) -> Pin:
    """'>=1.4,<2' -> comparisons; raises ValueError naming the bad part."""
    parts: Pin = []
    for piece in text.split(","):
        m = _PIN_PART.match(piece)
        if not m:
            raise ValueError(f"bad version constraint {piece.strip()!r} in pin {text!r}")
        op, ver = m.group(1) or "==", m.group(2).lstrip("vV")
        try:
            v = semver.Version.parse(ver, optional_minor_and_patch=True)
        except ValueError:
            raise ValueError(f"bad version {ver!r} in pin {text!r}") from None
        parts.append((_OPS[op], v))
    return parts


def pin_allows(pin: str | None, version: str) -> bool:
    """Whether `version` is within `pin`. As in npm and cargo, a pre-release is within a pin
    only when one of its bounds is a pre-release of the same major.minor.patch: `<1.2` does
    not let 1.2.0-beta.1 through, though it sorts below 1.2.0."""
    if pin is None:
        return True
    v = parse(version)
    bounds = parse_pin(pin)
    if v.prerelease and not any(b.prerelease and b.finalize_version() == v.finalize_version()
                                for _, b in bounds):
        return False
    return all(op(v, bound) for op, bound in bounds)


def rollout_bucket(host_id: str, app: str, version: str) -> int:
    """A stable number in [0, 100) for this host, app and version: the rollout lottery."""
    digest = hashlib.sha256(f"{host_id}\0{app}\0{version}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % 100


def rollout_identity(host_id: str) -> str:
    """What a host says of the identity its rollout places are drawn from, without saying it
    (a machine id is not for the network): hosts with the same one are clones that draw the
    same place in every rollout and move together (J184)."""
    return hashlib.sha256(f"updaterd rollout identity\0{host_id}".encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Offer:
    """One release as the policy sees it."""

    version: str
    channel: str
    rollout: int = 100
    yanked: str | None = None  # the publisher's reason: never installed automatically
    held: str | None = None  # why its guarded rollout lets no new host take it (halt, recall)


@dataclass(frozen=True)
class Policy:
    """Everything that limits which version an automatic update may pick."""

    app: str
    host_id: str
    channel: str = "stable"
    pin: str | None = None
    skipped: frozenset[str] = frozenset()
    blocked: frozenset[str] = frozenset()


@dataclass
class Choice:
    """The decision: the version to install (or None) and why newer offers were passed over."""

    version: str | None
    passed_over: dict[str, str] = field(default_factory=dict)


NOT_SEMANTIC = "not a semantic version: never installed automatically"


def explicit_only(version: str) -> str:
    """Why a tag that cannot be ordered is passed over, and how to install it on purpose."""
    return f"{NOT_SEMANTIC}; `updaterctl update APP --version {version}` installs it"


def highest(a: str | None, b: str | None) -> str | None:
    """The newer of two versions (either may be None). A version that can be ordered wins over
    one that cannot, so a tag installed by hand never lowers the floor (catalogue H146)."""
    if a is None or b is None:
        return a or b
    try:
        va = parse(a)
    except ValueError:
        return b if orderable(b) else a
    try:
        return b if parse(b) > va else a
    except ValueError:
        return a


def same(a: str, b: str) -> bool:
    """The same version, however spelled (`v1.0.0` is `1.0.0`); tags compare as text."""
    try:
        return parse(a) == parse(b)
    except ValueError:
        return a == b


def is_newer(version: str, than: str) -> bool:
    """True when both can be ordered and `version` is the newer one."""
    try:
        return parse(version) > parse(than)
    except ValueError:
        return False


def orderable(text: str) -> bool:
    """True when `text` is a semantic version, so it can be ordered."""
    try:
        parse(text)
    except ValueError:
        return False
    return True


def follows(channel: str, offered: str) -> bool:
    """Whether a host on `channel` takes a release `offered` on that channel. Channels are a
    ladder (updaterd.toml(5)): `stable` follows stable; `beta` follows beta and stable; any other
    name follows itself, beta and stable. A beta host so reaches the final release of its beta."""
    if offered in (channel, "stable"):
        return True
    return offered == "beta" and channel != "stable"


def choose(offers: Iterable[Offer], installed: str | None, policy: Policy) -> Choice:
    """The newest offer an automatic update may install, never older than `installed`.

    Only semantic versions are installed automatically: a tag like `nightly-42` or
    `tool-1.0.0` cannot be ordered, so a hostile feed or API could use one to move a host back
    to an old signed release (catalogue H146). Such a tag is passed over with the command
    that installs it on purpose. An installed tag gives no floor: semantic versions go through.
    """
    try:
        current = parse(installed) if installed else None
    except ValueError:
        current = None  # a tag installed on purpose: the engine's floor, if any, is `installed`
    choice = Choice(version=None)
    best: semver.Version | None = None
    tags: dict[str, str] = {}
    for offer in offers:
        if offer.version == installed:
            continue
        try:
            v = parse(offer.version)
        except ValueError:  # a tag is never newer: another channel's is not this host's news
            if follows(policy.channel, offer.channel):
                tags[offer.version] = _refusal(offer, policy, semantic=False) or \
                    explicit_only(offer.version)
            continue
        if current is not None and v <= current:
            continue
        reason = _refusal(offer, policy)
        if reason:
            choice.passed_over[offer.version] = reason
            continue
        if best is None or v > best:
            best, choice.version = v, offer.version
    if best is not None:  # what is passed over is what is newer than the choice
        choice.passed_over = {k: r for k, r in choice.passed_over.items()
                              if parse(k) > best}  # only semantic versions are in it here
    else:
        choice.passed_over.update(tags)
    choice.passed_over = {v: choice.passed_over[v] for v in ordered(choice.passed_over)}
    return choice


def would_take(offer: Offer, policy: Policy) -> bool:
    """Whether this host takes `offer` once its rollout reaches it: nothing but its share
    (or a guarded rollout's hold) refuses it."""
    return not _refusal(replace(offer, rollout=100, held=None), policy)


def _refusal(offer: Offer, policy: Policy, semantic: bool = True) -> str:
    if not follows(policy.channel, offer.channel):
        return f"on the {offer.channel} channel; this host follows {policy.channel}"
    if offer.yanked is not None:
        return f"yanked by the publisher: {offer.yanked}"
    if offer.held is not None:
        return offer.held
    if offer.version in policy.blocked:
        return "blocked after a failed health check"
    if offer.version in policy.skipped:
        return "skipped by the operator"
    if semantic and not pin_allows(policy.pin, offer.version):
        return f"outside pin {policy.pin!r}"
    if offer.rollout < 100 and rollout_bucket(policy.host_id, policy.app, offer.version) >= \
            offer.rollout:
        return f"available to {offer.rollout}% of hosts, not this one yet"
    return ""
