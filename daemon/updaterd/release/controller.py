"""`updaterd rollout`: the publisher's side of a guarded rollout (docs/rollout.md).

`run` widens one release step by step while every gate of the plan (a PromQL query over the
fleet's `updaterd_*` metrics, and the most it may return) holds, and signs a halt or a recall
at the first breach. It keeps no state but the feed's `rollout.json`: killed at any instant,
it picks up from the share and the time that file says. Whatever it cannot judge (Prometheus
unreachable, a gate with no value, too few hosts on the release yet) holds the rollout where
it is: it never widens on missing evidence. `status`, `halt`, `resume`, `recall` and `resign`
do the same by hand.
"""

from __future__ import annotations

import contextlib
import fcntl
import math
import os
import string
import time
import tomllib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Literal

import msgspec
from msgspec import Meta, Struct

from updaterd import logtext
from updaterd.errors import FeedError, UpdaterError
from updaterd.release import feedfolder, feedtools, publish
from updaterd.trust import feed, minisign, rollout, yank
from updaterd.trust.feed import Manifest, Release, RolloutDoc, RolloutEntry, RolloutState
from updaterd.units import DURATION_PATTERN, parse_duration

Duration = Annotated[str, Meta(pattern=DURATION_PATTERN)]
Share = Annotated[int, Meta(ge=1, le=100)]


class Gate(Struct, forbid_unknown_fields=True, kw_only=True):
    """One `[[gate]]`: a PromQL query (`$app` and `$version` are filled in) and the most it
    may return; a breach is any returned value above `max`."""

    name: Annotated[str, Meta(min_length=1, max_length=80)]
    query: Annotated[str, Meta(min_length=1, max_length=4000)]
    max: float


class Plan(Struct, forbid_unknown_fields=True, kw_only=True):
    """`plan.toml`."""

    version: Annotated[str, Meta(min_length=1, max_length=128)]
    steps: Annotated[list[Share], Meta(min_length=1, max_length=20)]
    soak: Duration
    min_hosts: Annotated[int, Meta(ge=0, le=100_000)] = 1
    on_fail: Literal["halt", "recall"] = "halt"
    interval: Duration = "5s"  # how often Prometheus is asked
    expires: Duration = "1d"  # how long hosts accept a rollout.json; re-signed at half that
    gate: Annotated[list[Gate], Meta(min_length=1)]


def load_plan(path: Path) -> Plan:
    """The plan, with every problem named (FeedError)."""
    try:
        data = tomllib.loads(path.read_text())
        plan = msgspec.convert(data, Plan, strict=True)
    except OSError as e:
        raise FeedError(f"{path}: {e.strerror}") from None
    except (tomllib.TOMLDecodeError, msgspec.ValidationError) as e:
        raise FeedError(f"{path}: {e}") from None
    if plan.steps != sorted(set(plan.steps)):
        raise FeedError(f"{path}: steps must grow, each larger than the one before")
    if plan.steps[-1] != 100:
        raise FeedError(f"{path}: the last step must be 100 (a rollout ends with every host)")
    for g in plan.gate:
        try:
            string.Template(g.query).substitute(app="x", version="x")
        except (KeyError, ValueError) as e:
            raise FeedError(f"{path}: gate {g.name!r}: only $app and $version may be filled "
                            f"in ({e})") from None
    return plan


# -- the feed's side: rollout.json, read and signed --------------------------------------------


def read(feed_dir: Path) -> RolloutDoc | None:
    """rollout.json as the folder holds it, for `rollout status` (shown, never signed again:
    what is signed again is read by `read_verified`)."""
    return feedtools.rollout_as_written(feed_dir)


def read_verified(feed_dir: Path, manifest: Manifest,
                  key: minisign.SecretKey) -> RolloutDoc | None:
    """rollout.json as hosts would check it (a rollout key the manifest names, or the one
    given, signed these very bytes; strict schema; this app), before anything in it is signed
    again (J172): a hand edit or a planted document is refused, never laundered. Its age
    is no reason: re-signing an expired document is what `resign` is for."""
    raw = feedfolder.read(feed_dir, rollout.DOCUMENT, rollout.MAX_DOCUMENT)
    if raw is None:
        return None
    signature = feedfolder.read(feed_dir, rollout.SIGNATURE, feedfolder.SIGNATURE_CAP)
    keys = [*rollout.declared(manifest), key.public]
    try:
        return rollout.verify(raw, signature, keys, app=manifest.app, mark=None,
                              cycle_start=datetime.fromtimestamp(0, UTC)).doc
    except FeedError as e:
        raise FeedError(f"{feed_dir / rollout.DOCUMENT} does not verify ({e}); refusing to "
                        "sign it again (edited by hand, or planted?). Restore the copy the "
                        "controller signed") from None


def guarded_release(feed_dir: Path, version: str, key: minisign.SecretKey,
                    widening: bool = True) -> Release:
    """The release, which must name this rollout key (else hosts would ignore what is signed).
    A yanked release is never widened; it can always be halted or recalled (J178: the bad
    release found at 3 a.m. may have been yanked first)."""
    manifest = feedtools.load(feed_dir)
    release = manifest.release(version)
    if release is None:
        raise FeedError(f"the feed has no version {version!r}")
    if key.public.raw not in {k.raw for k in rollout.keys_of(release)}:
        raise FeedError(f"{manifest.app} {version} does not name rollout key "
                        f"{key.public.id_hex}: publish it with `--rollout-key`, or "
                        "`updaterd feed guard` it")
    if widening and (why := yank.reason(release)) is not None:
        raise FeedError(f"{manifest.app} {version} is yanked ({why}): no rollout widens it "
                        "(`updaterd feed unyank` first, if that is meant)")
    return release


LOCK = ".rollout.lock"  # in the feed folder: one change of rollout.json at a time


@contextlib.contextmanager
def _locked(feed_dir: Path) -> Iterator[None]:
    """Hold the feed's rollout lock: two controllers (two releases at once) and an operator's
    `rollout halt` read, change and sign rollout.json one after the other, so that no change
    is lost (a halt overwritten by a widening signed from an older read)."""
    fd = os.open(feed_dir / LOCK, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def change(feed_dir: Path, key: minisign.SecretKey, version: str,
           edit: Callable[[RolloutEntry | None], RolloutEntry], *, expires: str,
           now: datetime) -> RolloutEntry:
    """Sign rollout.json with one release's entry as `edit` makes it from the entry signed
    now (read under the lock); the serial grows by one. `edit` may raise to change nothing."""
    with _locked(feed_dir):
        manifest = feedtools.load(feed_dir)
        doc = read_verified(feed_dir, manifest, key) or \
            RolloutDoc(schema=1, app=manifest.app, serial=0, expires=now)
        doc.releases = {v: e for v, e in doc.releases.items() if manifest.release(v) is not None}
        entry = edit(doc.releases.get(version))
        entry.why = logtext.clean(entry.why)[:500]
        doc.releases[version] = entry
        _sign(feed_dir, key, doc, expires, now)
        return entry


def resign(feed_dir: Path, key: minisign.SecretKey, expires: str, now: datetime) -> RolloutDoc:
    """A new serial and expiry, the entries as they are (a timer keeps a finished rollout's
    document fresh, so hosts coming online later still take the release), less those of
    releases the manifest no longer lists (`feed prune` removed them)."""
    with _locked(feed_dir):
        manifest = feedtools.load(feed_dir)
        doc = read_verified(feed_dir, manifest, key)
        if doc is None:
            raise FeedError(f"{feed_dir / rollout.DOCUMENT} does not exist: nothing to "
                            "re-sign")
        doc.releases = {v: e for v, e in doc.releases.items() if manifest.release(v) is not None}
        return _sign(feed_dir, key, doc, expires, now)


def _sign(feed_dir: Path, key: minisign.SecretKey, doc: RolloutDoc, expires: str,
          now: datetime) -> RolloutDoc:
    doc.serial += 1
    doc.expires = publish.expiry(now, expires)
    raw = feed.encode(doc)
    signature = key.sign(raw, f"rollout {doc.app} serial {doc.serial}").encode()
    rollout.verify(raw, signature, [key.public], app=doc.app, mark=None,
                   cycle_start=now)  # as hosts will, before a byte is written
    publish.write_signed(feed_dir, feed_dir / rollout.DOCUMENT, raw, signature,
                         feed_dir / rollout.SIGNATURE)
    return doc


def set_state(feed_dir: Path, key: minisign.SecretKey, version: str, state: RolloutState,
              why: str, expires: str = "1d", share: int | None = None,
              now: datetime | None = None) -> str:
    """`rollout halt | resume | recall`: one signed change, said in one line."""
    when = now or datetime.now(UTC)
    release = guarded_release(feed_dir, version, key, widening=state == "active")
    done = change(feed_dir, key, version, lambda old: RolloutEntry(
        share=share if share is not None else old.share if old is not None else 0,
        state=state, since=when, why=why), expires=expires, now=when)
    yanked = yank.reason(release)
    cap = f" (yanked too: {yanked})" if yanked is not None else \
        f" (the manifest caps it at {release.rollout}%)" if done.share > release.rollout else ""
    return f"{version}: {state} at {done.share}%{cap}" + (f": {why}" if why else "")


def status_json(feed_dir: Path, now: datetime | None = None) -> bytes:
    """`rollout status --json`: rollout.json as the folder holds it, with `expired` (whether
    hosts ignore it now); `null` when there is none yet. For a CI job or a dashboard."""
    doc = read(feed_dir)
    if doc is None:
        return b"null"
    body = msgspec.to_builtins(doc)
    body["expired"] = doc.expires <= (now or datetime.now(UTC))
    return msgspec.json.format(msgspec.json.encode(body), indent=2)


def describe(feed_dir: Path) -> list[str]:
    """`rollout status`: each release rollout.json steers, as hosts would read it."""
    doc = read(feed_dir)
    if doc is None:
        return [f"{feed_dir / rollout.DOCUMENT}: none yet; guarded releases reach no host"]
    now = datetime.now(UTC)
    left = doc.expires - now
    out = [f"{doc.app}: rollout.json serial {doc.serial}, expires "
           f"{doc.expires:%Y-%m-%d %H:%M:%S} UTC"
           + (" (EXPIRED: hosts ignore it; `updaterd rollout resign`)" if left.total_seconds()
              <= 0 else "")]
    for version, e in sorted(doc.releases.items()):
        why = f": {e.why}" if e.why else ""
        out.append(f"{version}  {e.state}  {e.share}%  since {e.since:%Y-%m-%d %H:%M:%S} "
                   f"UTC{why}")
    return out


# -- the fleet's side: Prometheus --------------------------------------------------------------


MAX_FLEET = 10_000_000  # more hosts than any count Prometheus could honestly return


class NoVerdict(Exception):
    """Prometheus cannot say (unreachable, an error, no value): nothing widens."""


@dataclass
class Prometheus:
    """The instant-query API of a Prometheus server (`/api/v1/query`)."""

    url: str
    timeout: float = 5.0

    def query(self, promql: str) -> list[tuple[dict[str, str], float]]:
        import httpx

        try:
            r = httpx.get(self.url.rstrip("/") + "/api/v1/query", params={"query": promql},
                          timeout=self.timeout)
            body = r.json()
        except (httpx.HTTPError, ValueError) as e:
            raise NoVerdict(f"Prometheus at {self.url} cannot be asked: {e}") from None
        if r.status_code != 200 or not isinstance(body, dict) or body.get("status") != \
                "success":
            error = body.get("error") if isinstance(body, dict) else None
            raise NoVerdict(f"Prometheus refused the query ({r.status_code}): "
                            f"{logtext.clean(str(error or r.text))[:300]}")
        try:
            return _samples(body.get("data") or {})
        except (KeyError, IndexError, TypeError, ValueError, AttributeError) as e:
            raise NoVerdict(f"Prometheus answered a malformed result ({type(e).__name__}: "
                            f"{logtext.clean(str(e))[:200]}); nothing is judged on it") from None


def _samples(data: dict[str, object]) -> list[tuple[dict[str, str], float]]:
    """The samples of an instant query's `data`; raises on any shape it does not have."""
    if data.get("resultType") == "scalar":
        result = data["result"]
        if not isinstance(result, list):
            raise TypeError("a scalar result is not a [time, value] pair")
        return [({}, float(result[1]))]
    if data.get("resultType") != "vector":
        raise NoVerdict(f"the query returns a {data.get('resultType')}, not an instant "
                        "vector")
    out = []
    for s in data.get("result") or []:  # type: ignore[attr-defined]
        metric = s.get("metric", {})
        if not isinstance(metric, dict):
            raise TypeError("a sample's labels are not an object")
        out.append((metric, float(s["value"][1])))
    return out


def gate_values(prom: Prometheus, plan: Plan, app: str) -> list[tuple[Gate, float]]:
    """Each gate's value now (the largest the query returns); NoVerdict when any has none."""
    out = []
    for g in plan.gate:
        query = string.Template(g.query).substitute(app=app, version=plan.version)
        samples = [v for _, v in prom.query(query) if not math.isnan(v)]
        if not samples:
            raise NoVerdict(f"gate {g.name!r} has no value (a count that may be absent needs "
                            "`or vector(0)`)")
        out.append((g, max(samples)))
    return out


@dataclass(frozen=True)
class Fleet:
    """How many hosts run the app and the release, how many checked the feed since the
    release was published, and the places of those that may take it but do not run it yet."""

    on_release: int
    places: list[int]
    hosts: int = 0
    checked: int = 0
    # hosts (Prometheus instances) that report one rollout identity: cloned machine ids
    clones: tuple[tuple[str, ...], ...] = ()

    def clones_said(self, version: str) -> str | None:
        """The clones named, before a share is chosen (J184), or None."""
        if not self.clones:
            return None
        groups = "; ".join(", ".join(g) for g in self.clones)
        n = sum(len(g) for g in self.clones)
        return (f"{version}: {n} hosts share a rollout identity with another ({groups}): "
                "cloned images with one /etc/machine-id draw the same place in every "
                "rollout and move together. Give each its own (remove /etc/machine-id and run "
                "`systemd-machine-id-setup`) or set [daemon] host_id")

    def share_for(self, hosts: int, settled: bool) -> int:
        """The smallest share that offers the release to `hosts` hosts in all. Until every
        host checked the feed since the publish (or `settled`: a soak has passed since), the
        places known are not all there are, and no share is chosen from them."""
        more = hosts - self.on_release
        if more <= 0:
            return 1
        if self.checked < self.hosts and not settled:
            raise NoVerdict(f"{self.checked} of {self.hosts} hosts checked the feed since the "
                            "release was published; waiting for their places in the rollout")
        ranked = sorted(self.places)
        if more > len(ranked):  # a fleet smaller than the plan wants
            raise NoVerdict(f"{len(ranked) + self.on_release} hosts report their place in "
                            f"this rollout; the plan wants {hosts} in its first share")
        return min(ranked[more - 1] + 1, 100)


def fleet(prom: Prometheus, app: str, version: str, published: float) -> Fleet:
    """What Prometheus says of the fleet for `version`, each number bounded (J176): hosts
    on it, hosts in all, hosts that checked the feed since `published`, the places of the
    others."""
    def count(promql: str) -> int:
        found = prom.query(f"count({promql})")
        if not found:
            return 0
        value = float(found[0][1])
        if not (value.is_integer() and 0 <= value <= MAX_FLEET):
            raise NoVerdict(f"Prometheus counts {value:g} for {promql}: not a number of "
                            "hosts; nothing widens on it")
        return int(value)

    places = []
    for _, sample in prom.query(f'updaterd_rollout_place{{app="{app}",version="{version}"}}'):
        value = float(sample)
        if math.isnan(value):
            continue
        if not (value.is_integer() and 0 <= value <= 99):  # J176: a host's place is 0-99
            raise NoVerdict(f"a host reports place {value:g} in the rollout of {version}, "
                            "outside 0-99 (a forged or broken sample); nothing widens on it")
        places.append(int(value))
    return Fleet(on_release=count(f'updaterd_app_info{{app="{app}",installed="{version}"}}'),
                 places=places, clones=_clones(prom),
                 hosts=count(f'updaterd_app_info{{app="{app}"}}'),
                 checked=count(f'updaterd_last_check_timestamp_seconds{{app="{app}"}} > '
                               f'{published:.3f}'))


def _clones(prom: Prometheus) -> tuple[tuple[str, ...], ...]:
    """The hosts, by Prometheus instance, that report the same rollout identity."""
    by_id: dict[str, list[str]] = {}
    for labels, _value in prom.query("updaterd_rollout_identity"):
        ident = labels.get("id")
        if ident:
            by_id.setdefault(ident, []).append(labels.get("instance", "?"))
    return tuple(tuple(sorted(g)) for _i, g in sorted(by_id.items()) if len(g) > 1)


# -- run ---------------------------------------------------------------------------------------


class Halted(UpdaterError):
    """A gate was breached and the rollout halted or recalled; or it was already."""


def run(feed_dir: Path, key: minisign.SecretKey, plan: Plan, prom: Prometheus,
        say: Callable[[str], None] = print, clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep) -> None:
    """Widen `plan.version` to 100% step by step; raises Halted on a breach."""
    app = feedtools.load(feed_dir).app
    soak, every = parse_duration(plan.soak), parse_duration(plan.interval)
    renew = parse_duration(plan.expires) / 2
    release = guarded_release(feed_dir, plan.version, key)

    def signed_now() -> RolloutDoc | None:
        """rollout.json as hosts would take it: a forged or edited one steers nothing here."""
        return read_verified(feed_dir, feedtools.load(feed_dir), key)

    doc = signed_now()
    entry = doc.releases.get(plan.version) if doc is not None else None
    if entry is not None and entry.state != "active":
        raise Halted(f"{plan.version} is {entry.state} at {entry.share}%"
                     + (f" ({entry.why})" if entry.why else "")
                     + f": `updaterd rollout resume {plan.version}` first")
    if entry is not None:
        say(f"{plan.version}: picking up at {entry.share}% (since {entry.since:%H:%M:%S} UTC)")
    if release.rollout < 100:
        say(f"{plan.version}: the manifest offers it to {release.rollout}% at most; hosts "
            "take the smaller share")
    holding = Holding(say, plan.version)

    def now() -> datetime:
        return datetime.fromtimestamp(clock(), UTC)

    # `published` has whole seconds: a host that checked within that second may have read
    # the feed before the release was in it, so only checks from the next second on count
    published = release.published.timestamp() + 1

    def widen(step: int, counted: Fleet, on_time: float | None = None) -> RolloutEntry:
        """Sign the next step. A step that follows a soak on time begins where the soak
        ended (the Prometheus round trips of this turn do not add up over the steps)."""
        if (clones := counted.clones_said(plan.version)) is not None:
            say(clones)
        share = max(plan.steps[step], counted.share_for(plan.min_hosts,
                                                        settled=clock() - published >= soak))
        began = on_time if on_time is not None and clock() - on_time < every else clock()

        def still_active(old: RolloutEntry | None) -> RolloutEntry:
            if old is not None and old.state != "active":
                raise _by_hand(plan.version, old)
            return RolloutEntry(share=share, state="active",
                                since=datetime.fromtimestamp(began, UTC))

        signed = change(feed_dir, key, plan.version, still_active, expires=plan.expires,
                        now=now())
        raised = ""
        if signed.share > plan.steps[step]:
            skipped = [f"{s}%" for s in plan.steps[step + 1:] if s <= signed.share]
            raised = (f", raised from {plan.steps[step]}% so that {plan.min_hosts} hosts take "
                      f"it" + (f" (skipping {', '.join(skipped)})" if skipped else ""))
        say(f"{plan.version}: share {signed.share}% (step {step + 1} of {len(plan.steps)}"
            f"{raised}), soak {plan.soak}")
        return signed

    while True:
        current = signed_now()  # an operator may have changed it since the last turn
        now_entry = current.releases.get(plan.version) if current is not None else None
        if now_entry is not None and now_entry.state != "active":
            raise _by_hand(plan.version, now_entry)
        entry = now_entry or entry
        try:
            if entry is None:
                entry = widen(0, fleet(prom, app, plan.version, published))
            for g, value in gate_values(prom, plan, app):
                if value > g.max:
                    _breach(feed_dir, key, plan, entry, f"gate {g.name!r}: {value:g} > "
                                                        f"{g.max:g}", now(), say)
            if clock() - entry.since.timestamp() >= soak:
                step = sum(1 for s in plan.steps if s <= entry.share)
                if step >= len(plan.steps):
                    break
                counted = fleet(prom, app, plan.version, published)
                if (on := counted.on_release) < plan.min_hosts:
                    runs = "1 host runs" if on == 1 else f"{on} hosts run"
                    raise NoVerdict(f"{runs} it; the plan wants {plan.min_hosts} before it "
                                    "widens")
                entry = widen(step, counted, on_time=entry.since.timestamp() + soak)
            holding.clear()
        except NoVerdict as e:
            holding.say(str(e))
        latest = signed_now()
        if latest is not None and latest.expires.timestamp() - clock() < renew:
            resign(feed_dir, key, plan.expires, now())  # hosts ignore an expired document
        soaked = entry.since.timestamp() + soak - clock() if entry is not None else every
        sleep(min(every, soaked) if soaked > 0.05 else every)  # wake when the soak ends
    say(f"{plan.version}: rollout complete: 100% for {plan.soak} with every gate holding")


def _breach(feed_dir: Path, key: minisign.SecretKey, plan: Plan, entry: RolloutEntry,
            why: str, now: datetime, say: Callable[[str], None]) -> None:
    state: RolloutState = "halted" if plan.on_fail == "halt" else "recalled"

    def stop(old: RolloutEntry | None) -> RolloutEntry:
        if old is not None and old.state == "recalled":
            raise _by_hand(plan.version, old)  # a recall by hand is never turned into a halt
        return RolloutEntry(share=old.share if old is not None else entry.share, state=state,
                            since=now, why=why)

    done = change(feed_dir, key, plan.version, stop, expires=plan.expires, now=now)
    say(f"{plan.version}: {state} at {done.share}%: {why}")
    raise Halted(f"{plan.version} {state} at {done.share}%: {why}")


def _by_hand(version: str, entry: RolloutEntry) -> Halted:
    why = f": {entry.why}" if entry.why else ""
    return Halted(f"{version} is {entry.state} at {entry.share}% by hand{why}; "
                  f"`updaterd rollout resume {version}` and run again to go on")


class Holding:
    """Says once why the rollout holds where it is, and again when the reason changes."""

    def __init__(self, say: Callable[[str], None], version: str) -> None:
        self.out, self.version, self.why = say, version, ""

    def say(self, why: str) -> None:
        if why != self.why:
            self.out(f"{self.version}: holding (no widening): {why}")
        self.why = why

    def clear(self) -> None:
        if self.why:
            self.out(f"{self.version}: going on: what held it is gone ({self.why})")
        self.why = ""
