"""Regenerate tests/security/README.md: what each catalogue row means and where it is tested.

Run from the repository root: python3 scripts/catalogue.py. The rows, in our own words, are
tests/security/rows.txt; when the project's RELIABILITY.md sits beside the repository
(../shared/RELIABILITY.md) their numbers and groups are checked against it. Rows without a
row-named test (test_a06_...) take their status from NOTES; a NOTES entry starting with "note:"
qualifies a tested row. Keep it current.
"""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
ROWS = REPO / "tests" / "security" / "rows.txt"
RELIABILITY = REPO.parent / "shared" / "RELIABILITY.md"
KINDS = ["tested", "covered", "partly", "implemented", "by design", "decision",
         "not applicable", "not possible here", "todo"]

NOTES = {
 18: "note: unsigned checksum files are accepted when no public_keys are set "
     "(updaterd.toml(5), public_keys)",
 52: "note: a decision: several roots are kept as they are; an entrypoint is not required",
 58: "note: under qemu by `make test-power` (tests/power), killing qemu at random instants",
 64: "note: blocked until `unskip` or an explicit update, not until a newer serial",
 105: "note: credentials are read at accept, before any request",
 106: "note: only SO_PEERCRED decides; `who` in inhibit is a label",
 108: "note: rollback --to PATH accepts only a path inside the app's backups folder",
 177: "note: releases, in-place and self-update apps, on the real daemon; with the watch "
      "(row 180) at once",
 180: "note: on 60 real daemons at the default intervals by `make test-fleet` "
      "(tests/fleet/test_three_am.py)",
 182: "todo: the transparency log",
 129: "note: the prefix check of row 128 makes the race impossible; the release is checked "
      "again (owner and modes up to /) right before the health check",
}


def catalogue() -> dict[int, tuple[str, str]]:
    """Row number -> (group, what updaterd does), from rows.txt."""
    rows: dict[int, tuple[str, str]] = {}
    for n, line in enumerate(ROWS.read_text().splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        m = re.fullmatch(r"([A-J])(\d+) \| (.+)", line)
        if m is None:
            raise SystemExit(f"{ROWS}:{n}: want `A1 | what updaterd does`")
        rows[int(m.group(2))] = (m.group(1), m.group(3))
    return rows


def check_against_reliability(rows: dict[int, tuple[str, str]]) -> None:
    """The same numbers in the same groups as the catalogue, when it is at hand."""
    if not RELIABILITY.exists():
        return
    theirs: dict[int, str] = {}
    group = None
    for line in RELIABILITY.read_text().splitlines():
        if m := re.match(r"#{2,3} ([A-HJ])\. ", line):
            group = m.group(1)
        elif (m := re.match(r"(\d+)\. ", line)) and group:
            theirs[int(m.group(1))] = group
    # group I (guarded rollout) is this project's own, past the catalogue's last row
    ours = {n: g for n, (g, _text) in rows.items() if g != "I"}
    if ours != theirs:
        missing = sorted(set(theirs) - set(ours))
        extra = sorted(set(ours) - set(theirs))
        moved = sorted(n for n in set(ours) & set(theirs) if ours[n] != theirs[n])
        raise SystemExit(f"{ROWS} and {RELIABILITY} differ: missing {missing}, extra {extra}, "
                         f"other group {moved}")


def row_tests() -> dict[int, list[str]]:
    found: dict[int, list[str]] = {}
    for path in sorted((REPO / "tests").rglob("test_*.py")):
        for m in re.finditer(r"def (test_([a-j]\d+(?:_[a-j]\d+)*)\w*)", path.read_text()):
            for rid in m.group(2).split("_"):
                found.setdefault(int(rid[1:]), []).append(m.group(1))
    return found


def main() -> None:
    tests = row_tests()
    stale = sorted(n for n in set(NOTES) & set(tests) if not NOTES[n].startswith("note:"))
    if stale:
        raise SystemExit(f"NOTES for rows that now have a row test: {stale}; remove them "
                         "(or make them a `note:` that qualifies the test)")
    rows = catalogue()
    check_against_reliability(rows)
    lines = ["| row | what updaterd does | status |", "|---|---|---|"]
    counts: dict[str, dict[str, int]] = {}
    for n, (group, text) in sorted(rows.items()):
        if n in tests:
            status, kind = "tested: " + ", ".join(f"`{t}`" for t in tests[n][:3]), "tested"
            if n in NOTES:
                status += f" ({NOTES[n].removeprefix('note: ')})"
        else:
            status = NOTES.get(n, "todo")
            kind = next(k for k in KINDS if status.startswith(k))
        counts.setdefault(group, {}).setdefault(kind, 0)
        counts[group][kind] += 1
        lines.append(f"| {group}{n} | {text.replace('|', '/')} | {status} |")
    summary = ["| group | " + " | ".join(KINDS) + " |", "|---" * (len(KINDS) + 1) + "|"]
    for group in "ABCDEFGHIJ":
        c = counts.get(group, {})
        summary.append(f"| {group} | " + " | ".join(str(c.get(k, 0)) for k in KINDS) + " |")
    text = ["# The reliability catalogue: what updaterd withstands, and where it is tested", "",
            "Each row is one attack or fault, said as what updaterd does about it: A the feed,",
            "B archives, C the install, state and lock, D downloads, E the control socket,",
            "F regressions of known CVEs in other updaters, G other users on the same host,",
            "H round three: hostile APIs and apps, the publisher's tools, stops and app data,",
            "I guarded rollout (this project's own rows, past the catalogue's last row then),",
            "J trees others can write, the publisher's reads, the 3 a.m. path, the log.",
            "A test that proves a row carries its ID in its name (`test_a06_...`); rows without",
            "one say where they are covered, or why not. Generated by scripts/catalogue.py from",
            "rows.txt and the test names: edit those, not this file.", "", "## Counts", "",
            *summary, "", "## Rows", "", *lines]
    (REPO / "tests" / "security" / "README.md").write_text("\n".join(text) + "\n")
    print("\n".join(summary))


if __name__ == "__main__":
    main()
