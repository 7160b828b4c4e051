"""`make mutate`: mutation testing of the security-critical modules with cosmic-ray.

Each module is mutated in its own scratch copy of this checkout (build/mutate/MODULE/tree:
cosmic-ray edits files in place, so the working tree is never touched, even by a run killed
half-way) and run against the tests that exercise it; two modules run at a time, one per core.
The copy comes first on PYTHONPATH, so the tests and the updaterd processes they start both
import the mutated code. A mutant whose tests run past the module's time-out (a cap removed, a
loop that never ends) counts as killed.

Mutants are the kinds a reviewer would write: comparison operators swapped among themselves
(not `is`), `and`/`or`, `not` added or removed, True/False, numbers +-1, break/continue, loops
run zero times, exception types in `except` clauses. Arithmetic swaps and variable replacement
are left out (mostly noise). `mutation/equivalents.txt` lists the equivalent mutants (module,
operator and the line as the mutant has it), each with a one-line reason; they do not count
against the score. `mutation/scores.txt` holds the score
each module has reached: a run that falls below it fails, so the score cannot quietly fall.

    python3 scripts/mutate.py                 # every module (make mutate)
    python3 scripts/mutate.py feed versions   # some
    python3 scripts/mutate.py --of-the-day    # one quick module, chosen by the date (.ci/run)
    python3 scripts/mutate.py --report        # the last run's table again
    python3 scripts/mutate.py --recheck rpc   # only the last run's survivors, against new tests
"""

from __future__ import annotations

import argparse
import ast
import concurrent.futures
import contextlib
import datetime
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
WORK = REPO / "build" / "mutate"
EQUIVALENTS = REPO / "mutation" / "equivalents.txt"
SCORES = REPO / "mutation" / "scores.txt"
TARGET = 95.0


@dataclass
class Module:
    """A module to mutate, the tests that exercise it, and (optionally) the functions to mutate
    when only part of the module is security-critical."""

    name: str
    tests: list[str]
    functions: list[str] = field(default_factory=list)
    timeout: float = 45.0  # seconds; the tests take a few when no mutant slows them
    slow: bool = False  # its tests run real processes for a minute: not in the daily run

    @property
    def path(self) -> str:
        """The module's file, in whichever layer folder it sits."""
        found = sorted((REPO / "daemon" / "updaterd").rglob(f"{self.name}.py"))
        if len(found) != 1:
            raise SystemExit(f"{self.name}: {len(found)} modules of that name")
        return found[0].relative_to(REPO).as_posix()


MODULES = [
    Module("feed", ["tests/test_feed.py", "tests/test_trusted_set.py",
                    "tests/security/test_keys_rows.py"]),
    Module("versions", ["tests/test_versions.py"]),
    Module("urlpolicy", ["tests/test_urlpolicy.py"]),
    Module("archive", ["tests/test_archive.py"]),
    Module("minisign", ["tests/test_minisign.py"]),
    # one refresh's trust: the recipe every signed document passes, key rotation, the set
    # that takes them in order, the walk that fetches rotations, and the keys a host uses
    Module("signed", ["tests/test_trusted_set.py", "tests/test_feed.py",
                      "tests/test_rollout_document.py"]),
    Module("rotation", ["tests/test_trusted_set.py"]),
    Module("trustedset", ["tests/test_trusted_set.py"]),
    Module("keys", ["tests/test_keys.py", "tests/security/test_keys_rows.py"]),
    Module("trustroot", ["tests/test_keys.py", "tests/security/test_keys_rows.py"]),
    Module("pathtrust", ["tests/test_pathtrust.py"]),
    Module("checksums", ["tests/test_checksums.py"]),
    Module("treehash", ["tests/test_checksums.py"]),
    # root's only way into trees another user can write (rows 168-170)
    Module("fdtree", ["tests/test_fdtree.py", "tests/security/test_tree_rows.py"]),
    # the publisher's reads of its feed folder (row 171)
    Module("feedfolder", ["tests/test_feedfolder.py", "tests/security/test_publisher_rows.py"],
           [], 120),
    Module("rollout", ["tests/test_rollout_document.py", "tests/test_rollout.py",
                       "tests/security/test_rollout_rows.py"]),
    Module("yank", ["tests/test_yank.py"]),
    Module("refresh", ["tests/test_refresh.py", "tests/test_engine_inprocess.py",
                       "tests/test_rollout_document.py"]),
    # in-process tests first: with -x most mutants die in a second, before the daemon's own
    Module("shared", ["tests/test_shared_seed.py", "tests/security/test_tree_rows.py",
                      "tests/test_shared.py"], [], 120),
    Module("metrics_http", ["tests/test_metrics_http.py"], [], 90),
    # what each event means for the stored state (in-process at last)
    Module("outcome", ["tests/test_outcome.py"]),
    # the look between checks (row 180): what it asks, which changes it reports
    Module("watch", ["tests/test_watch.py", "tests/test_mirrors.py"], [], 90),
    # a feed's origins: the order and back-off (no I/O), and the source that walks them
    Module("origins", ["tests/test_origins.py"]),
    Module("mirrors", ["tests/test_origins.py", "tests/test_mirrors.py"], [], 120),
    # streaming installs (row 183): the pipe, the reader that checks the last byte, the thread
    # beside the download; in-process tests first, then the daemon's (not in the daily run)
    Module("streaming", ["tests/test_streaming.py"], [], 120, True),
    # data snapshots: a copy of what the app writes, put back by root
    Module("snapshots", ["tests/test_snapshots.py", "tests/test_data_snapshots.py"], [], 120),
    # what the controller reads, believes and signs (rows 172, 176); its loop (`run`) is the
    # fleet suite's, and mutating it against real commands takes an hour. Even so about 25 min
    # (188 mutants against the publisher's real commands): not in the daily run
    Module("controller", ["tests/security/test_publisher_rows.py",
                          "tests/test_rollout_controller.py"],
           ["load_plan", "read_verified", "guarded_release", "change", "_sign", "set_state",
            "query", "_samples", "gate_values", "share_for", "fleet"], 150, True),
    # the control socket: its rules without I/O (in the daily run), and its trio edge
    Module("jsonrpc", ["tests/test_rpc_session.py", "tests/test_rpc.py"]),
    Module("rpc", ["tests/test_rpc_session.py", "tests/test_rpc.py",
                   "tests/security/test_socket_rows.py",
                   "tests/test_daemon.py::test_a_socket_path_as_long_as_unix_allows_works_and_"
                   "a_longer_one_is_refused"],
           ["is_admin", "peer_groups", "set_socket_access", "create_socket", "_serve",
            "_read_loop", "_run", "_require_stream_room"], 150, True),
    Module("transaction", ["tests/test_transaction.py", "tests/test_failpoints.py",
                           "tests/test_update_e2e.py",
                           "tests/test_operator_reports.py", "tests/test_self_update.py"],
           ["recover", "complete_rollback"], 600, True),
    # updaterd's own hand-over and an app's restart, as the transaction calls them
    Module("lifecycle", ["tests/test_self_update.py", "tests/test_operator_reports.py",
                         "tests/test_update_e2e.py"], [], 600, True),
]

OPERATORS_LEFT_OUT = [
    r"core/ReplaceBinaryOperator_.*",
    r"core/ReplaceComparisonOperator_.*_(Is|IsNot)$",
    r"core/ReplaceComparisonOperator_(Is|IsNot)_.*",
    r"core/VariableReplacer", r"core/VariableInserter", r"core/RemoveDecorator",
    r"core/ReplaceUnaryOperator_(UAdd|USub|Invert)_.*",
    r"core/ReplaceUnaryOperator_Delete_(USub|Invert)",
]


@dataclass
class Mutant:
    module: str
    line: int
    operator: str
    occurrence: int
    source_line: str
    diff: str
    outcome: str  # killed | survived | skipped

    @property
    def changed(self) -> str:
        """The mutated line as the mutant has it."""
        return next((d[1:].strip() for d in self.diff.splitlines()
                     if d.startswith("+") and not d.startswith("+++")), "")

    def key(self) -> tuple[str, str, str]:
        return (self.module, self.operator.removeprefix("core/"), self.changed)


def load_equivalents() -> dict[tuple[str, str, str], str]:
    """`module | operator | mutated line | reason`, one per line; # starts a comment."""
    found = {}
    for n, line in enumerate(EQUIVALENTS.read_text().splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        parts = [p.strip() for p in line.split(" | ")]
        if len(parts) != 4 or not parts[3]:
            raise SystemExit(f"{EQUIVALENTS}:{n}: want `module | operator | mutated line | "
                             "reason`")
        found[(parts[0], parts[1], parts[2])] = parts[3]
    return found


def load_scores() -> dict[str, float]:
    if not SCORES.exists():
        return {}
    return {name: float(score) for name, score in
            (line.split() for line in SCORES.read_text().splitlines()
             if line.strip() and not line.startswith("#"))}


def tree_of(module: Module) -> Path:
    return WORK / module.name / "tree"


def copy_tree(tree: Path) -> None:
    """The tracked files as they are now (uncommitted edits included), without .venv or build."""
    if tree.exists():
        shutil.rmtree(tree)
    files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others",
                            "--exclude-standard"], cwd=REPO, capture_output=True,
                           check=True).stdout.split(b"\0")
    for name in filter(None, files):
        src = REPO / os.fsdecode(name)
        if src.is_file():
            dst = tree / os.fsdecode(name)
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst)


def function_lines(path: Path, names: list[str]) -> set[int]:
    lines: set[int] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name in names:
            lines.update(range(node.lineno, (node.end_lineno or node.lineno) + 1))
    return lines


def mutant_env(tree: Path) -> dict[str, str]:
    """The scratch copy first on the path: the tests and the updaterd they start import it."""
    return {**os.environ, "PYTHONPATH": f"{tree / 'daemon'}:{tree / 'ctl'}:{tree}"}


def write_config(module: Module) -> Path:
    """cosmic-ray's configuration for `module`: its tests, timeout and a temp folder of its own."""
    python, tree = sys.executable, tree_of(module)
    config = tree.parent / "cosmic-ray.toml"
    # short: the tests put Unix sockets in it (108 bytes at most for their paths)
    tmp = Path(tempfile.gettempdir()) / f"updaterd-mutate-{module.name}"
    tests = " ".join(module.tests)
    config.write_text(
        "[cosmic-ray]\n"
        f'module-path = "{module.path}"\n'
        f"timeout = {module.timeout}\nexcluded-modules = []\n"
        # each run starts from an empty temp folder of its own, removed with rm -rf: a mutant
        # can leave a tree thousands of folders deep, which pytest's own clean-up cannot remove
        f"test-command = \"sh -c 'rm -rf {tmp}; exec {python} -m pytest -x -q "
        f"-p no:cacheprovider --basetemp={tmp} {tests}'\"\n"
        '[cosmic-ray.distributor]\nname = "local"\n')
    return config


def check_baseline(module: Module, config: Path) -> None:
    """The tests must pass on the unmutated copy: if they fail there (an environment the
    scratch copy breaks), every mutant would count as killed and the score would lie."""
    tree = tree_of(module)
    r = subprocess.run([sys.executable, "-m", "cosmic_ray.cli", "baseline", str(config)],
                       cwd=tree, env=mutant_env(tree), stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
    if r.returncode != 0:
        raise SystemExit(f"{module.name}: its tests fail on the unmutated copy in {tree}, so no "
                         "mutant could survive; run them there with PYTHONPATH="
                         f"{mutant_env(tree)['PYTHONPATH']} to see why")


def run_module(module: Module) -> list[Mutant]:
    from cosmic_ray.work_db import WorkDB, use_db
    from cosmic_ray.work_item import WorkerOutcome, WorkResult

    python, tree = sys.executable, tree_of(module)
    copy_tree(tree)
    config, session = write_config(module), tree.parent / "session.sqlite"
    session.unlink(missing_ok=True)
    check_baseline(module, config)
    env = mutant_env(tree)
    cosmic = [python, "-m", "cosmic_ray.cli"]
    subprocess.run([*cosmic, "init", str(config), str(session)], cwd=tree, env=env, check=True)
    wanted = function_lines(tree / module.path, module.functions) if module.functions else None
    left_out = re.compile("|".join(OPERATORS_LEFT_OUT))
    with use_db(str(session), WorkDB.Mode.open) as db:
        for item in list(db.pending_work_items):
            m = item.mutations[0]
            if left_out.match(m.operator_name) or (wanted is not None
                                                   and m.start_pos[0] not in wanted):
                db.set_result(item.job_id, WorkResult(worker_outcome=WorkerOutcome.SKIPPED))
    subprocess.run([*cosmic, "exec", str(config), str(session)], cwd=tree, env=env, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return read_session(module)


def recheck_survivors(module: Module) -> list[Mutant]:
    """Run the last session's survivors again against the tests as they are now, and the
    module's test files as listed now (its source must not have changed): minutes instead of a
    whole run after new tests."""
    import sqlite3

    tree = tree_of(module)
    source = (tree / module.path).read_text()
    copy_tree(tree)
    if (tree / module.path).read_text() != source:
        raise SystemExit(f"{module.path} changed since its last run: run it whole")
    session = tree.parent / "session.sqlite"
    with contextlib.closing(sqlite3.connect(session)) as db, db:
        db.execute("DELETE FROM work_results WHERE test_outcome = 'SURVIVED'")
    config = write_config(module)
    check_baseline(module, config)
    subprocess.run([sys.executable, "-m", "cosmic_ray.cli", "exec", str(config), str(session)],
                   cwd=tree,
                   env=mutant_env(tree), check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    return read_session(module)


def read_session(module: Module) -> list[Mutant]:
    from cosmic_ray.work_db import WorkDB, use_db
    from cosmic_ray.work_item import TestOutcome, WorkerOutcome

    tree = tree_of(module)
    session = tree.parent / "session.sqlite"
    source = (tree / module.path).read_text().splitlines()
    mutants = []
    with use_db(str(session), WorkDB.Mode.open) as db:
        for item, result in db.completed_work_items:
            m = item.mutations[0]
            if result.worker_outcome == WorkerOutcome.SKIPPED:
                outcome = "skipped"
            elif result.test_outcome == TestOutcome.SURVIVED:
                outcome = "survived"
            else:  # the tests failed, or the mutant broke the import or timed out
                outcome = "killed"
            line = m.start_pos[0]
            mutants.append(Mutant(module.name, line, m.operator_name, m.occurrence,
                                  source[line - 1], result.diff or "", outcome))
    return sorted(mutants, key=lambda m: (m.line, m.operator, m.occurrence))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("modules", nargs="*", help="module names (default: all)")
    parser.add_argument("--of-the-day", action="store_true",
                        help="one module chosen by today's date (the cheap run in .ci/run)")
    parser.add_argument("--report", action="store_true",
                        help="report the last run's sessions again without running anything")
    parser.add_argument("--recheck", action="store_true",
                        help="run only the last run's survivors again, against today's tests")
    args = parser.parse_args()
    by_name = {m.name: m for m in MODULES}
    chosen = [by_name[n] for n in args.modules if n in by_name] if args.modules else MODULES
    if args.of_the_day:
        daily = [m for m in MODULES if not m.slow]
        chosen = [daily[datetime.date.today().toordinal() % len(daily)]]
    unknown = set(args.modules) - {m.name for m in MODULES}
    if unknown:
        parser.error(f"no such module: {', '.join(sorted(unknown))}")
    equivalents, floor = load_equivalents(), load_scores()
    WORK.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    if args.report:
        results = {m.name: read_session(m) for m in chosen}
    elif args.recheck:
        results = {m.name: recheck_survivors(m) for m in chosen}
    else:
        with concurrent.futures.ThreadPoolExecutor(max(1, min(2, os.cpu_count() or 1))) as pool:
            results = dict(zip([m.name for m in chosen], pool.map(run_module, chosen),
                               strict=True))
    rows, failed = [], []
    for module in chosen:
        found = results[module.name]
        mutants = [m for m in found if m.outcome != "skipped"]
        killed = [m for m in mutants if m.outcome == "killed"]
        equivalent = [m for m in mutants if m.outcome == "survived" and m.key() in equivalents]
        survived = [m for m in mutants if m.outcome == "survived" and m.key() not in equivalents]
        counted = len(mutants) - len(equivalent)
        score = 100.0 * len(killed) / counted if counted else 100.0
        rows.append((module.name, len(mutants), len(killed), len(equivalent), len(survived),
                     score))
        for m in survived:
            print(f"SURVIVED {module.path}:{m.line} {m.operator.removeprefix('core/')}\n"
                  f"    - {m.source_line.strip()}\n    + {m.changed}")
        seen = {m.key() for m in mutants}
        for stale in sorted(k for k in equivalents if k[0] == module.name and k not in seen):
            print(f"STALE {EQUIVALENTS.name}: no such mutant now: {' | '.join(stale)}")
        if score + 1e-9 < floor.get(module.name, 0.0):
            failed.append(f"{module.name}: {score:.1f}% is below its recorded "
                          f"{floor[module.name]:.1f}% (mutation/scores.txt)")
    print("\n| module | mutants | killed | equivalent | survived | score |")
    print("|---|---|---|---|---|---|")
    for name, n, k, e, s, score in rows:
        mark = "" if score >= TARGET else " (below 95%)"
        print(f"| `{name}.py` | {n} | {k} | {e} | {s} | {score:.1f}%{mark} |")
    print(f"\n{len(rows)} modules in {time.monotonic() - started:.0f}s")
    (WORK / "last.json").write_text(json.dumps(rows))
    for line in failed:
        print(f"mutate: {line}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
