"""The publisher's commands of the `updaterd` command line: keygen, publish, rotate-keys, feed
and rollout. They act on a feed folder, never on this host's apps: no configuration, no lock,
no daemon. `cli` hands them their subcommands and the arguments it parsed."""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from updaterd.errors import FeedError
from updaterd.trust.yank import MAX_REASON as MAX_YANK_REASON

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
COMMANDS = frozenset({"keygen", "publish", "rotate-keys", "feed", "rollout"})


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The publisher's subcommands, on the `updaterd` parser."""
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
                                     "guard, prune, check")
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
    fc.add_argument("target", metavar="URL|DIR", nargs="+",
                    help="the feed's URL (its folder, or its manifest.json) or folder; "
                         "several: the origins of one feed (url and mirrors), each checked "
                         "and compared with the newest")
    fc.add_argument("--public-key", required=True, action="append", metavar="KEY",
                    help="a public key file (PREFIX.pub) or its base64 line; repeatable")
    fc.add_argument("--threshold", type=int, default=1, metavar="N",
                    help="signatures by distinct keys needed (default 1)")
    fc.add_argument("--ca-file", metavar="PEM",
                    help="trust this CA bundle for https, in place of the system's store "
                         "(as a host's ca_file)")
    _rollout_parser(sub)


def run(args: argparse.Namespace) -> int | None:
    """Run a publisher's command; None when `args` names another."""
    if args.command not in COMMANDS:
        return None
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
    return None


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
    reports = {t: feedcheck.check(t.removesuffix("manifest.json"), keys, args.threshold,
                                  ca_file=args.ca_file) for t in args.target}
    feedcheck.compare_origins(reports)
    for target, report in reports.items():
        if len(reports) > 1:
            print(f"{target}:")
        for line in report.notes:
            print(line)
        for line in report.problems:
            print(line, file=sys.stderr)
    found = sum(len(r.problems) for r in reports.values())
    print(f"{found} problem{'' if found == 1 else 's'}")
    return EXIT_OK if not found else EXIT_FAILED
