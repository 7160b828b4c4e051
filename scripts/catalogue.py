"""Regenerate tests/security/README.md: where each RELIABILITY.md row is tested.

Run from the repository root: python3 scripts/catalogue.py (reads ../shared/RELIABILITY.md).
Rows without a row-named test (test_a06_...) take their status from NOTES; keep it current.
"""
# ruff: noqa: E501  (NOTES is a table of sentences; wrapping them would only hide them)

from __future__ import annotations

import re
from pathlib import Path

RELIABILITY = Path(__file__).resolve().parent.parent.parent / "shared" / "RELIABILITY.md"
KINDS = ["tested", "covered", "partly", "implemented", "by design", "decision",
         "not applicable", "not possible here", "todo"]

NOTES = {
 5: "todo: thresholds and key IDs are not built yet",
 14: "covered: tests/test_update_e2e.py::test_tampered_artifact_is_refused_and_nothing_installed (both digests listed); one-algorithm-only cases todo",
 18: "covered: tests/test_github.py::test_asset_missing_from_checksum_file_is_refused, ::test_keys_set_require_a_signature (unsigned checksum files are accepted without public_keys, by SPEC 6)",
 22: "covered: tests/test_github.py::test_prerelease_and_draft_handling",
 23: "todo: key rotation signed by old and new keys", 24: "todo: key rotation", 25: "todo: key revocation",
 26: "partly: tests/test_update_e2e.py::test_bad_signature_is_refused (serial not stored); a row test is todo",
 47: "todo: bounded by the member/total caps (B45); no dedicated zip overlap test",
 52: "decision: several roots are kept as they are; an entrypoint is not required (tests/test_archive.py::test_several_roots_are_kept_as_they_are)",
 57: "todo: 50 random-instant kills with a stored per-release BLAKE3 tree (make test-long)",
 58: "not possible here (no VM power cut / dm-log-writes); C60 tests the fsync order instead",
 59: "todo (symlink + os.replace by design)",
 62: "implemented (layout.install replaces an unused copy, never the current); row test todo",
 63: "implemented (preflight compares st_dev); row test todo",
 64: "covered: tests/test_update_e2e.py::test_failed_health_check_rolls_back_and_blocks (blocked until `unskip` or an explicit update, not until a newer serial)",
 65: "implemented (process group killed at health_timeout); row test todo",
 67: "covered: tests/test_update_e2e.py::test_retain_prunes_old_releases_but_keeps_previous",
 68: "covered: tests/test_daemon.py::test_second_daemon_refuses_to_start, tests/test_update_e2e.py::test_second_instance_is_refused_while_lock_held",
 69: "covered implicitly: every kill -9 test runs again on the same lock file",
 73: "covered: tests/test_failpoints.py, tests/test_inplace.py",
 76: "partly: tests/test_scheduler.py (backoff), tests/test_download.py (retries); seeded-jitter and total-time row test todo",
 77: "partly: tests/test_scheduler.py::test_restart_does_not_check_early (failures and last check persist)",
 78: "todo", 85: "implemented (416 on a whole partial is checked); row test todo",
 94: "implemented (CR/LF in Location refused; userinfo by the URL policy); row test todo",
 96: "todo: the tests use loopback http; a TLS fixture is needed",
 99: "covered: tests/test_github.py::test_rate_limit_is_honoured_until_reset",
 100: "partly: the hashed descriptor is the one extracted; the partial is opened with O_NOFOLLOW in a 0700 cache, not O_EXCL (resume reuses it)",
 101: "partly: umask 0177, bind to a temp name, chmod/chgrp, rename; mode checked in tests/test_daemon.py::test_unprivileged_user_reads_status_but_may_not_roll_back",
 102: "implemented (non-socket or foreign socket refused, stale own socket replaced); row test todo",
 103: "implemented; row test todo",
 105: "not applicable: credentials are read at accept, before any request",
 106: "by design: only SO_PEERCRED decides; `who` in inhibit is a label",
 107: "todo (one admin group today)",
 108: "decision: rollback --to PATH (issue 5) accepts only a path inside the app's backups folder",
 109: "covered: tests/test_daemon.py::test_two_mib_line_refused_and_others_still_served",
 110: "partly: caps and timeouts exist; tests/test_daemon.py::test_stalled_and_idle_clients_are_dropped; 1000 unprivileged clients todo",
 120: "covered: tests/test_daemon.py::test_two_concurrent_updates_second_is_busy",
 123: "by design: the verified descriptor is extracted; row test todo",
 124: "partly: bench installs a 4 GiB artifact (bench/results.md); sparse-file test todo",
 125: "by design: notes are stored, never rendered or used in paths; row test todo",
 126: "not applicable: there is no set_config method; the source and keys change only in the root-owned file",
}


def catalogue() -> dict[int, tuple[str, str]]:
    rows: dict[int, tuple[str, str]] = {}
    group = None
    for line in RELIABILITY.read_text().splitlines():
        if m := re.match(r"### ([A-F])\. ", line):
            group = m.group(1)
        elif (m := re.match(r"(\d+)\. (.*)", line)) and group:
            rows[int(m.group(1))] = (group, m.group(2))
    return rows


def row_tests() -> dict[int, list[str]]:
    found: dict[int, list[str]] = {}
    for path in sorted(Path("tests").rglob("test_*.py")):
        for m in re.finditer(r"def (test_([a-f]\d+(?:_[a-f]\d+)*)\w*)", path.read_text()):
            for rid in m.group(2).split("_"):
                found.setdefault(int(rid[1:]), []).append(m.group(1))
    return found


def main() -> None:
    tests = row_tests()
    lines = ["| row | case | status |", "|---|---|---|"]
    counts: dict[str, dict[str, int]] = {}
    for n, (group, text) in sorted(catalogue().items()):
        short = text if len(text) < 90 else text[:87] + "..."
        if n in tests:
            status, kind = "tested: " + ", ".join(f"`{t}`" for t in tests[n][:3]), "tested"
        else:
            status = NOTES.get(n, "todo")
            kind = next(k for k in KINDS if status.startswith(k))
        counts.setdefault(group, {}).setdefault(kind, 0)
        counts[group][kind] += 1
        lines.append(f"| {group}{n} | {short.replace('|', '/')} | {status} |")
    summary = ["| group | " + " | ".join(KINDS) + " |", "|---" * (len(KINDS) + 1) + "|"]
    for group in "ABCDEF":
        c = counts.get(group, {})
        summary.append(f"| {group} | " + " | ".join(str(c.get(k, 0)) for k in KINDS) + " |")
    text = ["# The reliability catalogue: where each row is tested", "",
            "Generated by scripts/catalogue.py from ../shared/RELIABILITY.md and the test names",
            "(`test_a06_...`); rows without a row-named test say where they are covered, or why",
            "not yet.", "", "## Counts", "", *summary, "", "## Rows", "", *lines]
    Path("tests/security/README.md").write_text("\n".join(text) + "\n")
    print("\n".join(summary))


if __name__ == "__main__":
    main()
