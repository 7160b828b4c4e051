"""What an operator installs: man pages that match the code, completions, unit files, a wheel."""

from __future__ import annotations

import itertools
import re
import shlex
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from updaterctl.output import COMMANDS
from updaterd.host.config import documented_keys

ROOT = Path(__file__).resolve().parent.parent
MAN = ROOT / "man"


def man_keys(page: Path) -> dict[str, set[str]]:
    """Bold words of each `.TP` item, per `.SH [table]` section of updaterd.toml.5."""
    keys: dict[str, set[str]] = {}
    section = None
    lines = page.read_text().splitlines()
    for prev, line in itertools.pairwise(lines):
        if line.startswith(".SH "):
            m = re.match(r"\.SH \[(.+)\]", line)
            section = m.group(1) if m else None
            continue
        if section is None or prev != ".TP":
            continue
        words = shlex.split(line.replace("\\-", "-"))
        if words[0] == ".B":
            keys.setdefault(section, set()).update(words[1:2])
        elif words[0] == ".BR":
            keys.setdefault(section, set()).update(words[1::2])
    return keys


def test_every_config_key_is_documented_and_every_documented_key_accepted() -> None:
    documented = man_keys(MAN / "updaterd.toml.5")
    accepted = {table: set(keys) for table, keys in documented_keys().items()}
    assert documented == accepted


@pytest.mark.parametrize("place", ["man/updaterctl.1", "contrib/completion/updaterctl.bash",
                                   "contrib/completion/_updaterctl"])
def test_every_updaterctl_command_is_in_the_man_page_and_completions(place: str) -> None:
    text = (ROOT / place).read_text().replace("\\-", "-")
    missing = [c for c in COMMANDS if not re.search(rf"(^|[\s'(]){re.escape(c)}\b", text, re.M)]
    assert missing == []


def test_every_rpc_method_and_signal_is_in_updaterd_8() -> None:
    from updaterctl.protocol import PARAMS

    text = (MAN / "updaterd.8").read_text().replace("\\-", "-").replace("\\_", "_")
    assert [m for m in PARAMS if m not in text] == []
    for word in ("SIGTERM", "SIGHUP", "READY=1", "WATCHDOG=1", "STOPPING=1", "RELOADING=1",
                 "--daemonize", "--pidfile", "--once", "check-config", "keygen", "publish"):
        assert word in text, word


@pytest.mark.parametrize("page", sorted(p.name for p in MAN.iterdir()))
def test_man_pages_are_lint_clean(page: str) -> None:
    if shutil.which("mandoc") is None:
        pytest.skip("mandoc is not installed (.ci/run installs it)")
    r = subprocess.run(["mandoc", "-T", "lint", "-W", "warning", str(MAN / page)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


UNITS = ["updaterd.service", "updaterd-once.service", "updaterd-once.timer"]


@pytest.mark.parametrize("unit", UNITS)
def test_unit_files_verify(unit: str, tmp_path: Path) -> None:
    """systemd-analyze verify, with the binaries and man pages pointed at this checkout."""
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not available")
    bin_dir = Path(sys.executable).parent
    for name in UNITS:
        text = (ROOT / "contrib" / "systemd" / name).read_text()
        local = text.replace("/usr/local/bin/updaterd", str(bin_dir / "updaterd"))
        (tmp_path / name).write_text(local)
    manpath = tmp_path / "man"
    for page in MAN.iterdir():
        section = manpath / f"man{page.suffix[1:]}"
        section.mkdir(parents=True, exist_ok=True)
        shutil.copy(page, section / page.name)
    r = subprocess.run(["systemd-analyze", "verify", str(tmp_path / unit)], capture_output=True,
                       text=True, env={"MANPATH": str(manpath), "PATH": "/usr/bin:/bin"})
    assert r.returncode == 0, r.stdout + r.stderr


def test_self_update_drop_in_runs_the_launcher_and_restarts_on_failure() -> None:
    from updaterd.install import selfupdate

    text = (ROOT / "contrib" / "systemd" / "updaterd.service.d" / "self-update.conf").read_text()
    assert re.search(rf"^ExecStart=/opt/updaterd/{selfupdate.LAUNCHER} ", text, re.M)
    assert re.search(r"^Restart=on-failure$", text, re.M)
    burst = int(re.search(r"^StartLimitBurst=(\d+)$", text, re.M).group(1))  # type: ignore[union-attr]
    assert burst > selfupdate.MAX_TRIAL_STARTS + 1
    assert f"after {selfupdate.MAX_TRIAL_STARTS} without a commit" in text


def test_unit_has_the_directives_an_operator_expects() -> None:
    text = (ROOT / "contrib" / "systemd" / "updaterd.service").read_text()
    for directive in ("Type=notify", "WatchdogSec=", "Restart=on-failure", "ExecReload=",
                      "ProtectSystem=strict", "ReadWritePaths=", "PrivateTmp=yes",
                      "NoNewPrivileges=yes", "RuntimeDirectory=updaterd",
                      "StateDirectory=updaterd", "CacheDirectory=updaterd", "KillMode=mixed"):
        assert re.search(rf"^{re.escape(directive)}", text, re.M), directive


def test_wheel_installs_man_pages_completions_and_scripts(tmp_path: Path) -> None:
    r = subprocess.run([sys.executable, "-m", "build", "--wheel", "--outdir", str(tmp_path),
                        str(ROOT)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    (wheel,) = tmp_path.glob("updaterd-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    for expected in ("share/man/man8/updaterd.8", "share/man/man1/updaterctl.1",
                     "share/man/man5/updaterd.toml.5",
                     "share/bash-completion/completions/updaterctl.bash",
                     "share/zsh/site-functions/_updaterctl"):
        assert any(n.endswith(expected) for n in names), expected
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "--no-deps", str(wheel)],
                   check=True)
    assert (venv / "share" / "man" / "man8" / "updaterd.8").exists()
    assert (venv / "bin" / "updaterd").exists() and (venv / "bin" / "updaterctl").exists()


def test_every_updaterctl_option_is_in_the_man_page() -> None:
    """Derived from the argparse parser, so a new flag without documentation fails here."""
    import argparse

    from updaterctl.cli import parser

    text = (MAN / "updaterctl.1").read_text().replace("\\-", "-")
    options = set()
    top = parser()
    for action in top._actions:
        options.update(o for o in action.option_strings if o.startswith("--"))
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                for sub_action in sub._actions:
                    options.update(o for o in sub_action.option_strings if o.startswith("--"))
    options -= {"--help"}
    assert sorted(o for o in options if o not in text) == []


EXAMPLES = sorted(p.name for p in (ROOT / "contrib" / "config").glob("*.toml"))


@pytest.mark.parametrize("example", EXAMPLES)
def test_example_configs_are_valid(example: str) -> None:
    r = subprocess.run([str(Path(sys.executable).parent / "updaterd"), "--config",
                        str(ROOT / "contrib" / "config" / example), "check-config"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_every_updaterd_command_and_option_is_in_updaterd_8() -> None:
    """The man page keeps step with `updaterd --help` and every subcommand's."""
    import argparse

    from updaterd.cli import _parser as build_parser

    text = (MAN / "updaterd.8").read_text().replace("\\-", "-").replace("\\fR|\\fB", " ")
    missing = []

    def walk(p: argparse.ArgumentParser, path: str) -> None:
        for action in p._actions:
            missing.extend(f"{path} {o}".strip() for o in action.option_strings
                           if o.startswith("--") and o != "--help" and o not in text)
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    if name not in text:
                        missing.append(f"{path} {name}".strip())
                    walk(sub, f"{path} {name}")

    walk(build_parser(), "")
    assert missing == []
