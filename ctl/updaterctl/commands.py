"""updaterctl's commands other than `status`: they decode typed results (msgspec) and drive
the update's live progress, so they load the typed client that `status` does without."""

from __future__ import annotations

import argparse
import collections
import contextlib
import getpass
import re
import select
import subprocess
import sys
import time
from collections.abc import Callable, Generator
from typing import Any, TextIO

import msgspec

from updaterctl.client import Client, ClientError, Connection, DaemonUnreachable, RemoteError
from updaterctl.output import (
    COMMANDS,
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    ago,
    human_size,
    print_json,
    table,
)
from updaterctl.protocol import (
    CLI_RESULTS,
    JSON_SCHEMA_VERSION,
    MAX_WHO,
    MAX_WHY,
    Event,
    Metric,
    UpdateResult,
    clock,
)
from updaterctl.terminal import Escaping, escape


def run(args: argparse.Namespace) -> int:
    """Run the parsed command line (anything but `status`); errors reach cli.main."""
    if args.json_schema:
        print_json_schema()
        return EXIT_OK
    if args.complete_versions:
        with contextlib.suppress(ClientError):
            print("\n".join(versions_for(args.socket, *args.complete_versions)))
        return EXIT_OK
    return COMMAND_FUNCS[args.command](args)


def emit_json(value: Any) -> None:
    print_json(msgspec.to_builtins(value))


def cmd_check(args: argparse.Namespace) -> int:
    """One line per app, a failing app named and never hiding the others; exit 1 when any
    failed. `--json` is always an object of app -> result (or {"error": ...})."""
    results: dict[str, Any] = {}
    failed = False
    with Client(args.socket) as c:
        apps = [args.app] if args.app else [a.name for a in c.status().apps]
        for app in apps:
            try:
                results[app] = c.check(app, args.force, args.fresh)
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
        if not isinstance(r, dict) and r.passed_over:
            for v, why in r.passed_over.items():
                print(f"  {v}: {why}")
            print(f"  (`updaterctl update {app} --version V` installs one of these on purpose)")
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
        return EXIT_OK
    print(result.describe(args.app))
    if result.result == "restarting":
        return _await_verdict(args.socket, args.app, result.to_version)
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
            raise RemoteError.from_error(env.error)


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
                    _raw_stdout().write("\r\033[K" + escape(meter.line(event)))
                    sys.stdout.flush()
        if conn.sock in ready:
            _raw_stdout().write("\r\033[K")
            return


def _raw_stdout() -> TextIO:
    """Standard output without the escaping (for the progress line's own sequences)."""
    out = sys.stdout
    return out.raw if isinstance(out, Escaping) else out


def _reply(args: argparse.Namespace, result: Any, text: Callable[[], str]) -> int:
    """A command's answer: the result as JSON with --json, else `text()` for people (no line
    when it is empty)."""
    if args.json:
        emit_json(result)
    elif said := text():
        print(said)
    return EXIT_OK


def cmd_rollback(args: argparse.Namespace) -> int:
    with Client(args.socket) as c:
        r = c.rollback(args.app, args.to, args.with_data)
    return _reply(args, r, lambda: r.describe(args.app))


def cmd_list_backups(args: argparse.Namespace) -> int:
    with Client(args.socket) as c:
        backups = c.list_backups(args.app)
    rows = [["VERSION", "CURRENT", "INSTALLED", "SIZE", "PATH"]]
    rows += [[b.version, "*" if b.current else "", ago(b.installed_at), human_size(b.size),
              b.path] for b in backups]
    if any(b.data_snapshot is not None for b in backups):  # `data_snapshots`: a column more
        for row, b in zip(rows, [None, *backups], strict=True):
            row.insert(4, "DATA" if b is None else "" if b.data_snapshot is None
                       else human_size(b.data_snapshot))
    return _reply(args, backups, lambda: table(rows))


def cmd_history(args: argparse.Namespace) -> int:
    with Client(args.socket) as c:
        items = c.history(args.app, args.limit)
    rows = [["WHEN", "ACTION", "VERSION", "FROM", "REASON"]]
    rows += [[time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(h.at)), h.action,
              h.version or "-", h.from_version or "-", h.reason] for h in items]
    return _reply(args, items, lambda: table(rows))


def _simple(method: str, done: Callable[[argparse.Namespace], str]) -> Callable[
        [argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        params = {"app": getattr(args, "app", None),
                  "version": getattr(args, "app_version", None)}
        with Client(args.socket) as c:
            result: Any = c.call(method, {k: v for k, v in params.items() if v is not None})
        return _reply(args, result, lambda: done(args))
    return run


RECONNECT_EVERY = 0.5  # seconds between tries while the daemon is away


def _events_across_restarts(socket: str,
                            apps: list[str] | None) -> Generator[Event, None, None]:
    """The daemon's events for as long as the caller reads: a connection lost after the
    subscription (a restart, a package upgrade) is said on stderr and made again until the
    daemon is back. A daemon that cannot be reached at all at first is an error, as for
    every command."""
    ever = lost = False

    def subscribed() -> None:
        nonlocal ever, lost
        if lost:
            print("updaterctl: updaterd is back; watching again", file=sys.stderr, flush=True)
        ever, lost = True, False

    while True:
        try:
            with Client(socket) as c:  # connects: the daemon may be away yet
                yield from c.subscribe(apps, subscribed)
        except DaemonUnreachable as e:
            if not ever:
                raise
            if not lost:
                print(f"updaterctl: {e}; waiting for it to come back (Ctrl-C stops)",
                      file=sys.stderr, flush=True)
            lost = True
            time.sleep(RECONNECT_EVERY)


def cmd_watch(args: argparse.Namespace) -> int:
    meters: dict[str, Meter] = collections.defaultdict(Meter)
    events = _events_across_restarts(args.socket, [args.app] if args.app else None)
    try:
        for event in events:
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
        events.close()
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
    print_json(doc)


def cmd_reset_failed(args: argparse.Namespace) -> int:
    with Client(args.socket) as c:
        cleared = c.reset_failed(args.app)
    return _reply(args, cleared, lambda: "\n".join(
        f"{app}: failure record cleared; the next check comes at its interval"
        for app in cleared))


def cmd_prune(args: argparse.Namespace) -> int:
    with Client(args.socket) as c:
        r = c.prune(args.app, args.keep, args.force)
    done = f"removed {', '.join(r.removed)}" if r.removed else "nothing to remove"
    return _reply(args, r, lambda: f"{args.app}: {done}; kept {', '.join(r.kept) or 'nothing'}")


COMMAND_FUNCS: dict[str, Callable[[argparse.Namespace], int]] = {
    "check": cmd_check, "update": cmd_update, "rollback": cmd_rollback,
    "list-backups": cmd_list_backups, "history": cmd_history,
    "skip": _simple("skip", lambda a: f"{a.app}: {a.app_version} will not be installed by itself"),
    "unskip": _simple("unskip", lambda a: f"{a.app}: {a.app_version} is allowed again"),
    "pause": _simple("pause", lambda a: f"{a.app}: paused"),
    "resume": _simple("resume", lambda a: f"{a.app}: resumed"),
    "reload": _simple("reload", lambda a: "configuration reloaded"),
    "watch": cmd_watch, "inhibit": cmd_inhibit, "metrics": cmd_metrics, "cancel": cmd_cancel,
    "reset-failed": cmd_reset_failed, "prune": cmd_prune,
}
assert set(COMMAND_FUNCS) | {"status"} == set(COMMANDS)
