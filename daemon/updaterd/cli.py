"""The `updaterd` command line: argument parsing only; the work is in the modules it calls."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
from pathlib import Path
from typing import ClassVar

import trio

from updaterctl._version import __version__
from updaterd import publishing
from updaterd.errors import ConfigError, LockHeld, UpdaterError
from updaterd.host import config as config_mod
from updaterd.host import configfile
from updaterd.logtext import OneLine
from updaterd.service.lock import ProcessLock

log = logging.getLogger("updaterd")

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="updaterd",
        description="Keep applications up to date from signed release feeds, safely.")
    p.add_argument("--version", action="version", version=f"updaterd {__version__}")
    p.add_argument("--config", default=config_mod.DEFAULT_CONFIG, metavar="PATH",
                   help=f"configuration file (default {config_mod.DEFAULT_CONFIG})")
    p.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    p.add_argument("-q", "--quiet", action="store_true",
                   help="log errors only (for cron: no mail when nothing went wrong)")
    p.add_argument("--once", action="store_true",
                   help="one check-and-update pass over every app, then exit")
    p.add_argument("--daemonize", action="store_true",
                   help="detach the classic way (for hosts without systemd); needs --pidfile")
    p.add_argument("--pidfile", metavar="PATH", help="with --daemonize: where to write the pid")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.add_parser("check-config", help="validate the configuration and exit")
    publishing.add_commands(sub)
    sb = sub.add_parser("self-build", help="write the running updaterd as a release archive")
    sb.add_argument("--out", required=True, metavar="DIR")
    sb.add_argument("--version", dest="release_version", metavar="V",
                    help="the version to stamp in (default: the running one)")
    si = sub.add_parser("self-install",
                        help="make PREFIX a self-updating installation of the running updaterd")
    si.add_argument("--prefix", required=True, metavar="PREFIX")
    si.add_argument("--python", default=sys.executable, metavar="PATH",
                    help="the interpreter with updaterd's dependencies (default: this one)")
    rb = sub.add_parser("rollback", help="offline: switch APP back to a kept release")
    rb.add_argument("app")
    rb.add_argument("--to", metavar="V")
    ve = sub.add_parser("verify", help="re-hash every kept release against its recorded tree")
    ve.add_argument("apps", nargs="*", metavar="APP", help="default: every releases app")
    up = sub.add_parser("update", help="offline: update APP now (optionally to --version V)")
    up.add_argument("app")
    up.add_argument("--version", dest="to_version", metavar="V")
    return p


def _stderr_is_the_journal() -> bool:
    """systemd sets JOURNAL_STREAM to the device and inode of the stream it connected."""
    try:
        dev, ino = os.environ.get("JOURNAL_STREAM", "").split(":")
        st = os.fstat(sys.stderr.fileno())
        return (st.st_dev, st.st_ino) == (int(dev), int(ino))
    except (ValueError, OSError):
        return False


class _JournalPriority(logging.Filter):
    """`<3>`-style prefixes (sd-daemon(3)): the journal files each line at its priority."""

    PRIORITY: ClassVar[dict[int, int]] = {logging.DEBUG: 7, logging.INFO: 6,
                                          logging.WARNING: 4, logging.ERROR: 3,
                                          logging.CRITICAL: 2}

    def filter(self, record: logging.LogRecord) -> bool:
        record.priority = f"<{self.PRIORITY.get(record.levelno, 6)}>"
        return True


def _setup_logging(verbose: bool, quiet: bool = False) -> None:
    """One line per message; with a time stamp unless the journal keeps its own, and then
    with the priority the journal files it under."""
    level = logging.DEBUG if verbose else logging.ERROR if quiet else logging.INFO
    journal = _stderr_is_the_journal()
    head = "%(priority)s" if journal else "%(asctime)s "
    logging.basicConfig(level=level, format=f"{head}updaterd: %(message)s",
                        datefmt="%Y-%m-%d %H:%M:%S", stream=sys.stderr)
    for handler in logging.getLogger().handlers:
        handler.addFilter(OneLine())
        if journal:
            handler.addFilter(_JournalPriority())
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("httpcore").setLevel(logging.WARNING)


def main(argv: list[str] | None = None) -> int:
    # Whatever the caller's umask (000 from a careless shell or unit), nothing updaterd creates
    # is writable by others unless a mode says so explicitly (G140).
    os.umask(0o022)
    args = _parser().parse_args(argv)
    _setup_logging(args.verbose, args.quiet)
    # Set by an updaterd that re-executed into this one: already detached, if it ever was.
    args.reexec = os.environ.pop("UPDATERD_REEXEC", None) == "1"
    try:
        return _dispatch(args)
    except ConfigError as e:
        for line in e.problems:
            print(line, file=sys.stderr)
        return EXIT_USAGE
    except LockHeld as e:
        print(f"updaterd: {e}", file=sys.stderr)
        return EXIT_FAILED
    except UpdaterError as e:
        print(f"updaterd: {e}", file=sys.stderr)
        return EXIT_FAILED
    except OSError as e:  # an I/O error no layer could say more about: still no traceback
        print(f"updaterd: {e}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        return 130


def _dispatch(args: argparse.Namespace) -> int:
    if (done := publishing.run(args)) is not None:
        return done
    if args.command == "self-build":
        from updaterd.install import selfupdate

        print(f"wrote {selfupdate.build(Path(args.out), args.release_version)}")
        return EXIT_OK
    if args.command == "self-install":
        from updaterd.install import selfupdate

        version = selfupdate.self_install(Path(args.prefix).absolute(), args.python)
        print(f"installed updaterd {version} in {args.prefix}; run {args.prefix}/launcher")
        return EXIT_OK
    cfg = configfile.load(args.config)
    if args.command == "check-config":
        from updaterd.host import sandbox

        unwritable = sandbox.unit_problems(cfg)
        for problem in unwritable:
            print(f"{args.config}: {problem}", file=sys.stderr)
        if unwritable:
            return EXIT_FAILED
        n = len(cfg.apps)
        print(f"{args.config}: OK ({n} app{'' if n == 1 else 's'})")
        return EXIT_OK
    if args.command == "verify":
        return _rehash(cfg, args.apps)
    if args.daemonize:
        if not args.pidfile:
            print("updaterd: --daemonize needs --pidfile PATH", file=sys.stderr)
            return EXIT_USAGE
        return _daemonize(cfg, args)
    lock = ProcessLock(Path(cfg.daemon.lock_file))
    with lock:
        if args.command in ("rollback", "update") or args.once:
            return _offline(cfg, args)
        from updaterd.service.service import serve

        serve(cfg, args.config)
    return EXIT_OK


def _rehash(cfg: config_mod.Config, apps: list[str]) -> int:
    """`updaterd verify`: reads only, so it needs no lock and runs beside the daemon."""
    from updaterd.engine.engine import Engine

    engine = Engine(cfg)
    names = apps or [n for n, a in cfg.apps.items() if a.install == "releases"]
    bad = 0
    for name in names:
        for version, problems in engine.rehash_releases(name):
            if problems is None:
                print(f"{name} {version}: no recorded tree (installed before records were kept)")
            elif problems:
                bad += 1
                print(f"{name} {version}: {len(problems)} differences")
                for p in problems[:20]:
                    print(f"  {p}")
            else:
                print(f"{name} {version}: intact")
    return EXIT_FAILED if bad else EXIT_OK


def _offline(cfg: config_mod.Config, args: argparse.Namespace) -> int:
    """One-shot work without the daemon: `--once`, `update`, `rollback`."""
    from updaterd.engine.engine import Engine

    engine = Engine(cfg)
    if args.command == "rollback":
        r = trio.run(engine.rollback, args.app, args.to)
        print(r.describe(args.app))
        return EXIT_OK
    if args.command == "update":
        u = trio.run(engine.update, args.app, args.to_version)
        print(u.describe(args.app))
        return EXIT_OK if u.result in ("installed", "up_to_date", "deferred", "restarting") \
            else EXIT_FAILED
    failures = trio.run(engine.run_once)
    return EXIT_OK if failures == 0 else EXIT_FAILED


def _daemonize(cfg: config_mod.Config, args: argparse.Namespace) -> int:
    """Detach with python-daemon, then run as usual; the lock is probed first so that a
    second instance still says so on the terminal."""
    import logging.handlers

    # python-daemon's package is `daemon`; mypy also sees this repository's `daemon/` folder as a
    # namespace package of that name (the regular package wins at run time).
    from daemon import DaemonContext  # type: ignore[attr-defined]

    from updaterd import fsutil
    from updaterd.host import pathtrust
    from updaterd.service.service import serve

    lock = ProcessLock(Path(cfg.daemon.lock_file))
    with lock:
        pass
    pidfile = Path(args.pidfile).absolute()
    pathtrust.require_trusted(pidfile, "pid file")  # planted by another user (G145)
    detach = contextlib.nullcontext() if args.reexec else \
        DaemonContext(working_directory="/", umask=0o022)
    with detach:
        root = logging.getLogger()
        for h in list(root.handlers):
            root.removeHandler(h)
        if Path("/dev/log").exists():
            handler: logging.Handler = logging.handlers.SysLogHandler(address="/dev/log")
            handler.setFormatter(logging.Formatter("updaterd[%(process)d]: %(message)s"))
            handler.addFilter(OneLine())
            root.addHandler(handler)
        with lock:
            fsutil.atomic_write(pidfile, f"{os.getpid()}\n".encode())
            try:
                serve(cfg, str(Path(args.config).absolute()))
            finally:
                pidfile.unlink(missing_ok=True)
    return EXIT_OK
