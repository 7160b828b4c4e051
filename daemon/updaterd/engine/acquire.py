"""Acquiring a release: everything before the switch that reaches out for bytes. The free
space first (the oldest kept releases go if the disk needs it), then a delta from a kept release
when the feed offers one that fits (every fall-back counted by its reason, J179), else the
full artifact, fetched into the cache, verified as it arrives and staged. `install/` takes the
staged release from here and never fetches anything; the cache keeps only what the last check
wants.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from pathlib import Path
from typing import BinaryIO, Literal

import trio

from updaterctl.vocabulary import human_size
from updaterd import fsutil
from updaterd.engine import streaming
from updaterd.errors import LayoutError, UpdaterError
from updaterd.install import delta
from updaterd.install import shared as shared_paths
from updaterd.install.apprun import AppRun
from updaterd.install.layout import Staged
from updaterd.install.transaction import forget_pruned
from updaterd.net.cachefile import Expected, ProgressFn, keep_only
from updaterd.reports import Event
from updaterd.sources import Source
from updaterd.trust import archive, treehash
from updaterd.trust.feed import Artifact, Release

log = logging.getLogger("updaterd.acquire")
Plan = Literal["full", "delta"]


async def acquire(run: AppRun, source: Source, release: Release, artifact: Artifact) -> Staged:
    """`release` staged and ready to switch to: built from a delta, else fetched whole."""
    staged = await _stage_from_delta(run, source, release, artifact)
    if staged is None:
        staged = await _stage_as_it_downloads(run, source, release, artifact)
    if staged is not None:
        return staged
    f = await fetch_artifact(run, source, release, artifact)
    try:
        run.phase("staging", version=release.version)
        return await _stage(run, f, artifact, release.version)
    finally:
        f.close()


def discard_download(run: AppRun, artifact: Artifact) -> None:
    """The artifact an install no longer needs leaves the cache."""
    with contextlib.suppress(FileNotFoundError):
        (run.cache / artifact.url.rsplit("/", 1)[-1]).unlink()


def tidy_cache(run: AppRun) -> None:
    """What a crash left in the cache (temp files), and what the last check no longer wants."""
    if run.cache.is_dir():
        fsutil.clean_temp_files(run.cache)
        drop_unwanted_downloads(run)


def _free(folder: Path) -> int:
    st = os.statvfs(folder)
    return st.f_bavail * st.f_frsize


def _require_free_space(run: AppRun, artifact: Artifact, cached: bool = True) -> None:
    """Refuse before downloading when the cache (`cached`: the artifact goes through it) or
    the install folder cannot hold it; on the install folder's file system, the oldest kept
    releases go first (never the current one or the rollback target), as retention would
    have removed them at the next install anyway."""
    space = run.layout.space_folder
    folders = ((run.cache, artifact.size), (space, artifact.size)) if cached else \
        ((space, artifact.size),)
    for folder, need in folders:
        free = _free(folder)
        same_disk = os.stat(folder).st_dev == os.stat(space).st_dev
        while free < need and same_disk and (gone := _drop_oldest_kept(run)) is not None:
            log.warning("%s: %s free in %s, %s needed: removed the oldest kept release %s",
                        run.name, human_size(free), folder, human_size(need), gone)
            free = _free(folder)
        if free < need:
            raise LayoutError(f"{folder} has {human_size(free)} free; {human_size(need)} are "
                              f"needed ({free:,} and {need:,} bytes)")


def _drop_oldest_kept(run: AppRun) -> str | None:
    """Remove the oldest kept release that is neither current nor the rollback target; None
    when there is none (or the install mode keeps no release folders)."""
    layout = run.layout.release_folders()
    if layout is None:
        return None
    protected = {run.state.installed, run.state.previous}
    spare = [v for v in layout.versions_on_disk() if v not in protected]
    if not spare:
        return None
    layout.retire(layout.release(spare[0]), failpoint="prune.after_rename")
    forget_pruned(run, [spare[0]])
    return spare[0]


async def _stage(run: AppRun, f: BinaryIO, artifact: Artifact, version: str) -> Staged:
    """Make the version ready to switch to (a release folder, or a file next to the target)."""
    kind = archive.kind_of(artifact.url.rsplit("/", 1)[-1])
    raw_name = run.cfg.executable or run.name
    try:
        return await trio.to_thread.run_sync(run.layout.stage, f, kind,
                                             run.config.limits.extraction(), raw_name,
                                             run.cfg.executable, version)
    except OSError as e:  # a full disk, most often; the staging area is already cleaned
        raise LayoutError(f"{run.layout.space_folder}: {e.strerror or e} while staging "
                          f"{version}") from None


async def fetch_artifact(run: AppRun, source: Source, release: Release,
                         artifact: Artifact, plan: Plan = "full") -> BinaryIO:
    """Fetch and verify the artifact into the cache; returns the verified file, open."""
    version = release.version
    run.step = "downloading"  # what fails from here fails at this step (the phase comes once
    run.layout.preflight()  # the download really starts)
    fsutil.ensure_private_dir(run.cache)
    _require_free_space(run, artifact)
    run.phase("downloading", f"downloading {version} from {source.describe(artifact)}",
              version)
    expected = Expected(artifact.size, artifact.sha256, artifact.blake3)
    dest = run.cache / artifact.url.rsplit("/", 1)[-1]
    progress = _progress(run, version, plan)
    limiter = run.hooks.download_limiter
    if limiter is None:
        return await source.fetch_artifact(artifact, dest, expected, progress)
    async with limiter:
        return await source.fetch_artifact(artifact, dest, expected, progress)


def _progress(run: AppRun, version: str, plan: Plan) -> ProgressFn:
    """Progress events of a download, four a second at most, and the last one."""
    last = [0.0]

    def progress(done: int, total: int) -> None:
        now = time.monotonic()
        if now - last[0] >= 0.25 or done == total:
            last[0] = now
            run.emit(Event(app=run.name, kind="progress", phase="downloading", version=version,
                           done=done, total=total, at=time.time(), plan=plan))

    return progress


async def _stage_as_it_downloads(run: AppRun, source: Source, release: Release,
                                 artifact: Artifact) -> Staged | None:
    """The release unpacked from its artifact as it downloads (engine/streaming.py); None
    when it does not stream, or stopped in a way the cache may get past."""
    if not streaming.may_stream(run, source, artifact):
        return None
    version = release.version
    run.step = "downloading"
    run.layout.preflight()
    fsutil.ensure_private_dir(run.cache)
    _require_free_space(run, artifact, cached=False)  # the archive is never kept whole
    run.phase("downloading", f"installing {version} as it downloads from "
              f"{source.describe(artifact)}", version)
    progress = _progress(run, version, "full")
    limiter = run.hooks.download_limiter
    if limiter is None:
        return await streaming.install_as_it_downloads(run, source, release, artifact,
                                                       progress)
    async with limiter:
        return await streaming.install_as_it_downloads(run, source, release, artifact,
                                                       progress)


async def _stage_from_delta(run: AppRun, source: Source, release: Release,
                            artifact: Artifact) -> Staged | None:
    """Build the release from a kept one and a pack of what changed, when the feed offers one
    that fits a release on disk; None when there is none, or when using it failed (the reason
    is logged, nothing is left behind, and the caller fetches the full artifact)."""
    layout = run.layout.release_folders()
    if layout is None:
        return None
    wanted = delta.descriptor_platform(artifact.platform)
    described = next((a for a in release.artifacts if a.platform == wanted), None)
    records = {k.version: rec for k in layout.kept()
               if (rec := treehash.load(run.state_folder, k.version)) is not None}
    if described is None or not records or described.size > delta.MAX_DESCRIPTOR or \
            described.size >= artifact.size:  # the description alone costs more than it saves
        return None
    unseeded = [p for p in layout.shared
                if not os.path.lexists(layout.prefix / shared_paths.FOLDER / p)]
    if unseeded:  # a first seed may come from the release's own copy: only the archive has it
        _delta_given_up(run, release, "shared", f"shared path {unseeded[0]} is not seeded yet")
        return None
    fetched: list[Path] = []
    try:
        f = await fetch_artifact(run, source, release, described, "delta")
        fetched.append(run.cache / described.url.rsplit("/", 1)[-1])
        with f:
            desc = delta.decode(f.read(described.size + 1), run.name, release.version,
                                artifact)
        fits, refused = [], []
        for candidate in desc.packs:
            if candidate.base not in records:
                continue
            why = delta.unusable(candidate, described.size, artifact.size)
            if why:
                log.info("%s: no delta from %s: %s", run.name, candidate.base, why)
                refused.append(("costly", f"from {candidate.base}: {why}"))
                continue
            try:
                fits.append((candidate, delta.plan(desc, candidate, records[candidate.base],
                                                   layout.shared)))
            except delta.DeltaError as e:  # known before the pack is downloaded
                log.info("%s: no delta from %s: %s", run.name, candidate.base, e)
                refused.append((e.reason, f"from {candidate.base}: {e}"))
        if not fits:
            reason, why = refused[0] if refused else \
                ("no-base", "no pack from a release kept here")
            _delta_given_up(run, release, reason, why)
            return None
        pack, entries = min(fits, key=lambda fit: fit[0].size)
        log.info("%s: %s from %s as a delta of %d bytes instead of %d", run.name,
                 release.version, pack.base, described.size + pack.size, artifact.size)
        packed = Artifact(platform=wanted, url=pack.url, size=pack.size, blake3=pack.blake3)
        pack_file = await fetch_artifact(run, source, release, packed, "delta")
        fetched.append(run.cache / pack.url)
        run.phase("staging", f"building {release.version} from {pack.base} and its delta",
                  release.version)
        base_root, limits = layout.release(pack.base), run.config.limits.extraction()
        # what the release ships at its shared paths is not built: the links take its place
        built = {n: e for n, e in entries.items() if not shared_paths.under(n, layout.shared)}
        shipped = {n: e for n, e in entries.items() if n not in built}
        with pack_file:
            staged = await trio.to_thread.run_sync(
                lambda: layout.stage_with(
                    lambda staging: delta.build(staging, built, pack, pack_file, base_root,
                                                records[pack.base], limits),
                    release.version, built, shipped))
        fetched_bytes = described.size + pack.size  # what the delta cost: descriptor and pack
        run.plan = f"as a delta from {pack.base}: {fetched_bytes:,} bytes instead of " \
                   f"{artifact.size:,}"
        return staged
    except (UpdaterError, OSError) as e:
        why = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        _delta_given_up(run, release, "failed", why)
        return None
    finally:
        for path in fetched:
            path.unlink(missing_ok=True)


def _delta_given_up(run: AppRun, release: Release, reason: str, why: str) -> None:
    """A delta the feed offered is not used: said (a notice, the log) and counted by `reason`
    (updaterd_delta_fallbacks_total, J179); the caller fetches the full artifact."""
    message = f"the delta to {release.version} was not used ({why}); fetching the full artifact"
    run.emit(Event(app=run.name, kind="notice", phase=run.step, version=release.version,
                   plan="full", reason=reason, at=time.time(), message=message))
    (log.warning if reason == "failed" else log.info)("%s: %s", run.name, message)


def drop_unwanted_downloads(run: AppRun) -> None:
    """The cache keeps only the files the last check wants (`state.downloads`, H149)."""
    removed = keep_only(run.cache, run.state.downloads)
    if removed:
        log.info("%s: removed %s from the cache: no longer wanted", run.name, ", ".join(removed))
