"""The `updaterd` command line: argument parsing only; the work is in the modules it calls."""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import ClassVar

import trio

from updaterctl._version import __version__
from updaterd.errors import ConfigError, FeedError, LockHeld, UpdaterError
from updaterd.host import config as config_mod
from updaterd.host import configfile
from updaterd.logtext import OneLine
from updaterd.service.lock import ProcessLock
from updaterd.trust.yank import MAX_REASON as MAX_YANK_REASON

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
    k = sub.add_parser("keygen", help="write a minisign key pair PREFIX.pub / PREFIX.key")
    k.add_argument("--out", required=True, metavar="PREFIX",
                   help="write PREFIX.pub (give it to hosts) and PREFIX.key (keep it secret)")
    k.add_argument("--force", action="store_true", help="overwrite an existing key pair")
    pub = sub.add_parser(
        "publish", help="add a release to a signed feed folder",
        description="Add a release to a signed feed folder. A published version never "
                    "changes: the same bytes again change nothing, other bytes are refused. "
                    "Artifacts are stored as APP-VERSION-PLATFORM.EXT whatever they are "
                    "called; the result is verified as hosts would verify it before it is "
                    "written.")
    pub.add_argument("--feed", required=True, metavar="DIR",
                     help="the feed folder (created by the first publish)")
    pub.add_argument("--key", required=True, action="append", metavar="PREFIX.key",
                     help="signing key; repeat for hosts with a threshold above 1")
    pub.add_argument("--app", required=True, help="the app's name, as hosts configure it")
    pub.add_argument("--version", required=True, dest="release_version", metavar="V",
                     help="the release's semantic version (1.4.0)")
    pub.add_argument("--channel", default="stable",
                     help="stable (default), beta, or another channel name")
    pub.add_argument("--notes-file", metavar="F", help="release notes, shown to operators")
    pub.add_argument("--expires", default="30d", metavar="DURATION",
                     help="how long hosts accept this manifest (default 30d)")
    pub.add_argument("--rollout", type=int, metavar="N",
                     help="the share of hosts offered the release, 0-100 (default 100; of a "
                          "release already published, changed only when given)")
    pub.add_argument("--platform", metavar="P",
                     help="the artifacts' platform (default: from the file name, else this "
                          "host's, e.g. linux-x86_64)")
    pub.add_argument("--new-key", action="store_true",
                     help="sign with keys the feed was not signed with (every host must be "
                          "re-configured; `rotate-keys` moves hosts over by themselves)")
    pub.add_argument("--delta-from", type=int, default=2, metavar="N",
                     help="write delta packs from the N releases before this one (0: none)")
    pub.add_argument("--rollout-key", action="append", default=[], metavar="KEY",
                     help="a rollout key (ROLLOUT.pub or its base64 line) that steers the "
                          "release through rollout.json (`updaterd rollout`); repeatable")
    pub.add_argument("--dry-run", action="store_true",
                     help="check everything and say what would change; write nothing")
    pub.add_argument("artifacts", nargs="*", metavar="ARTIFACT",
                     help="the release's files, one per platform")
    rk = sub.add_parser("rotate-keys",
                        help="publish the feed's next key set, signed by old and new keys")
    rk.add_argument("--feed", required=True, metavar="DIR", help="the feed folder")
    rk.add_argument("--app", required=True, help="the app's name, as hosts configure it")
    rk.add_argument("--new-key", required=True, action="append", metavar="PREFIX.pub",
                    help="a public key of the new set; repeat for several")
    rk.add_argument("--threshold", type=int, default=1, metavar="N",
                    help="signatures the new set requires (default 1)")
    rk.add_argument("--sign", required=True, action="append", metavar="PREFIX.key",
                    help="a signing key: enough of the keys in use and of the new ones; "
                         "the set is refused, naming what is missing, when too few sign")
    rk.add_argument("--dry-run", action="store_true",
                    help="check the new key set as hosts would; write nothing")
    fd = sub.add_parser("feed", help="look after a feed: list, yank, unyank, promote, resign, "
                                     "prune, check")
    feed_sub = fd.add_subparsers(dest="feed_command", metavar="COMMAND", required=True)
    fl = feed_sub.add_parser("list", help="every release, its channel, rollout and artifacts; "
                                          "the serial, expiry and key set")
    fl.add_argument("--feed", required=True, metavar="DIR", help="the feed folder")
    fl.add_argument("--json", action="store_true", help="print it as JSON")
    fr = _feed_writer(feed_sub, "resign", "a new serial and expiry, nothing else (run it on "
                                          "a timer so an idle feed never expires)")
    fr.add_argument("--expires", default="30d", metavar="DURATION",
                    help="how long hosts accept the manifest from now (default 30d)")
    fp = _feed_writer(feed_sub, "promote", "move a release to another channel (its artifacts "
                                           "stay as they are)")
    fp.add_argument("--channel", required=True, metavar="C", help="the channel to move it to")
    fp.add_argument("release_version", metavar="VERSION", help="the release to move")
    fy = _feed_writer(feed_sub, "yank", "withdraw a release: it stays listed, hosts never "
                                        "install it automatically, and those on it say why")
    fy.add_argument("--why", required=True, metavar="TEXT",
                    help=f"the reason hosts show (at most {MAX_YANK_REASON} bytes)")
    fy.add_argument("release_version", metavar="VERSION", help="the release to yank")
    fu = _feed_writer(feed_sub, "unyank", "undo a yank: the release is offered again at the "
                                          "rollout it had")
    fu.add_argument("release_version", metavar="VERSION", help="the release to offer again")
    fx = _feed_writer(feed_sub, "prune", "drop all but the newest N releases of each channel, "
                                         "and their files")
    fx.add_argument("--keep", required=True, type=int, metavar="N",
                    help="releases kept in each channel (1 or more)")
    fg = _feed_writer(feed_sub, "guard", "let a rollout key steer a release: hosts take it "
                                         "as the signed rollout.json allows")
    fg.add_argument("--rollout-key", required=True, action="append", metavar="KEY",
                    help="the rollout key: ROLLOUT.pub or its base64 line; repeatable")
    fg.add_argument("release_version", metavar="VERSION", help="the release to guard")
    fc = feed_sub.add_parser("check", help="read a served feed as a host would and check "
                                           "every artifact, descriptor and pack")
    fc.add_argument("target", metavar="URL|DIR", help="the feed's URL (its folder, or its "
                                                      "manifest.json) or folder")
    fc.add_argument("--public-key", required=True, action="append", metavar="KEY",
                    help="a public key file (PREFIX.pub) or its base64 line; repeatable")
    fc.add_argument("--threshold", type=int, default=1, metavar="N",
                    help="signatures by distinct keys needed (default 1)")
    fc.add_argument("--ca-file", metavar="PEM",
                    help="trust this CA bundle for https, in place of the system's store "
                         "(as a host's ca_file)")
    _rollout_parser(sub)
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


def _rollout_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    ro = sub.add_parser("rollout", help="guarded rollout: widen a release while the fleet's "
                                        "metrics hold; halt, resume, recall by hand")
    ro_sub = ro.add_subparsers(dest="rollout_command", metavar="COMMAND", required=True)
    run = ro_sub.add_parser("run", help="widen a release step by step while every gate "
                                        "holds; halt or recall at the first breach")
    st = ro_sub.add_parser("status", help="what rollout.json says of each guarded release")
    st.add_argument("--feed", required=True, metavar="DIR", help="the feed folder")
    st.add_argument("--json", action="store_true",
                    help="print rollout.json as JSON, with `expired`; null when none yet")
    writers = [run]
    for name, text in (("halt", "stop a release where it is: no new host takes it"),
                       ("resume", "let a halted or recalled release go on from its share"),
                       ("recall", "hosts on the release go back to their newest kept "
                                  "release that is not recalled"),
                       ("resign", "a new serial and expiry, the entries as they are (a "
                                  "timer keeps a finished rollout's document fresh)")):
        p = ro_sub.add_parser(name, help=text)
        if name != "resign":
            p.add_argument("release_version", metavar="VERSION")
        if name in ("halt", "recall"):
            p.add_argument("--why", default="", metavar="TEXT", help="the reason hosts show")
        if name == "resume":
            p.add_argument("--share", type=int, metavar="N", help="the share to go on from "
                                                                  "(default: the one it had)")
        writers.append(p)
    for p in writers:
        p.add_argument("--feed", required=True, metavar="DIR", help="the feed folder")
        p.add_argument("--key", required=True, metavar="ROLLOUT.key",
                       help="the rollout key's secret key (not the feed's signing key)")
        if p is not run:
            p.add_argument("--expires", default="1d", metavar="DURATION",
                           help="how long hosts accept rollout.json (default 1d)")
    run.add_argument("--plan", required=True, metavar="plan.toml",
                     help="version, steps, soak, min_hosts, on_fail and the [[gate]]s")
    run.add_argument("--prometheus", required=True, metavar="URL",
                     help="the Prometheus that scrapes the fleet (http://host:9090)")


def _rollout(args: argparse.Namespace) -> int:
    """`updaterd rollout COMMAND`."""
    from updaterd.release import controller, publish

    feed_dir = Path(args.feed)
    if args.rollout_command == "status":
        print(controller.status_json(feed_dir).decode() if args.json else
              "\n".join(controller.describe(feed_dir)))
        return EXIT_OK
    if args.rollout_command == "run":
        try:
            plan = controller.load_plan(Path(args.plan))
        except FeedError as e:  # a bad plan is a usage error: nothing was signed
            print(f"updaterd: {e}", file=sys.stderr)
            return EXIT_USAGE
    key = publish.signing_keys(Path(args.key))[0]
    if args.rollout_command == "run":

        def say(line: str) -> None:
            print(f"{time.strftime('%H:%M:%S')} {line}", flush=True)

        try:
            controller.run(feed_dir, key, plan, controller.Prometheus(args.prometheus), say)
        except controller.Halted as e:
            print(f"updaterd: {e}", file=sys.stderr)
            return EXIT_FAILED
        return EXIT_OK
    if args.rollout_command == "resign":
        doc = controller.resign(feed_dir, key, args.expires, datetime.now(UTC))
        print(f"rollout.json serial {doc.serial}, expires {doc.expires:%Y-%m-%d %H:%M} UTC")
        return EXIT_OK
    state = {"halt": "halted", "resume": "active", "recall": "recalled"}[args.rollout_command]
    print(controller.set_state(feed_dir, key, args.release_version, state,  # type: ignore[arg-type]
                               getattr(args, "why", ""), args.expires,
                               getattr(args, "share", None)))
    return EXIT_OK


def _feed_writer(feed_sub: argparse._SubParsersAction[argparse.ArgumentParser], name: str,
                 text: str) -> argparse.ArgumentParser:
    """A `feed` command that re-signs the feed: its folder, its keys, --dry-run."""
    p = feed_sub.add_parser(name, help=text)
    p.add_argument("--feed", required=True, metavar="DIR", help="the feed folder")
    p.add_argument("--key", required=True, action="append", metavar="PREFIX.key",
                   help="signing key; repeat for hosts with a threshold above 1")
    p.add_argument("--dry-run", action="store_true",
                   help="check everything and say what would change; write nothing")
    return p


def _feed(args: argparse.Namespace) -> int:
    """`updaterd feed COMMAND`: the publisher's commands on a feed folder."""
    from updaterd.release import feedtools

    if args.feed_command == "list":
        listed = feedtools.listing(Path(args.feed))
        print(json.dumps(listed, indent=2) if args.json else feedtools.describe(listed))
        return EXIT_OK
    if args.feed_command == "check":
        return _feed_check(args)
    keys = [Path(k) for k in args.key]
    if args.feed_command == "resign":
        done = feedtools.resign(feed_dir=Path(args.feed), key_path=keys, expires=args.expires,
                                dry_run=args.dry_run)
    elif args.feed_command == "promote":
        done = feedtools.promote(feed_dir=Path(args.feed), key_path=keys,
                                 version=args.release_version, channel=args.channel,
                                 dry_run=args.dry_run)
    elif args.feed_command == "yank":
        done = feedtools.yank_release(feed_dir=Path(args.feed), key_path=keys,
                                      version=args.release_version, why=args.why,
                                      dry_run=args.dry_run)
    elif args.feed_command == "guard":
        done = feedtools.guard_release(feed_dir=Path(args.feed), key_path=keys,
                                       version=args.release_version,
                                       rollout_keys=args.rollout_key, dry_run=args.dry_run)
    elif args.feed_command == "unyank":
        done = feedtools.unyank_release(feed_dir=Path(args.feed), key_path=keys,
                                        version=args.release_version, dry_run=args.dry_run)
    else:
        done = feedtools.prune(feed_dir=Path(args.feed), key_path=keys, keep=args.keep,
                               dry_run=args.dry_run)
    print(done.line)
    for name in done.removed:
        print(f"  {'would remove' if args.dry_run else 'removed'} {name}")
    for note in done.notes:
        print(note)
    return EXIT_OK


def _feed_check(args: argparse.Namespace) -> int:
    from updaterd.release import feedcheck

    keys = []
    for given in args.public_key:
        path = Path(given)
        keys.append(path.read_text().splitlines()[1].strip() if path.is_file() else given)
    target = args.target.removesuffix("manifest.json")
    report = feedcheck.check(target, keys, args.threshold, ca_file=args.ca_file)
    for line in report.notes:
        print(line)
    for line in report.problems:
        print(line, file=sys.stderr)
    print(f"{len(report.problems)} problem{'' if len(report.problems) == 1 else 's'}")
    return EXIT_OK if not report.problems else EXIT_FAILED


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "keygen":
        from updaterd.release.publish import keygen

        pub, key = keygen(args.out, force=args.force)
        print(f"wrote {pub} and {key}")
        return EXIT_OK
    if args.command == "publish":
        from updaterd.release.publish import publish

        notes = Path(args.notes_file).read_text() if args.notes_file else None
        done = publish(feed_dir=Path(args.feed), key_path=[Path(k) for k in args.key],
                       app=args.app, version=args.release_version,
                       artifacts=[Path(a) for a in args.artifacts], channel=args.channel,
                       notes=notes, expires=args.expires, rollout=args.rollout,
                       platform=args.platform, new_key=args.new_key,
                       delta_from=args.delta_from, dry_run=args.dry_run,
                       rollout_keys=args.rollout_key)
        print("\n".join(done.lines))
        return EXIT_OK
    if args.command == "rotate-keys":
        from updaterd.release.publish import rotate_keys

        ks = rotate_keys(feed_dir=Path(args.feed), app=args.app,
                         new_keys=[Path(k) for k in args.new_key],
                         sign_with=[Path(k) for k in args.sign], threshold=args.threshold,
                         dry_run=args.dry_run)
        print(f"{'would write' if args.dry_run else 'wrote'} key set version {ks.version} of "
              f"{args.app} to {args.feed} ({len(ks.keys)} keys, threshold {ks.threshold}); "
              "hosts on the keys in use and hosts on the new keys both accept it")
        return EXIT_OK
    if args.command == "feed":
        return _feed(args)
    if args.command == "rollout":
        return _rollout(args)
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
