"""The update engine as a library: check, update, rollback and recover, per app.

Both `updaterd --once` and the daemon drive this class; it owns no lock and no sockets.
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import trio

from updaterd import versions
from updaterd.engine import acquire
from updaterd.engine.acquire import drop_unwanted_downloads, fetch_artifact
from updaterd.engine.gate import DeferringGate, SwitchGate, WindowGate
from updaterd.engine.operation import Operation, operation
from updaterd.errors import (
    FeedError,
    LayoutError,
    NoSuchVersion,
    PolicyError,
    RateLimited,
    UnknownApp,
    UpdaterError,
)
from updaterd.host import outcome, state, tokens, trustroot
from updaterd.host.config import AppConfig, Config, host_platform
from updaterd.install import snapshots
from updaterd.install.apprun import AppRun, Hooks, Lifecycle
from updaterd.install.inplace import InplaceLayout
from updaterd.install.layout import InstallLayout, Kept, Layout
from updaterd.install.lifecycle import AppRestart, SelfHandOver
from updaterd.install.transaction import (
    apply_staged,
    forget_pruned,
    prune,
    roll_back,
)
from updaterd.install.transaction import damage as transaction_damage
from updaterd.install.transaction import recover as recover_transaction
from updaterd.net.ratecap import TokenBucket
from updaterd.reports import Checked, Event, RolledBack, Updated
from updaterd.sources import Source, local_folder, make_source, watch
from updaterd.sources.origins import Origins
from updaterd.sources.refresh import FeedSource, Transport
from updaterd.trust import rollout, treehash, yank
from updaterd.trust.feed import Artifact, Manifest, Release, TrustedFeed, is_marker
from updaterd.units import parse_rate

log = logging.getLogger("updaterd.engine")


async def recover(run: AppRun) -> None:
    """Every operation starts here: the app's folders proved ours, what a crash left finished
    or undone (`install.transaction.recover`), and the cache tidied."""
    await recover_transaction(run)
    acquire.tidy_cache(run)
ANY_PLATFORM = frozenset({"any", "noarch"})


def host_id() -> str:
    """The identity used for phased rollout: /etc/machine-id, else the host name."""
    try:
        text = Path("/etc/machine-id").read_text().strip()
        if text:
            return text
    except OSError:
        pass
    return socket.gethostname()


def _log_event(event: Event) -> None:
    if event.kind == "phase" and event.message:
        log.info("%s: %s", event.app, event.message)


class Engine:
    """The whole update flow for every configured app."""

    def __init__(self, config: Config, emit: Callable[[Event], None] = _log_event, *,
                 hand_over: Callable[[Path], None] | None = None,
                 transports: Callable[[str, AppConfig], Transport] | None = None,
                 stopping: Callable[[], bool] | None = None) -> None:
        self.config = config
        self.emit = emit
        self.stopping = stopping  # the daemon was told to stop (H157)
        self.hand_over = hand_over
        # where each app's signed feed comes from (tests: FeedSimulator); None: its `source` key
        self.transports = transports
        self.download_limiter = trio.CapacityLimiter(config.daemon.max_parallel_downloads)
        self.global_rate: TokenBucket | None = None
        self._states: dict[str, state.AppState] = {}
        self.moved: dict[str, str] = {}  # URLs moved for good (301, 308), for this run
        self.origins = Origins()  # how each origin of a feed with mirrors answered, this run
        self.reconfigure(config)

    def reconfigure(self, config: Config) -> None:
        """Take a new configuration (reload): apps, limits and the daemon-wide caps."""
        old_rate = self.config.daemon.max_rate if self.global_rate is not None else None
        self.config = config
        tokens.load(config)  # out of the environment before any command runs
        self.download_limiter.total_tokens = config.daemon.max_parallel_downloads
        rate = config.daemon.max_rate
        if rate != old_rate:
            self.global_rate = TokenBucket(parse_rate(rate)) if rate else None
        self.platform = config.daemon.platform or host_platform()
        self.host_id = config.daemon.host_id or host_id()

    def _cfg(self, app: str) -> AppConfig:
        try:
            return self.config.apps[app]
        except KeyError:
            raise UnknownApp(f"no app named {app!r} in {self.config.path}") from None

    def open_app(self, app: str, gate: SwitchGate | None = None) -> AppRun:
        cfg = self._cfg(app)
        state_dir = Path(self.config.daemon.state_dir)
        folder = state.app_dir(state_dir, app)
        layout: InstallLayout
        lifecycle: Lifecycle = AppRestart()
        if cfg.install == "inplace":
            assert cfg.target is not None
            layout = InplaceLayout(app, Path(cfg.target), folder / "backups")
        else:
            assert cfg.prefix is not None
            layout = Layout(Path(cfg.prefix), tuple(cfg.shared))
            if cfg.self_update:  # the configuration allows it with releases only
                lifecycle = SelfHandOver(layout.prefix, self.hand_over)
        hooks = Hooks(download_limiter=self.download_limiter)
        if self.stopping is not None:
            hooks.stopping = self.stopping
        if gate is not None:
            hooks.before_switch = gate.passage
        return AppRun(name=app, cfg=cfg, config=self.config, layout=layout,
                      state_folder=folder,
                      cache=Path(self.config.daemon.cache_dir) / app,
                      state=self.load_state(app), emit=self.emit, hooks=hooks,
                      lifecycle=lifecycle)

    def load_state(self, app: str) -> state.AppState:
        """The state of `app`: read once, then one object shared by every operation and
        every edit (`pause`, `skip` ...), so an edit made while an operation runs is neither
        lost when it saves nor unseen at its next step."""
        self._cfg(app)
        if app not in self._states:
            self._states[app] = state.load(Path(self.config.daemon.state_dir), app)
        return self._states[app]

    @asynccontextmanager
    async def _source(self, run: AppRun, quiet: bool = False,
                      fresh: bool = False) -> AsyncIterator[Source]:
        """The app's source for one operation; `quiet`: its retries are not told as phases
        (a look between checks is no operation); `fresh`: caches revalidate its documents."""
        if self.transports is not None:
            yield FeedSource(run.name, run.cfg, self.config.limits,
                             self.transports(run.name, run.cfg), run.state_folder)
            return
        if local_folder(run.cfg) is not None:
            yield make_source(run.name, run.cfg, self.config.limits, None, run.state_folder)
            return
        from updaterd.net.fetcher import Fetcher  # httpx is loaded by the first network feed

        caps = [TokenBucket(parse_rate(run.cfg.max_rate))] if run.cfg.max_rate else []
        if self.global_rate is not None:
            caps.append(self.global_rate)
        fetcher = Fetcher(self.config.limits, allow_insecure=run.cfg.allow_insecure,
                          proxy=run.cfg.proxy, rate_caps=caps, ca_file=run.cfg.ca_file,
                          moved=self.moved)
        if quiet:
            fetcher.on_retry = lambda text: log.debug("%s: %s", run.name, text)
        else:
            fetcher.on_retry = lambda text: run.phase(run.step, text)  # same phase, says why
        try:
            yield make_source(run.name, run.cfg, self.config.limits, fetcher, run.state_folder,
                              fresh, self.origins)
        finally:
            await fetcher.aclose()

    def _policy(self, run: AppRun) -> versions.Policy:
        return versions.Policy(app=run.name, host_id=self.host_id, channel=run.cfg.channel,
                               pin=run.cfg.pin, skipped=frozenset(run.state.skipped),
                               blocked=frozenset(run.state.blocked))

    async def _refresh(self, run: AppRun, source: Source,
                       wanted: str | None = None) -> tuple[TrustedFeed, Checked]:
        """Fetch and verify the feed, persist what it proved, decide what is available.

        The cache keeps the files of the available version and of `wanted` (a version asked
        for on purpose), and nothing else."""
        cycle_start = time.time()
        run.phase("checking")
        try:
            trusted = await self._fetch(run, source, cycle_start)
        except RateLimited as e:
            outcome.rate_limited(run.state, e.until)
            outcome.check_attempted(run.state, cycle_start)
            raise
        except UpdaterError:
            outcome.check_attempted(run.state, cycle_start)  # the operation records the failure
            raise
        manifest = trusted.manifest
        known = run.state.available  # what the last check found (said then)
        governed = rollout.governed(trusted)
        active = {v for v, g in governed.items() if g.recalled is None and g.held is None}
        for v in outcome.recalls_lifted(run.state, active):
            log.warning("%s: %s is active in its rollout again; the block its recall placed is "
                        "lifted", run.name, v)
        current = governed.get(run.state.installed or "")
        if current is not None and current.recalled is not None:
            log.error("%s: %s, which runs here, is recalled by its rollout: %s (an automatic "
                      "update goes back; with auto_update off, `updaterctl update %s` does)",
                      run.name, run.state.installed, current.recalled, run.name)
        offers = [versions.Offer(r.version, r.channel, governed[r.version].share,
                                 yank.reason(r), governed[r.version].held)
                  for r in manifest.releases if self._artifact(r) is not None]
        baseline = run.state.installed
        if run.cfg.source == "github":  # no signed serial: the newest version ever installed
            baseline = versions.highest(baseline, run.state.highest_installed)  # is the floor
        choice = versions.choose(offers, baseline, self._policy(run))
        if trusted.validators is not None:
            outcome.validators(run.state, *trusted.validators, trusted.origin)
        outcome.rate_limited(run.state, None)
        downloads = sorted({a.url.rsplit("/", 1)[-1] for r in manifest.releases
                            if r.version in (choice.version, wanted) for a in r.artifacts
                            if not is_marker(a)})
        yanked = {r.version: why for r in manifest.releases
                  if (why := yank.reason(r)) is not None}
        outcome.checked(run.state, serial=manifest.serial, digest=trusted.digest,
                        available=choice.version, passed_over=choice.passed_over,
                        at=cycle_start, downloads=downloads, yanked=yanked,
                        rollout_mark=trusted.rollout_mark,
                        rollout_validators=trusted.rollout_validators,
                        rollout_buckets=self._places(run, manifest),
                        recalled={v: g.recalled for v, g in governed.items()
                                  if g.recalled is not None})
        run.save()
        drop_unwanted_downloads(run)
        found = f"{choice.version} is available" if choice.version else "nothing new"
        if run.state.in_progress == "update" and choice.version is not None \
                and choice.version == known:
            found = ""  # an update goes on with what the last check found, and said
        run.phase("idle", found)
        return trusted, Checked(current=run.state.installed, available=choice.version,
                                checked_at=cycle_start, passed_over=choice.passed_over)

    @staticmethod
    async def _fetch(run: AppRun, source: Source, cycle_start: float) -> TrustedFeed:
        """The feed as `source` fetched it and this refresh's trusted set accepted it. A key
        rotation the set accepted is kept even when the manifest after it is refused: a key
        it revoked stays revoked."""
        trust = trustroot.trusted_set(run.name, run.cfg, run.state, cycle_start)
        try:
            return await source.fetch(run.state, trust)
        finally:
            trustroot.keep(run.cfg, run.state, trust)

    def _places(self, run: AppRun, manifest: Manifest) -> dict[str, int]:
        """This host's place (0-99) in the rollout of each guarded release it would take
        but for the share (newer than what it runs, on a channel it follows, inside its pin,
        neither skipped nor blocked): it takes the release once the share is above its place.
        The metrics show it, so that a controller can tell how many hosts a share reaches."""
        current, policy = run.state.installed, self._policy(run)
        return {r.version: versions.rollout_bucket(self.host_id, run.name, r.version)
                for r in manifest.releases
                if rollout.is_guarded(r) and versions.orderable(r.version)
                and (current is None or versions.is_newer(r.version, current))
                and versions.would_take(versions.Offer(r.version, r.channel,
                                                       yanked=yank.reason(r)), policy)}

    @staticmethod
    def _followed(manifest: Manifest, version: str, run: AppRun) -> Release | None:
        """The release `version` on a channel the app follows (the channel ladder)."""
        return next((r for r in manifest.releases if r.version == version
                     and versions.follows(run.cfg.channel, r.channel)), None)

    def _artifact(self, release: Release) -> Artifact | None:
        for a in release.artifacts:
            if a.platform == self.platform:
                return a
        for a in release.artifacts:
            if a.platform in ANY_PLATFORM:
                return a
        return None

    # -- what the control socket reads and edits ---------------------------------------------

    async def kept(self, app: str) -> list[tuple[Kept, bool]]:
        """What a rollback can return to, each with whether it is what runs now (inplace: the
        backup that is, byte for byte, what the target holds)."""
        run = self.open_app(app)
        return await trio.to_thread.run_sync(run.layout.kept_and_current, run.state.installed)

    async def prune(self, app: str, keep: int | None = None,
                    force: bool = False) -> tuple[list[str], list[str]]:
        """`updaterctl prune`: remove kept versions beyond `keep` (default: `retain`) besides
        the current one, which stays; so does the rollback target unless `force`. Returns
        (removed, still kept)."""
        run = self.open_app(app)
        await recover(run)
        previous = None if force else run.state.previous
        retain = run.cfg.retain if keep is None else keep
        removed = await trio.to_thread.run_sync(run.layout.prune, run.state.installed,
                                                previous, retain)
        forget_pruned(run, removed)
        kept = [k.version for k in await trio.to_thread.run_sync(run.layout.kept)]
        return versions.ordered(removed), kept

    def edit_state(self, app: str, edit: Callable[[state.AppState, int], None]) -> None:
        """An operator's edit of the stored state (see `outcome`), saved at once. No lock: the
        state object is the one a running operation holds, which sees the edit at its next
        step and keeps it when it saves."""
        run = self.open_app(app)
        edit(run.state, self.config.limits.history_length)
        run.save()

    # -- the verbs ---------------------------------------------------------------------------

    async def recover(self, app: str) -> None:
        """Finish or undo what a crash left for `app`."""
        await recover(self.open_app(app))

    async def check(self, app: str, force: bool = False, fresh: bool = False) -> Checked:
        """Fetch the feed and report what an automatic update would install.

        `force` drops the stored validators (and a server's wait) so that the whole feed is
        fetched again; `fresh` asks every cache on the way to revalidate it with the origin.
        """
        run = self.open_app(app)
        async with operation(run, "check") as op:
            await recover(run)
            if force:  # the operator asks: the validators and a server's wait are dropped
                outcome.forced(run.state)
            async with self._source(run, fresh=fresh) as source:
                _, result = await self._refresh(run, source)
            op.succeeded("checked")
        return result

    async def look(self, app: str, seen: watch.Seen) -> str | None:
        """Between checks (`watch_interval`): why the feed must be checked now, or None. Costs
        one or two conditional requests; records nothing, so it needs no lock; a feed that
        cannot be reached is no news here (the scheduled check reports it)."""
        run = self.open_app(app)
        if run.state.serial is None:  # never checked: the first check is scheduled anyway
            return None
        async with self._source(run, quiet=True) as source:
            if run.cfg.mirrors and run.cfg.source == "manifest":
                from updaterd.sources.mirrors import MirroredSource  # loaded with httpx

                if isinstance(source, MirroredSource):
                    return await source.look(run.state, self.config.limits, seen)
            if not isinstance(source, FeedSource):
                return None
            return await watch.changed(source.transport, run.state, self.config.limits, seen)

    async def prefetch(self, app: str) -> Checked:
        """Check, and download and verify the available version without installing it."""
        run = self.open_app(app)
        async with operation(run, "check") as op:
            await recover(run)
            result = await self._prefetch(run, op)
            op.succeeded("checked", version=result.available)
        return result

    async def _prefetch(self, run: AppRun, op: Operation) -> Checked:
        async with self._source(run) as source:
            trusted, result = await self._refresh(run, source)
            if result.available is not None:
                release = self._followed(trusted.manifest, result.available, run)
                artifact = self._artifact(release) if release else None
                if release is not None and artifact is not None:
                    op.version = release.version
                    f = await fetch_artifact(run, source, release, artifact)
                    f.close()
                    run.phase("idle", f"{release.version} downloaded; waiting for "
                                      f"`updaterctl update {run.name}`", release.version)
                    op.version = None  # downloaded: nothing failed to install
        return result

    def window(self, app: str) -> WindowGate:
        """The app's maintenance window."""
        return WindowGate(app, self._cfg(app).window)

    async def update(self, app: str, version: str | None = None,
                     gate: SwitchGate | None = None) -> Updated:
        """Install the available version, or `version` on purpose (even older or blocked).

        `gate` is asked before the switch (the daemon's waits); without one, the window
        defers: outside it, a run without a daemon to wait in downloads and verifies the
        version, and defers the switch.
        """
        gate = gate or DeferringGate(self.window(app))
        run = self.open_app(app, gate)
        async with operation(run, "update") as op:
            await recover(run)
            if (why := gate.defers()) is not None:
                check = await self._prefetch(run, op)
                done = Updated(from_version=check.current, to_version=check.available,
                               result="up_to_date" if check.available is None else "deferred",
                               reason=why)
                op.succeeded(done.result, done.describe(""), check.available)
                return done
            done = await self._update(run, op, version)
            op.succeeded(done.result, done.describe(""), done.to_version)
        return done

    async def _update(self, run: AppRun, op: Operation, version: str | None) -> Updated:
        app, before = run.name, run.state.installed
        async with self._source(run) as source:
            trusted, result = await self._refresh(run, source, wanted=version)
            if version is not None:
                release = self._followed(trusted.manifest, version, run) or \
                    trusted.manifest.release(version)
                if release is None:
                    raise NoSuchVersion(f"{app}: the feed has no version {version!r}")
            else:
                recalls = self._recalls(trusted)
                if before in recalls:
                    return await self._leave_recalled(run, op, before, recalls, trusted)
                if result.available is None:
                    return Updated(from_version=before, to_version=before, result="up_to_date")
                release = self._followed(trusted.manifest, result.available, run)
                assert release is not None
            if release.version == before:
                return Updated(from_version=before, to_version=before, result="up_to_date")
            artifact = self._artifact(release)
            if artifact is None:
                raise FeedError(f"{app} {release.version}: no artifact for {self.platform}")
            if (why := yank.reason(release)) is not None:  # only ever on purpose (`choose`)
                log.warning("%s: installing %s on purpose although the publisher yanked it: %s",
                            app, release.version, why)
            op.version = release.version
            skipped_before = set(run.state.skipped) | set(run.state.blocked)
            staged = await acquire.acquire(run, source, release, artifact)
            ended = await apply_staged(run, release.version, staged,
                                       artifact.blake3 or artifact.sha256 or "", skipped_before)
            acquire.discard_download(run, artifact)
        reason = run.state.last_error or "" if ended == "rolled_back" else run.plan
        if ended == "restarting":
            reason = ("updaterd re-executes into it and finishes the health check"
                      if self.hand_over is not None else
                      "the next start of updaterd finishes its health check")
        return Updated(from_version=before, to_version=release.version,
                       result=ended, reason=reason)  # type: ignore[arg-type]

    @staticmethod
    def _recalls(trusted: TrustedFeed) -> dict[str, str]:
        """The releases the rollout key recalled, and why."""
        return {v: g.recalled for v, g in rollout.governed(trusted).items()
                if g.recalled is not None}

    async def _leave_recalled(self, run: AppRun, op: Operation, current: str | None,
                              recalls: dict[str, str], trusted: TrustedFeed) -> Updated:
        """Go back from a recalled release to the newest kept release a host may run (the
        recalled one is blocked, as after a failed check): not recalled, not yanked by the
        signed manifest, not blocked or skipped here (J173). Stay when none is kept, and
        say why each kept one is not taken."""
        assert current is not None
        reason = f"recalled by its rollout: {recalls[current]}"
        listed = {r.version: r for r in trusted.manifest.releases}
        candidates = [k for k in run.layout.kept() if k.version != current]
        why_not = {k.version: self._not_to_go_back_to(k.version, recalls, listed, run.state)
                   for k in candidates}
        refused = [f"{v} is {why}" for v, why in why_not.items() if why is not None]
        usable = [k for k in candidates if why_not[k.version] is None]
        # the newest version; of an in-place app's backups of it (newest first), the newest
        target = max(usable, key=lambda k: versions.key(k.version), default=None)
        if target is None:
            why = f"none of the kept releases may run here ({'; '.join(refused)})" \
                if refused else "no other release is kept to go back to"
            log.error("%s: %s is %s; %s, so it stays", run.name, current, reason, why)
            return Updated(from_version=current, to_version=current, result="up_to_date",
                           reason=reason)
        if run.layout.knows_version:
            await self._refuse_damaged(run, target)
        log.error("%s: %s is %s; going back to %s", run.name, current, reason, target.version)
        op.version = current
        await run.hooks.before_switch()  # the window and the inhibitors, as any switch
        with trio.CancelScope(shield=True):
            # in-place (J177): the backup file is what goes back, and what is left is kept
            # as a rollback by hand keeps it (a recall may be lifted)
            backup = ""
            if not run.layout.knows_version:
                run.layout.backup(current)
                backup = str(target.path)
            await roll_back(run, from_version=current, to_version=target.version, block=True,
                            reason=reason, recall=True, backup=backup)
        if not run.layout.knows_version:
            prune(run)
        # as an update that rolled back says it: the version left, and the one it runs now
        return Updated(from_version=target.version, to_version=current, result="rolled_back",
                       reason=reason)

    @staticmethod
    def _not_to_go_back_to(version: str, recalls: dict[str, str], listed: dict[str, Release],
                           st: state.AppState) -> str | None:
        """Why a recall must not move a host onto the kept `version` (None: it may)."""
        release = listed.get(version)
        yanked = yank.reason(release) if release is not None else None
        return ("recalled too" if version in recalls
                else "cannot be ordered" if not versions.orderable(version)
                else f"yanked ({yanked})" if yanked is not None
                else "blocked here" if version in st.blocked
                else "skipped here" if version in st.skipped else None)

    async def rollback(self, app: str, to: str | None = None,
                       with_data: bool = False) -> RolledBack:
        """Go back to the previous (or a named) kept version; the version left is skipped.

        `to` is a version, or (inplace) the path of one of the app's backups; any other path
        is refused. `with_data`: the data snapshot of that version replaces `shared/` (what
        is there now is kept as the snapshot of the version left); to the current version,
        only the data goes back (after a recall moved the code) and the app restarts.
        """
        run = self.open_app(app)
        async with operation(run, "rollback") as op:
            await recover(run)
            current = run.state.installed
            wanted = to or run.state.previous
            if current is None:
                raise NoSuchVersion(f"{app}: nothing is installed")
            if wanted is None:
                raise NoSuchVersion(f"{app}: no previous version is kept")
            try:
                kept = run.layout.find_kept(wanted)
            except LayoutError as e:
                raise PolicyError(str(e)) from None
            if kept is None:
                raise NoSuchVersion(f"{app}: version {wanted} is not kept; `updaterctl "
                                    f"list-backups {app}` lists what is")
            data_only = kept.version == current and with_data  # a recall moved the code back
            if kept.version == current and run.layout.knows_version and not data_only:
                raise NoSuchVersion(f"{app}: {kept.version} is already the current version")
            if with_data:
                self._require_data_snapshot(run, kept.version)
            if run.layout.knows_version:
                await self._refuse_damaged(run, kept)
            forward = versions.is_newer(kept.version, current)
            with trio.CancelScope(shield=True):
                backup = run.layout.backup(current)  # inplace: keep what we leave, to go on
                await roll_back(run, from_version=current, to_version=kept.version,
                                block=False, reason="switched forward by the operator"
                                if forward else "its data put back by the operator"
                                if data_only else "rolled back by the operator",
                                backup=str(kept.path) if not run.layout.knows_version
                                else backup, skip_left=not forward and not data_only,
                                with_data=with_data)
            if not run.layout.knows_version:
                prune(run)
            done = RolledBack(from_version=current, to_version=kept.version, forward=forward,
                              with_data=with_data)
            op.succeeded("rolled_back", done.describe(""), kept.version)
        return done

    @staticmethod
    def _require_data_snapshot(run: AppRun, version: str) -> None:
        """`rollback --with-data` only where the data `version` left is kept."""
        prefix = snapshots.home(run.cfg)
        if prefix is None:
            raise PolicyError(f"{run.name}: --with-data puts back the app's `shared` paths; "
                              "it has none")
        if not snapshots.has(prefix, version):
            why = "" if run.cfg.data_snapshots else \
                " (data_snapshots is off in the configuration)"
            raise NoSuchVersion(f"{run.name}: no data snapshot of {version} is kept{why}; "
                                f"`updaterctl list-backups {run.name}` shows which are")

    def data_snapshots(self, app: str) -> dict[str, int]:
        """Bytes of each data snapshot kept for `app`, by version."""
        prefix = snapshots.home(self._cfg(app))
        return {} if prefix is None else snapshots.sizes(prefix)

    @staticmethod
    async def _refuse_damaged(run: AppRun, kept: Kept) -> None:
        """A kept release is re-hashed before it is switched to: a file changed or removed since
        it was installed (a disk fault, a hand edit) would otherwise become the running app.
        Files the app wrote beside its own (bytecode caches) are no reason to refuse."""
        damage = await transaction_damage(run, kept)
        if damage:
            raise LayoutError(
                f"{kept.version} on disk is not what was installed ({len(damage)} "
                f"difference{'s' if len(damage) > 1 else ''}, first: {damage[0]}); refusing "
                f"to switch to it. `updaterd verify {run.name}` lists them; `updaterctl update "
                f"{run.name} --version {kept.version}` installs it afresh")

    def rehash_releases(self, app: str) -> list[tuple[str, list[str] | None]]:
        """Re-hash every kept release of `app` against its recorded tree: (version, problems),
        problems None when the release has no record (installed before records were kept)."""
        run = self.open_app(app)
        if not run.layout.keeps_trees:
            raise PolicyError(f"{app}: verify covers install = \"releases\" apps")
        out: list[tuple[str, list[str] | None]] = []
        for kept in run.layout.kept():
            rec = treehash.load(run.state_folder, kept.version)
            out.append((kept.version, None if rec is None else
                        treehash.differences(kept.path, rec)))
        return out

    async def run_once(self) -> int:
        """One pass over every app: recover, check, and update where `auto_update` is on.

        Returns the number of apps that failed.
        """
        failures = 0
        for app, cfg in self.config.apps.items():
            try:
                if self.load_state(app).paused:
                    log.info("%s: paused; skipped", app)
                    continue
                if cfg.auto_update:
                    result = await self.update(app)
                    failed = result.result == "rolled_back"
                    log.log(logging.ERROR if failed else logging.INFO, "%s",
                            result.describe(app))
                    failures += failed
                else:
                    check = await self.check(app)
                    log.info("%s: current %s, available %s (auto_update is off)", app,
                             check.current, check.available)
            except RateLimited as e:
                # The server asks us to wait, and the next run asks again: not a failure (a
                # cron job would otherwise mail every throttled run); `status` shows it.
                log.warning("%s: %s", app, e)
            except UpdaterError as e:
                failures += 1
                log.error("%s: %s", app, e)
        return failures
