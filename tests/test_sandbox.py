"""`updaterd check-config` against the installed unit's sandbox: a folder the
packaged updaterd.service cannot write (ProtectSystem=strict, ReadWritePaths=/opt) is said
before the first update fails on it. The judgement on systemd's own words; the real unit
under a real PID 1 is in tests/systemd/test_units.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from updaterd.host import sandbox

PACKAGED = ("LoadState=loaded\nUnitFileState=enabled\nActiveState=active\n"
            "ProtectSystem=strict\nReadWritePaths=/opt -/srv/apps\n")


def judge(folders: dict[str, str], show: str = PACKAGED) -> list[str]:
    return sandbox.problems({k: Path(v) for k, v in folders.items()}, sandbox.parse_show(show))


def test_an_inplace_target_outside_read_write_paths_is_named_with_the_fix() -> None:
    [problem] = judge({"apps.tool.target's folder": "/usr/local/bin",
                       "apps.web.prefix": "/opt/web", "apps.data.prefix": "/srv/apps/data"})
    assert problem == (
        "apps.tool.target's folder /usr/local/bin: updaterd.service cannot write it "
        "(ProtectSystem=strict; ReadWritePaths= lists /opt /srv/apps): add it with "
        "`systemctl edit updaterd` ([Service] ReadWritePaths=/usr/local/bin)")


@pytest.mark.parametrize(("protect", "folder", "refused"), [
    ("full", "/etc/tool", True), ("full", "/var/tool", False), ("yes", "/etc/tool", False),
    ("yes", "/usr/lib/tool", True), ("no", "/usr/lib/tool", False),
    ("strict", "/optimal", True), ("strict", "/opt", False)])
def test_each_protect_system_level(protect: str, folder: str, refused: bool) -> None:
    show = PACKAGED.replace("ProtectSystem=strict", f"ProtectSystem={protect}")
    assert bool(judge({"apps.a.prefix": folder}, show)) == refused


@pytest.mark.parametrize("show", [
    "LoadState=not-found\nUnitFileState=\nActiveState=inactive\nProtectSystem=no\n",
    PACKAGED.replace("UnitFileState=enabled", "UnitFileState=disabled")
            .replace("ActiveState=active", "ActiveState=inactive"),
    ""])
def test_no_word_when_the_unit_is_not_what_runs_updaterd(show: str) -> None:
    assert judge({"apps.tool.target's folder": "/usr/local/bin"}, show) == []


def test_a_running_unit_counts_even_when_not_enabled() -> None:
    show = PACKAGED.replace("UnitFileState=enabled", "UnitFileState=disabled")
    assert judge({"apps.tool.target's folder": "/usr/local/bin"}, show)
