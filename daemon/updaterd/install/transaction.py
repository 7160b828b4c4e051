"""The update and rollback transactions, step by step, journaled, with failpoints.

A staged release (fetched, verified and staged by the engine, `engine/acquire.py`) -> switch ->
restart -> health -> commit, or roll back. Until the switch nothing the application sees
changes. The journal (`state.pending`) is
written before the switch; `recover` finishes or undoes whatever a crash left, so that after a
crash at any instant the app is on exactly one complete version and the state agrees with the disk.
What differs for updaterd itself (a hand-over instead of a restart) is in `lifecycle`.
"""

from __future__ import annotations

import logging
import signal
import time

import trio

from updaterd import failpoints, fdtree, fsutil, versions
from updaterd.errors import HealthCheckFailed, LayoutError, OperationCancelled
from updaterd.host import outcome, pathtrust
from updaterd.host.config import app_unit
from updaterd.host.state import Transaction
from updaterd.install import health, snapshots
from updaterd.install.apprun import AppRun
from updaterd.install.layout import Kept, Staged
from updaterd.trust import treehash
from updaterd.units import parse_duration

log = logging.getLogger("updaterd.transaction")


def _env(run: AppRun, version: str | None, previous: str | None) -> dict[str, str]:
    env = {"UPDATERD_APP": run.name, "UPDATERD_VERSION": version or "",
           "UPDATERD_PREVIOUS_VERSION": previous or "",
           "UPDATERD_SOCKET": run.config.daemon.socket}
    if version:
        env["UPDATERD_RELEASE_DIR"] = str(run.layout.run_dir(version))
    return env


async def apply_staged(run: AppRun, version: str, staged: Staged, digest: str,
                       skipped_before: set[str]) -> str:
    """Switch to the staged `version` (`digest`: of the artifact it came from) and see it
    through; returns "installed" or "rolled_back". `skipped_before`: what was skipped or
    blocked before it was fetched (a skip made since cancels it)."""
    from_version = run.state.installed
    if staged.tree is not None:
        treehash.save(run.state_folder, staged.tree)
    outcome.staged(run.state, version, digest)
    # Inhibitors hold back the switch and restart; nothing has changed yet if we are stopped here.
    await run.hooks.before_switch()
    # The operator's edits apply at once; this is the last step at which one can stop us.
    if version not in skipped_before and (version in run.state.skipped
                                          or version in run.state.blocked):
        raise OperationCancelled(f"{version} was skipped while it was being downloaded")
    if from_version is not None and run.cfg.data_snapshots:
        await _take_snapshot(run, from_version, version)
    # From here on the disk changes what the app sees: journal first, and never be torn.
    with trio.CancelScope(shield=True):
        backup = run.layout.backup(from_version)
        outcome.journaled(run.state, Transaction(kind="update", from_version=from_version,
                                                 to_version=version, started_at=time.time(),
                                                 to_digest=staged.digest, backup=backup))
        run.save()
        failpoints.hit("journal.after_write")
        run.phase("switching", version=version)
        run.layout.switch_to(staged, failpoint="switch")
        failpoints.hit("switch.after_bin_links")
        result = await finish_update(run, from_version, version)
    if result == "interrupted":  # the disk is consistent again: the stop's cancel may land
        await trio.lowlevel.checkpoint()
        raise OperationCancelled(f"{version}: stopped with updaterd during its health check; "
                                 "the check runs again at the next start")
    return result


async def _take_snapshot(run: AppRun, leaving: str, version: str) -> None:
    """`data_snapshots`: `shared/` as `leaving` leaves it, before anything is switched (a
    failure here ends the update with nothing changed)."""
    prefix = snapshots.home(run.cfg)
    if prefix is None:
        return
    run.phase("switching", f"keeping a snapshot of the data {leaving} leaves", version)
    try:
        took = await trio.to_thread.run_sync(snapshots.take, prefix, leaving)
    except OSError as e:
        raise LayoutError(f"{run.name}: the data snapshot of {leaving} failed: "
                          f"{e.strerror or e}; nothing was switched") from None
    if took:
        log.info("%s: data snapshot of %s kept in %s", run.name, leaving,
                 prefix / snapshots.FOLDER / leaving)


def tidy_snapshots(run: AppRun) -> None:
    """After a transaction is recorded: the snapshots of versions no longer kept go, and the
    data a restore took out."""
    prefix = snapshots.home(run.cfg)
    if prefix is None:
        return
    kept = {k.version for k in run.layout.kept()}
    try:
        removed = snapshots.tidy(prefix, kept)
    except (OSError, fdtree.TreeError) as e:  # the next transaction tries again
        log.warning("%s: tidying data snapshots: %s", run.name, e)
        return
    if removed:
        log.info("%s: removed the data snapshots of %s", run.name, ", ".join(removed))


async def finish_update(run: AppRun, from_version: str | None, version: str) -> str:
    """After the switch: restart, health check, then commit or roll back.

    For updaterd itself the restart is a hand-over (`lifecycle.SelfHandOver`): the old daemon
    tries the new release and re-executes into it (`restarting`); the new daemon comes back
    here as the recovery of the journaled transaction, runs the health checks and commits, or
    rolls back.
    """
    timeout = parse_duration(run.cfg.health_timeout)
    env = _env(run, version, from_version)
    run_dir = run.layout.run_dir(version)
    try:
        if not await run.lifecycle.start(run, from_version, version, env, timeout):
            return "restarting"
        failpoints.hit("restart.after")
        if run.cfg.health_check:
            run.phase("health_check", version=version)
            # What root is about to run must be the tree it verified: nobody else can have
            # changed anything from the prefix down to the release (G129).
            unsafe = pathtrust.problem(run_dir, f"{run.name} release")
            if unsafe is not None:
                raise HealthCheckFailed(f"health check not run: {unsafe}")
            await health.run("health check", health.resolve(run.cfg.health_check, run_dir),
                             cwd=run_dir, timeout=timeout, env=env,
                             passed=run.cfg.pass_environment,
                             output=run.state_folder / health.OUTPUT_FILE)
        unit = app_unit(run.cfg)
        if run.cfg.health_notify and unit is not None:
            run.phase("health_check", f"waiting for {unit} to be active", version)
            await health.unit_active(unit, timeout)
        if run.cfg.health_url:
            run.phase("health_check", f"probing {run.cfg.health_url}", version)
            await health.probe_url(run.cfg.health_url, timeout, ca_file=run.cfg.ca_file)
        failpoints.hit("health.after")
    except HealthCheckFailed as e:
        if e.signal in _STOP_SIGNALS and await _stopping_soon(run):
            # Killed with updaterd itself (a unit without KillMode=mixed, a stop signal to the
            # whole group): the release was not judged. The journal stays, and the next start
            # restarts the app and runs the check again (H157).
            log.warning("%s %s: %s as updaterd stopped: not a failure; the release stays "
                        "switched and is checked again at the next start", run.name, version, e)
            return "interrupted"
        back_to = await _intact_rollback_target(run, version, from_version)
        log.error("%s %s: %s; rolling back to %s", run.name, version, e, back_to or "nothing")
        backup = run.state.pending.backup if run.state.pending else ""
        await roll_back(run, from_version=version, to_version=back_to, block=True,
                        reason=str(e), backup=backup)
        return "rolled_back"
    run.phase("committing", version=version)
    failpoints.hit("commit.before_state")
    outcome.committed(run.state, version, from_version)
    run.remember("installed", version, from_version, reason=run.plan)
    run.save()
    failpoints.hit("commit.after_state")
    run.lifecycle.committed(run)
    prune(run)
    run.phase("idle", f"{version} installed", version)
    return "installed"


# What a service manager sends a unit's processes when it stops them (systemd: SIGTERM, then
# SIGKILL; SIGHUP with SendSIGHUP=); not what a crashing app dies of (SIGSEGV, SIGABRT).
_STOP_SIGNALS = frozenset({signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGKILL})
STOP_GRACE = 2.0  # seconds a check killed by a stop signal waits for the daemon's own stop


async def _stopping_soon(run: AppRun) -> bool:
    """Whether updaterd is stopping, waiting STOP_GRACE for it: a stop signal reaches every
    process of the unit at once, and the check's death may be seen before the daemon's own
    signal is (H157)."""
    deadline = trio.current_time() + STOP_GRACE
    while not run.hooks.stopping():
        if trio.current_time() >= deadline:
            return False
        await trio.sleep(0.05)
    return True


async def damage(run: AppRun, kept: Kept) -> list[str]:
    """How a kept release differs from its recorded tree (empty: intact, or nothing recorded).
    Files the app wrote beside its own (bytecode caches) are not damage."""
    rec = treehash.load(run.state_folder, kept.version)
    if rec is None:
        return []
    return await trio.to_thread.run_sync(treehash.differences, kept.path, rec, False)


async def _intact_rollback_target(run: AppRun, failed: str, previous: str | None) -> str | None:
    """Where an automatic rollback goes: `previous` when it is as installed, else the newest
    other kept release that is (H150: it is re-hashed first, as an operator's rollback is).
    When none is, `previous` all the same: the version that failed its checks is worse."""
    if previous is None or not run.layout.knows_version:
        return previous
    kept = {k.version: k for k in run.layout.kept() if k.version != failed}
    older = sorted((v for v in kept if v != previous and versions.orderable(v)),
                   key=versions.key, reverse=True)
    order = [previous, *older]
    for candidate in order:
        if candidate not in kept:
            continue
        found = await damage(run, kept[candidate])
        if not found:
            return candidate
        log.error("%s: %s on disk is not what was installed (%s); not rolling back to it",
                  run.name, candidate, found[0])
    log.error("%s: no kept release is as installed; rolling back to %s all the same (`updaterd "
              "verify %s` lists the differences)", run.name, previous, run.name)
    return previous


async def roll_back(run: AppRun, *, from_version: str, to_version: str | None, block: bool,
                    reason: str, backup: str = "", skip_left: bool = True,
                    recall: bool = False, with_data: bool = False) -> None:
    """Journal, switch back, restart; block the version left when it failed its checks, or
    skip it when the operator went back from it (`skip_left`). `with_data`: the data
    snapshot of `to_version` replaces `shared/` before the restart."""
    run.phase("rolling_back", reason, from_version)
    tx = Transaction(kind="rollback", from_version=from_version, to_version=to_version or "",
                     started_at=time.time(), reason=reason, block=block, backup=backup,
                     skip_left=skip_left, recall=recall, with_data=with_data)
    outcome.journaled(run.state, tx)
    run.save()
    failpoints.hit("rollback.after_journal")
    await complete_rollback(run, tx)


async def complete_rollback(run: AppRun, tx: Transaction) -> None:
    """The idempotent part of a rollback; `recover` calls it again after a crash."""
    to_version = tx.to_version or None
    run.layout.restore(to_version, tx.backup, failpoint="rollback")
    prefix = snapshots.home(run.cfg)
    if tx.with_data and to_version is not None and prefix is not None:
        run.phase("rolling_back", f"putting back the data {to_version} left", tx.from_version)
        snapshots.restore(prefix, to_version, leaving=tx.from_version)
    if to_version is not None:
        await run.lifecycle.restart_back(run, to_version, _env(run, to_version, tx.from_version),
                                         parse_duration(run.cfg.health_timeout))
    failpoints.hit("rollback.after_restart")
    left = tx.from_version
    outcome.switched_back(run.state, tx, to_version, run.config.limits.history_length)
    run.save()
    failpoints.hit("rollback.after_state")
    running = run.lifecycle.running()
    if tx.block and left is not None and left not in (to_version, run.state.previous, running):
        run.layout.discard(left)
        treehash.drop(run.state_folder, left)
    tidy_snapshots(run)
    run.phase("idle", f"rolled back to {to_version or 'nothing'}"
              + (" with its data" if tx.with_data else ""), to_version)
    run.lifecycle.rolled_back(run, to_version)


def prune(run: AppRun) -> None:
    removed = run.layout.prune(run.state.installed, run.state.previous, run.cfg.retain)
    forget_pruned(run, removed)


def forget_pruned(run: AppRun, removed: list[str]) -> None:
    """What the state and the tree records said of versions no longer on disk."""
    outcome.pruned(run.state, removed)
    for v in removed:
        treehash.drop(run.state_folder, v)
    tidy_snapshots(run)
    if removed:
        log.info("%s: removed old versions %s", run.name, ", ".join(removed))
        run.save()


async def recover(run: AppRun) -> None:
    """Clean what a crash left and finish or undo a journaled transaction.

    Every operation starts here, so this is where the app's folders are proved ours first."""
    pathtrust.require_trusted_app(run.cfg, run.name, run.config.daemon)
    for leftover in run.layout.clean_leftovers():
        log.info("%s: removed leftover %s", run.name, leftover)
    fsutil.clean_temp_files(run.state_folder)
    gave_up = run.lifecycle.gave_up()
    tx = run.state.pending
    if tx is None:
        tidy_snapshots(run)
        on_disk = run.layout.installed()
        if run.layout.knows_version and run.state.installed != on_disk:
            said = run.state.installed
            if outcome.found_on_disk(run.state, on_disk, run.config.limits.history_length):
                # Installed before updaterd knew the app (self-install, by hand): adopted.
                log.info("%s: %s is installed; taking it over", run.name, on_disk)
            else:
                log.warning("%s: state says %s but %s is current; following the disk",
                            run.name, said, on_disk)
            run.save()
        return
    if tx.kind == "update" and run.lifecycle.running() == tx.to_version:
        log.info("%s: updaterd %s took over; finishing the update", run.name, tx.to_version)
    else:
        log.warning("%s: finishing an interrupted %s %s -> %s", run.name, tx.kind,
                    tx.from_version, tx.to_version)
    with trio.CancelScope(shield=True):
        if tx.kind == "rollback":
            await complete_rollback(run, tx)
        elif run.layout.switched_to(tx):
            run.layout.settle(tx.to_version)
            await finish_update(run, tx.from_version, tx.to_version)
        else:
            run.layout.undo_interrupted(tx)
            why = gave_up.get(tx.to_version)
            if why is not None:
                log.error("%s: %s", run.name, why)
            outcome.interrupted(run.state, tx, why, run.config.limits.history_length)
            run.save()

