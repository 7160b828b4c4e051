"""The `updaterctl` command: a thin client of updaterd's control socket.

Exit codes: 0 done, 1 the operation failed, 2 usage error, 3 the daemon cannot be reached,
4 not permitted.

This module parses the command line and runs `status` on the standard library alone (wire.py),
so that the command people and scripts run most starts as fast as Python does; every other
command lives in commands.py, which loads msgspec and the typed client.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from updaterctl import wire
from updaterctl._version import __version__
from updaterctl.output import (
    EXIT_FAILED,
    EXIT_NOT_PERMITTED,
    EXIT_OK,
    EXIT_UNREACHABLE,
    Look,
    ago,
    padded,
    print_json,
)
from updaterctl.terminal import Escaping, escape
from updaterctl.wire import (
    DEFAULT_SOCKET,
    ClientError,
    DaemonUnreachable,
    NotAllowedToConnect,
    RemoteError,
)


def _positive(text: str) -> int:
    """An argparse type: a whole number of 1 or more."""
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"--limit must be 1 or more, not {text!r}")
    return int(text)


def _count(text: str) -> int:
    """An argparse type: a whole number from 0 to 100 (how many releases to keep)."""
    if not text.isdigit() or int(text) > 100:
        raise argparse.ArgumentTypeError(f"--keep must be 0 to 100, not {text!r}")
    return int(text)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="updaterctl", description="Control and query updaterd over its socket.",
        epilog="exit codes: 0 done, 1 failed, 2 usage error, 3 daemon unreachable, "
               "4 not permitted")
    p.add_argument("--version", action="version", version=f"updaterctl {__version__}")
    p.add_argument("--socket", default=os.environ.get("UPDATERD_SOCKET", DEFAULT_SOCKET),
                   metavar="PATH", help=f"control socket (default {DEFAULT_SOCKET})")
    p.add_argument("--json", action="store_true", help="print the RPC result as JSON")
    p.add_argument("--json-schema", action="store_true",
                   help="print the JSON Schema of every --json output, and exit")
    p.add_argument("--complete-versions", nargs=2, metavar=("APP", "KIND"),
                   help=argparse.SUPPRESS)  # for the shell completions
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    s = sub.add_parser("status", help="daemon and apps: versions, phase, checks, errors")
    s.add_argument("app", nargs="*", help="these apps (default: every app)")
    s = sub.add_parser("check", help="check the feed now")
    s.add_argument("app", nargs="?", help="default: every app")
    s.add_argument("--force", action="store_true", help="fetch the whole feed (no ETag)")
    s.add_argument("--fresh", action="store_true",
                   help="ask every cache on the way to revalidate with the feed's origin")
    s = sub.add_parser("update", help="install the available (or a given) version now")
    s.add_argument("app")
    s.add_argument("--version", dest="to_version", metavar="V",
                   help="this version, on purpose (even older, skipped or blocked)")
    s.add_argument("--no-wait", action="store_true", help="return once the update started")
    s.add_argument("--now", action="store_true", help="ignore the maintenance window")
    s = sub.add_parser("rollback", help="go back to the previous or a kept version")
    s.add_argument("app")
    s.add_argument("--to", metavar="V")
    s.add_argument("--with-data", action="store_true",
                   help="put back the data the version left too (data_snapshots)")
    s = sub.add_parser("list-backups", help="the versions kept on disk")
    s.add_argument("app")
    s = sub.add_parser("history", help="what was installed, rolled back, blocked")
    s.add_argument("app")
    s.add_argument("--limit", type=_positive, metavar="N", help="the newest N entries")
    for name, text in (("skip", "never install VERSION by itself"),
                       ("unskip", "allow VERSION again (also lifts a block)")):
        s = sub.add_parser(name, help=text)
        s.add_argument("app")
        s.add_argument("app_version", metavar="VERSION")
    for name, text in (("pause", "stop checking APP"), ("resume", "check APP again")):
        s = sub.add_parser(name, help=text)
        s.add_argument("app")
    s = sub.add_parser("cancel", help="stop APP's check, download or wait for its window")
    s.add_argument("app")
    s = sub.add_parser("watch", help="stream events until interrupted")
    s.add_argument("app", nargs="?")
    s = sub.add_parser("inhibit", help="hold back switch and restart of APP while CMD runs")
    s.add_argument("app")
    s.add_argument("--why", required=True, metavar="TEXT")
    s.usage = "updaterctl inhibit APP --why TEXT -- CMD..."
    s = sub.add_parser("reset-failed", help="clear APP's (or every app's) failure record: "
                       "the failed phase, the failure count and its retry backoff")
    s.add_argument("app", nargs="?", help="default: every app")
    s = sub.add_parser("prune", help="remove kept releases of APP beyond --keep")
    s.add_argument("app")
    s.add_argument("--keep", type=_count, metavar="N",
                   help="releases kept besides the current one (default: the app's retain)")
    s.add_argument("--force", action="store_true",
                   help="the rollback target may go too (never the current release)")
    sub.add_parser("reload", help="re-read the configuration")
    sub.add_parser("metrics", help="Prometheus text exposition")
    return p


def main(argv: list[str] | None = None) -> int:
    """The command line; what it prints is escaped (H152)."""
    out, err = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = Escaping(out), Escaping(err)
    try:
        return _main(argv)
    finally:
        sys.stdout, sys.stderr = out, err


def _main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    cmd: list[str] = []
    if "--" in argv:  # `inhibit APP --why TEXT -- CMD...`: the command is not ours to parse
        cut = argv.index("--")
        argv, cmd = argv[:cut], argv[cut + 1:]
    args = parser().parse_args(argv)
    args.cmd = cmd
    no_command_needed = args.json_schema or args.complete_versions
    if args.command is None and not no_command_needed:
        parser().error("a COMMAND is required")
    try:
        if args.command == "status" and not no_command_needed:
            return cmd_status(args)
        from updaterctl import commands  # msgspec and the typed client: not needed by status
        return commands.run(args)
    except NotAllowedToConnect as e:
        print(f"updaterctl: {e}", file=sys.stderr)
        return EXIT_NOT_PERMITTED
    except DaemonUnreachable as e:
        print(f"updaterctl: {e}", file=sys.stderr)
        return EXIT_UNREACHABLE
    except RemoteError as e:
        print(f"updaterctl: {e.message}", file=sys.stderr)
        if isinstance(e.data, list):  # reload: one line per problem in the file
            for line in e.data:
                print(f"  {line}", file=sys.stderr)
        if args.json:  # a script reads the error object where it reads results
            error: dict[str, Any] = {"code": e.code, "message": e.message}
            print_json(error if e.data is None else {**error, "data": e.data})
        return EXIT_NOT_PERMITTED if e.not_permitted else EXIT_FAILED
    except ClientError as e:  # a reply past the protocol's cap, or not JSON (H152)
        print(f"updaterctl: {e}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # `updaterctl status | head -1`: the reader has what it wanted; no error, no traceback
        # (and none again when the interpreter flushes stdout at exit).
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK


# -- status ------------------------------------------------------------------------------------

def cmd_status(args: argparse.Namespace) -> int:
    names = list(dict.fromkeys(args.app))  # in the order asked, each once
    result = wire.call(args.socket, "status", {"app": names[0]} if len(names) == 1 else {})
    if len(names) > 1:
        by_name = {a["name"]: a for a in result["apps"]}
        unknown = [n for n in names if n not in by_name]
        if unknown:  # as the daemon says it of one app
            print(f"updaterctl: unknown app: {', '.join(unknown)}", file=sys.stderr)
            return EXIT_FAILED
        result["apps"] = [by_name[n] for n in names]
    if args.json:
        print_json(result)
    else:
        print_status(result)
    return EXIT_OK


PHASE_COLOURS = {"idle": "green", "failed": "red"}  # a working phase: yellow


def print_status(result: dict[str, Any]) -> None:
    """The daemon line, one row per app, then each app's error and notes (every skipped and
    blocked version, with the command that undoes it). `result` is StatusResult as JSON.
    On a terminal: the phase and errors in colour, the notes fitted to its width."""
    raw = sys.stdout.raw if isinstance(sys.stdout, Escaping) else sys.stdout
    look = Look.of(raw)

    def say(text: str) -> None:  # `text` is escaped already, colour codes are ours
        raw.write(text + "\n")

    d = result["daemon"]
    up = ago(d["started_at"]).removesuffix(" ago")
    for part in look.fit(escape(f"updaterd {d['version']}, pid {d['pid']}, up {up}, "
                                f"config {d['config']}")):
        say(part)
    apps = result["apps"]
    if not apps:
        say("no apps configured")
        return
    rows = [["APP", "CURRENT", "AVAILABLE", "PHASE", "LAST CHECK", "NEXT CHECK"]]
    for a in apps:
        phase: str = a["phase"]
        if (progress := a.get("progress")) and progress["total"]:
            phase += f" {100 * progress['done'] // progress['total']}%"
        rows.append([escape(str(c)) for c in (
            a["name"], a["current"] or "-", a["available"] or "-", phase,
            ago(a.get("last_check")), "paused" if a.get("paused") else ago(a.get("next_check")))])
    for i, cells in enumerate(padded(rows)):
        plain = "  ".join(cells).rstrip()
        if look.width is not None and len(plain) > look.width:  # wrapped, like the notes
            for part in look.fit(plain):
                say(part)
        elif i == 0:
            say(look.paint(plain, "dim"))
        else:
            cells[3] = look.paint(cells[3], PHASE_COLOURS.get(apps[i - 1]["phase"], "yellow"))
            say("  ".join(cells).rstrip())
    for a in apps:
        lines: list[tuple[str, str | None]] = [(n, None) for n in a.get("notes", [])]
        if a.get("last_error"):
            lines.insert(0, (f"error: {a['last_error']}", "red"))
        for text, paint in lines:
            for part in look.fit(escape(f"  {a['name']}: {text}")):
                say(look.paint(part, paint))
