"""The `updaterctl` command: a thin client of updaterd's control socket.

Exit codes: 0 done, 1 the operation failed, 2 usage error, 3 the daemon cannot be reached,
4 not permitted.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import getpass
import os
import re
import select
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import msgspec

from updaterctl._version import __version__
from updaterctl.client import (
    Client,
    ClientError,
    Connection,
    DaemonUnreachable,
    NotAllowedToConnect,
    RemoteError,
)
from updaterctl.protocol import (
    CLI_RESULTS,
    DEFAULT_SOCKET,
    JSON_SCHEMA_VERSION,
    MAX_WHO,
    MAX_WHY,
    ErrorObject,
    Event,
    Metric,
    StatusResult,
    UpdateResult,
    clock,
)

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_UNREACHABLE, EXIT_NOT_PERMITTED = 0, 1, 2, 3, 4
COMMANDS = ("status", "check", "update", "rollback", "list-backups", "history", "skip", "unskip",
            "pause", "resume", "cancel", "watch", "inhibit", "reload", "metrics")


def _positive(text: str) -> int:
    """An argparse type: a whole number of 1 or more."""
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"--limit must be 1 or more, not {text!r}")
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
    s.add_argument("app", nargs="?")
    s = sub.add_parser("check", help="check the feed now")
    s.add_argument("app", nargs="?", help="default: every app")
    s.add_argument("--force", action="store_true", help="fetch the whole feed (no ETag)")
    s = sub.add_parser("update", help="install the available (or a given) version now")
    s.add_argument("app")
    s.add_argument("--version", dest="to_version", metavar="V",
                   help="this version, on purpose (even older, skipped or blocked)")
    s.add_argument("--no-wait", action="store_true", help="return once the update started")
    s.add_argument("--now", action="store_true", help="ignore the maintenance window")
    s = sub.add_parser("rollback", help="go back to the previous or a kept version")
    s.add_argument("app")
    s.add_argument("--to", metavar="V")
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
    sub.add_parser("reload", help="re-read the configuration")
    sub.add_parser("metrics", help="Prometheus text exposition")
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    cmd: list[str] = []
    if "--" in argv:  # `inhibit APP --why TEXT -- CMD...`: the command is not ours to parse
        cut = argv.index("--")
        argv, cmd = argv[:cut], argv[cut + 1:]
    args = parser().parse_args(argv)
    args.cmd = cmd
    if args.json_schema:
        print_json_schema()
        return EXIT_OK
    if args.complete_versions:
        with contextlib.suppress(ClientError):
            print("\n".join(versions_for(args.socket, *args.complete_versions)))
        return EXIT_OK
    if args.command is None:
        parser().error("a COMMAND is required")
    try:
        return COMMAND_FUNCS[args.command](args)
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
            emit_json(ErrorObject(e.code, e.message, e.data))
        return EXIT_NOT_PERMITTED if e.not_permitted else EXIT_FAILED
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # `updaterctl status | head -1`: the reader has what it wanted; no error, no traceback
        # (and none again when the interpreter flushes stdout at exit).
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK


def emit_json(value: Any) -> None:
    print(msgspec.json.format(msgspec.json.encode(value), indent=2).decode())


def ago(t: float | None) -> str:
    """'3m ago' for a past time, 'in 3h' for a future one."""
    if t is None:
        return "never"
    d = time.time() - t
    span = f"{int(abs(d))}s"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if abs(d) >= size:
            span = f"{int(abs(d) // size)}{unit}"
            break
    return f"{span} ago" if d >= 0 else f"in {span}"


def table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
                     for r in rows)


def human_size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


# -- commands ----------------------------------------------------------------------------------

def cmd_status(args: argparse.Namespace) -> int:
    with Client(args.socket) as c:
        result = c.status(args.app)
    if args.json:
        emit_json(result)
        return EXIT_OK
    print_status(result)
    return EXIT_OK


def print_status(result: StatusResult) -> None:
    d = result.daemon
    up = ago(d.started_at).removesuffix(" ago")
    print(f"updaterd {d.version}, pid {d.pid}, up {up}, config {d.config}")
    if not result.apps:
        print("no apps configured")
        return
    rows = [["APP", "CURRENT", "AVAILABLE", "PHASE", "LAST CHECK", "NEXT CHECK"]]
    for a in result.apps:
        phase: str = a.phase
        if a.progress and a.progress.total:
            phase += f" {100 * a.progress.done // a.progress.total}%"
        rows.append([a.name, a.current or "-", a.available or "-", phase, ago(a.last_check),
                     "paused" if a.paused else ago(a.next_check)])
    print(table(rows))
    for a in result.apps:
        # notes name every skipped and blocked version, with the command that undoes it
        for line in ([f"error: {a.last_error}"] if a.last_error else []) + a.notes:
            print(f"  {a.name}: {line}")


def cmd_check(args: argparse.Namespace) -> int:
    """One line per app, a failing app named and never hiding the others; exit 1 when any
    failed. `--json` is always an object of app -> result (or {"error": ...})."""
    results: dict[str, Any] = {}
    failed = False
    with Client(args.socket) as c:
        apps = [args.app] if args.app else [a.name for a in c.status().apps]
        for app in apps:
            try:
                results[app] = c.check(app, args.force)
            except RemoteError as e:
                if e.not_permitted:
                    raise
                failed = True
                results[app] = {"error": {"code": e.code, "message": e.message}}
    if args.json:
        emit_json(results)
        return EXIT_FAILED if failed else EXIT_OK
    for app, r in results.items():
        if isinstance(r, dict):
            message = r["error"]["message"]
            print(f"{app}: check failed: {message.removeprefix(app + ': ')}", file=sys.stderr)
        elif r.available:
            print(f"{app}: {r.available} is available (current {r.current or 'nothing'})")
        else:
            print(f"{app}: up to date at {r.current or 'nothing'}")
        if not isinstance(r, dict):
            for v, why in r.passed_over.items():
                print(f"  {v}: {why}")
    return EXIT_FAILED if failed else EXIT_OK


class Meter:
    """Rate and ETA from progress events, smoothed over the last few seconds (the first
    sample alone says little: connection set-up, a resumed partial)."""

    WINDOW = 5.0

    def __init__(self) -> None:
        self.samples: collections.deque[tuple[float, int]] = collections.deque()

    def line(self, event: Event, now: float | None = None) -> str:
        """One line for a person: what is happening, with %, rate and ETA when downloading."""
        if event.kind != "progress" or event.done is None or not event.total:
            self.samples.clear()
            text = event.phase.replace("_", " ")
            return f"{text} {event.version or ''}: {event.message}".replace(" :", ":") \
                if event.message else f"{text} {event.version or ''}".strip()
        now = time.monotonic() if now is None else now
        self.samples.append((now, event.done))
        while len(self.samples) > 2 and now - self.samples[0][0] > self.WINDOW:
            self.samples.popleft()
        (t0, d0), (t1, d1) = self.samples[0], self.samples[-1]
        rate = (d1 - d0) / (t1 - t0) if t1 > t0 else 0.0
        percent = 100 * event.done // event.total
        head = (f"downloading {event.version}  {percent}%  {human_size(event.done)} / "
                f"{human_size(event.total)}")
        if rate <= 0:
            return head
        eta = (event.total - event.done) / rate
        return f"{head}  {human_size(rate)}/s  {clock(eta)} left"


def cmd_update(args: argparse.Namespace) -> int:
    params = {"app": args.app, "version": args.to_version, "now": args.now or None}
    live = sys.stdout.isatty() and not args.json
    watch = Connection(args.socket) if live or args.no_wait else None
    try:
        if watch is not None:
            watch.reply(watch.send("subscribe", {"apps": [args.app]}))
        conn = Connection(args.socket)
        rid = conn.send("update", params)
        if args.no_wait:
            assert watch is not None
            _wait_for_start(conn, watch)
            print(f"{args.app}: update started")
            return EXIT_OK
        if watch is not None:
            _show_progress(conn, watch)
        result = msgspec.json.decode(conn.reply(rid), type=UpdateResult)
    except KeyboardInterrupt:
        # The update belongs to the daemon: leaving it running (as --no-wait would) is safe
        # at any step, while cancelling from a key press could surprise; say how to stop it.
        print(f"\nupdaterctl: the update of {args.app} goes on in updaterd; "
              f"`updaterctl cancel {args.app}` stops it", file=sys.stderr)
        return 130
    finally:
        if watch is not None:
            watch.close()
    if args.json:
        emit_json(result)
    elif result.result == "installed":
        print(f"{args.app}: installed {result.to_version} (was {result.from_version or 'nothing'})")
    elif result.result == "deferred":
        print(f"{args.app}: {result.to_version} is downloaded and {result.reason}")
    elif result.result == "restarting":
        print(f"{args.app}: {result.to_version} is in place; {result.reason}")
        return _await_verdict(args.socket, args.app, result.to_version)
    else:
        print(f"{args.app}: up to date at {result.from_version or 'nothing'}")
    return EXIT_OK


def _await_verdict(socket_path: str, app: str, version: str | None,
                   timeout: float = 300) -> int:
    """updaterd updated itself and re-executes: the socket stays (it is handed over), so ask
    the new daemon until it has committed `version` or rolled back and blocked it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        time.sleep(0.5)
        try:
            with Client(socket_path) as c:
                st = next((a for a in c.status().apps if a.name == app), None)
        except (DaemonUnreachable, RemoteError, OSError):
            continue  # the hand-over: the new daemon is not serving yet
        if st is None or st.phase != "idle":
            continue
        if version in st.blocked:
            print(f"updaterctl: {app} {version} was rolled back and blocked: "
                  f"{st.last_error or 'health check failed'}", file=sys.stderr)
            return EXIT_FAILED
        if st.current == version:
            print(f"{app}: installed {version}; the new updaterd passed its health check")
            return EXIT_OK
    print(f"updaterctl: no verdict on {app} {version} within {timeout:.0f}s; see "
          f"`updaterctl status {app}`", file=sys.stderr)
    return EXIT_FAILED


def _wait_for_start(conn: Connection, watch: Connection) -> None:
    """Return at the first event of the update, or raise the error the daemon answered."""
    ready, _, _ = select.select([conn.sock, watch.sock], [], [], 30)
    if conn.sock in ready:
        env = conn.read()
        if env.error is not None:
            raise RemoteError(int(env.error.get("code", 0)), str(env.error.get("message")),
                              env.error.get("data"))


def _show_progress(conn: Connection, watch: Connection) -> None:
    """Print a live line from the events until the update's reply is ready to read."""
    meter = Meter()
    while True:
        ready, _, _ = select.select([conn.sock, watch.sock], [], [])
        if watch.sock in ready:
            env = watch.read()
            if env.method == "event":
                event = msgspec.json.decode(env.params, type=Event)
                if event.kind in ("phase", "progress"):
                    sys.stdout.write("\r\033[K" + meter.line(event))
                    sys.stdout.flush()
        if conn.sock in ready:
            sys.stdout.write("\r\033[K")
            return


def cmd_rollback(args: argparse.Namespace) -> int:
    with Client(args.socket) as c:
        r = c.rollback(args.app, args.to)
    if args.json:
        emit_json(r)
    else:
        print(r.describe(args.app))
    return EXIT_OK


def cmd_list_backups(args: argparse.Namespace) -> int:
    with Client(args.socket) as c:
        backups = c.list_backups(args.app)
    if args.json:
        emit_json(backups)
        return EXIT_OK
    rows = [["VERSION", "CURRENT", "INSTALLED", "SIZE", "PATH"]]
    for b in backups:
        rows.append([b.version, "*" if b.current else "", ago(b.installed_at),
                     human_size(b.size), b.path])
    print(table(rows))
    return EXIT_OK


def cmd_history(args: argparse.Namespace) -> int:
    with Client(args.socket) as c:
        items = c.history(args.app, args.limit)
    if args.json:
        emit_json(items)
        return EXIT_OK
    rows = [["WHEN", "ACTION", "VERSION", "FROM", "REASON"]]
    for h in items:
        rows.append([time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(h.at)), h.action,
                     h.version or "-", h.from_version or "-", h.reason])
    print(table(rows))
    return EXIT_OK


def _simple(method: str, done: Callable[[argparse.Namespace], str]) -> Callable[
        [argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        params = {"app": getattr(args, "app", None),
                  "version": getattr(args, "app_version", None)}
        with Client(args.socket) as c:
            result: Any = c.call(method, {k: v for k, v in params.items() if v is not None})
        if args.json:
            emit_json(result)
        else:
            print(done(args))
        return EXIT_OK
    return run


def cmd_watch(args: argparse.Namespace) -> int:
    c = Client(args.socket)
    meters: dict[str, Meter] = collections.defaultdict(Meter)
    try:
        for event in c.subscribe([args.app] if args.app else None):
            if args.json:
                print(msgspec.json.encode(event).decode(), flush=True)
                continue
            when = time.strftime("%H:%M:%S", time.localtime(event.at or time.time()))
            if event.kind == "progress":
                text = meters[event.app].line(event)
            else:
                head = f"{event.kind} {event.phase}" if event.kind == "phase" else event.kind
                text = f"{head}: {event.message}" if event.message else head
            print(f"{when} {event.app}: {text}", flush=True)
    finally:
        c.close()
    return EXIT_OK


def cmd_inhibit(args: argparse.Namespace) -> int:
    cmd = args.cmd
    if not cmd:
        print("updaterctl: inhibit needs a command after --", file=sys.stderr)
        return EXIT_USAGE
    if len(args.why) > MAX_WHY:
        print(f"updaterctl: --why is {len(args.why)} characters; at most {MAX_WHY}",
              file=sys.stderr)
        return EXIT_USAGE
    with Client(args.socket) as c:
        who = f"{getpass.getuser()}: {cmd[0]}"[:MAX_WHO]
        hold = c.inhibit(args.app, who, args.why)
    try:
        return subprocess.call(cmd)
    finally:
        hold.close()


def cmd_cancel(args: argparse.Namespace) -> int:
    with Client(args.socket) as c:
        r = c.cancel(args.app)
    if args.json:
        emit_json(r)
    else:
        print(r.message, file=sys.stdout if r.cancelled else sys.stderr)
    return EXIT_OK if r.cancelled else EXIT_FAILED


def cmd_metrics(args: argparse.Namespace) -> int:
    with Client(args.socket) as c:
        text = c.metrics()
    if args.json:
        emit_json(parse_metrics(text))
    else:
        sys.stdout.write(text)
    return EXIT_OK


_SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$')
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse_metrics(text: str) -> list[Metric]:
    """The Prometheus text exposition as samples (name, labels, value), for scripts."""
    out = []
    for line in text.splitlines():
        m = _SAMPLE.match(line)
        if m is None or line.startswith("#"):
            continue
        labels = {k: v.replace('\\"', '"').replace("\\n", "\n").replace("\\\\", "\\")
                  for k, v in _LABEL.findall(m.group(2) or "")}
        out.append(Metric(name=m.group(1), labels=labels, value=float(m.group(3))))
    return out


def versions_for(socket_path: str, app: str, kind: str) -> list[str]:
    """What a version word can be, for the shell completions: `skip` (available, passed
    over), `unskip` (skipped, blocked), `kept` (rollback --to), `any` (update --version)."""
    with Client(socket_path) as c:
        st = next((a for a in c.status(app).apps if a.name == app), None)
        kept = [b.version for b in c.list_backups(app)]
    if st is None:
        return []
    offered = [st.available] if st.available else []
    offered += [n.split(": ")[0] for n in st.notes
                if n[:1].isdigit() and ": " in n and " " not in n.split(": ")[0]]
    held = st.skipped + st.blocked
    pick = {"skip": offered, "unskip": held, "kept": kept}.get(kind, offered + kept + held)
    return list(dict.fromkeys(pick))


def print_json_schema() -> None:
    """`--json-schema`: one JSON Schema (2020-12) per command's --json output."""
    names = list(CLI_RESULTS)
    schemas, components = msgspec.json.schema_components(
        [CLI_RESULTS[n] for n in names], ref_template="#/$defs/{name}")
    doc = {"$schema": "https://json-schema.org/draft/2020-12/schema",
           "title": "updaterctl --json output", "schema_version": JSON_SCHEMA_VERSION,
           "commands": dict(zip(names, schemas, strict=True)), "$defs": components}
    print(msgspec.json.format(msgspec.json.encode(doc), indent=2).decode())


COMMAND_FUNCS: dict[str, Callable[[argparse.Namespace], int]] = {
    "status": cmd_status, "check": cmd_check, "update": cmd_update, "rollback": cmd_rollback,
    "list-backups": cmd_list_backups, "history": cmd_history,
    "skip": _simple("skip", lambda a: f"{a.app}: {a.app_version} will not be installed by itself"),
    "unskip": _simple("unskip", lambda a: f"{a.app}: {a.app_version} is allowed again"),
    "pause": _simple("pause", lambda a: f"{a.app}: paused"),
    "resume": _simple("resume", lambda a: f"{a.app}: resumed"),
    "reload": _simple("reload", lambda a: "configuration reloaded"),
    "watch": cmd_watch, "inhibit": cmd_inhibit, "metrics": cmd_metrics, "cancel": cmd_cancel,
}
assert set(COMMAND_FUNCS) == set(COMMANDS)
