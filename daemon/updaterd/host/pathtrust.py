"""Is this path ours and safe? The one place that decides it (catalogue G127, G128, G145).

updaterd runs as root and acts on what it finds at configured paths: it reads its config and
tokens, runs commands from releases it installed, restores backups from its state folder. A
path that another user can change, or any folder above it that another user can change, hands
that user root. So every such path, and every existing folder up to `/`, must be owned by root
(or by the user updaterd runs as) and be writable by nobody else. A sticky folder owned by root
(`/tmp`, mode 1777) is accepted as a parent: others cannot rename or remove what is ours in it,
and the folder below it is itself checked to be ours and not writable by others.

Symbolic links are followed for the check: both the path as written and the path it resolves to
must pass, so a link in a safe folder pointing into an unsafe one is refused too.
"""

from __future__ import annotations

import grp
import os
import pwd
import stat
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from updaterd.errors import UnsafePath

if TYPE_CHECKING:
    from updaterd.host.config import AppConfig, Config, DaemonConfig


def _owner_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


def _group_name(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return f"gid {gid}"


def _trusted_owners() -> frozenset[int]:
    return frozenset({0, os.geteuid()})


def _writable(p: Path, st: os.stat_result) -> str:
    mode = stat.S_IMODE(st.st_mode)
    who = "group and others" if mode & 0o022 == 0o022 else \
        "its group" if mode & 0o020 else "others"
    owner = f"{_owner_name(st.st_uid)}:{_group_name(st.st_gid)}"
    return f"{p} is writable by {who} (owner {owner}, mode {mode:04o})"


def _entry_problem(p: Path, st: os.stat_result, is_target: bool,
                   below: tuple[Path, os.stat_result | None] | None) -> tuple[str, str] | None:
    """Why one existing entry (the path itself or one of its parents) is unsafe, and the
    command that fixes it; None when it is safe.

    `below` is the entry under `p` on the way to the path, with its lstat (None when it does
    not exist): a shared sticky folder is a safe parent only for a private entry."""
    mode = stat.S_IMODE(st.st_mode)
    fix = f"chown root:root {p} && chmod go-w {p}"
    if st.st_uid not in _trusted_owners():
        owner = f"{_owner_name(st.st_uid)}:{_group_name(st.st_gid)}"
        return f"{p} is owned by {owner} (mode {mode:04o})", fix
    if stat.S_ISLNK(st.st_mode) or not mode & 0o022:
        return None  # a link's own mode means nothing; its target is checked separately
    if is_target or not (stat.S_ISDIR(st.st_mode) and mode & stat.S_ISVTX and st.st_uid == 0):
        return _writable(p, st), fix
    # A root-owned sticky folder (/tmp): others cannot move what is ours in it, but they can
    # take a name first, so the entry below must already exist, ours and private.
    assert below is not None
    child, child_st = below
    where = f"in the shared folder {p} (mode {mode:04o})"
    if child_st is None:
        return (f"{child} does not exist yet {where}, so another user could create it first",
                f"mkdir -m 0755 {child}")
    if stat.S_IMODE(child_st.st_mode) & 0o022 and not stat.S_ISLNK(child_st.st_mode):
        return f"{_writable(child, child_st)} {where}", \
            f"chown root:root {child} && chmod go-w {child}"
    return None


def _walk(path: Path) -> list[tuple[Path, bool]]:
    """The path and each of its parents up to `/`, lexically (no link resolved)."""
    path = Path(os.path.abspath(path))
    return [(path, True)] + [(parent, False) for parent in path.parents]


def problem(path: str | Path, what: str) -> str | None:
    """Why `path` (a config file, a folder of ours ...) is not safe to trust, or None.

    A path that does not exist yet is fine when its nearest existing parent is: updaterd
    creates it with its own modes. The message names the path, its owner and mode, and the fix.
    """
    for candidate in _candidates(Path(path)):
        below: tuple[Path, os.stat_result | None] | None = None
        for p, is_target in _walk(candidate):
            try:
                st = os.lstat(p)
            except FileNotFoundError:
                below = (p, None)
                continue
            except OSError as e:
                return f"{what} {path}: cannot inspect {p}: {e.strerror or e}"
            found = _entry_problem(p, st, is_target, below)
            below = (p, st)
            if found is not None:
                why, fix = found
                return (f"{what} {path}: {why}; another user could change what updaterd "
                        f"trusts as root. Fix: {fix}")
    return None


def _candidates(path: Path) -> list[Path]:
    """The path as written and, when a link is on the way, the path it resolves to."""
    resolved = Path(os.path.realpath(path))
    absolute = Path(os.path.abspath(path))
    return [absolute] if resolved == absolute else [absolute, resolved]


def require_trusted(path: str | Path, what: str) -> None:
    """Raise UnsafePath when `problem` finds one."""
    why = problem(path, what)
    if why is not None:
        raise UnsafePath(why)


def app_folders(cfg: AppConfig, name: str, daemon: DaemonConfig) -> list[tuple[str, Path]]:
    """Every folder of one app that updaterd writes as root, or runs or restores from, and the
    in-place target itself: root runs the new version from there (H147)."""
    state_folder = Path(daemon.state_dir) / name
    folders = [("state folder", state_folder), ("cache folder", Path(daemon.cache_dir) / name)]
    if cfg.install == "inplace" and cfg.target is not None:
        folders += [("backups folder", state_folder / "backups"),
                    ("target folder", Path(cfg.target).parent), ("target", Path(cfg.target))]
    elif cfg.prefix is not None:
        prefix = Path(cfg.prefix)
        folders += [("prefix", prefix), ("releases folder", prefix / "releases"),
                    ("staging folder", prefix / ".staging"), ("bin folder", prefix / "bin")]
    unsigned_local = not cfg.public_keys or cfg.verify == "skip"
    if unsigned_local and cfg.source == "directory" and cfg.path is not None:
        folders.append(("unsigned feed folder", Path(cfg.path)))
    if unsigned_local and cfg.source == "manifest" and (cfg.url or "").startswith("file://"):
        folders.append(("unsigned feed", Path(urlsplit(cfg.url or "").path)))
    return folders


def setup_problems(config: Config) -> list[str]:
    """Every unsafe path of a configuration, one line each (for check-config, start, reload)."""
    d = config.daemon
    checks: list[tuple[str, str | Path]] = [
        ("state_dir", d.state_dir), ("cache_dir", d.cache_dir), ("lock_file", d.lock_file),
        ("socket folder", Path(d.socket).parent)]
    for name, app in config.apps.items():
        if app.token_file is not None:
            checks.append((f"apps.{name}.token_file", app.token_file))
        checks += [(f"apps.{name} {what}", path) for what, path in app_folders(app, name, d)]
    fixes: set[str] = set()
    problems = []
    for what, path in checks:
        why = problem(path, what)
        fix = why.rpartition("Fix: ")[2] if why is not None else ""
        if why is not None and fix not in fixes:  # one line per folder to mend
            fixes.add(fix)
            problems.append(why)
    return problems


def require_trusted_app(cfg: AppConfig, name: str, daemon: DaemonConfig) -> None:
    """Before any transaction of `name`: every folder of the app still passes (a folder can be
    chowned after the daemon started). Raises UnsafePath naming every problem."""
    problems = [why for what, path in app_folders(cfg, name, daemon)
                if (why := problem(path, f"{name} {what}")) is not None]
    if problems:
        raise UnsafePath("; ".join(problems))
