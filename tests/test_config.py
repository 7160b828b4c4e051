"""Configuration: msgspec validation with one line per problem naming file and key."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import run_updaterd
from updaterd.errors import ConfigError
from updaterd.host import config

GOOD = """
[daemon]
state_dir = "/var/lib/updaterd"

[apps.demo]
source = "directory"
path = "/srv/feed"
prefix = "/opt/demo"
check_interval = "4h"
jitter = "10m"
retain = 3
pin = ">=1.4,<2"
health_check = ["bin/demo", "--version"]
max_rate = "20MiB/s"
"""


def test_good_config_decodes() -> None:
    cfg = config.parse(GOOD, "u.toml")
    app = cfg.apps["demo"]
    assert app.retain == 3 and app.health_check == ["bin/demo", "--version"]
    assert cfg.daemon.max_parallel_downloads == 2


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as e:
        config.parse(text, "u.toml")
    return e.value.problems


def test_every_problem_reported_one_line_each_with_file_and_key() -> None:
    bad = """
[daemon]
sockit = "/x"
max_parallel_downloads = "two"

[apps.demo]
source = "github"
asset = "(unclosed"
check_interval = "often"
retain = -1
install = "releases"
"""
    lines = problems(bad)
    assert "u.toml: daemon.sockit: unknown key (did you mean 'socket'?)" in lines
    assert "u.toml: daemon.max_parallel_downloads: 'two' is not a whole number" in lines
    assert any(ln.startswith("u.toml: apps.demo.asset: bad regular expression") for ln in lines)
    assert any(ln.startswith("u.toml: apps.demo.check_interval:") for ln in lines)
    assert any(ln.startswith("u.toml: apps.demo.retain:") for ln in lines)


def test_cross_key_rules() -> None:
    lines = problems('[apps.a]\nsource = "manifest"\nurl = "http://example.com/m.json"\n'
                     'prefix = "relative/path"\n')
    assert any("apps.a.url: plain http:// is allowed only to loopback" in ln for ln in lines)
    assert any("apps.a.prefix: must be an absolute path" in ln for ln in lines)
    assert any("apps.a.public_keys: a feed fetched over the network needs" in ln
               for ln in lines)
    lines = problems('[apps.a]\nprefix = "/opt/a"\n')
    assert lines == ["u.toml: apps.a.source: required key is missing"]


def test_bad_pin_and_bad_key() -> None:
    lines = problems('[apps.a]\nsource = "directory"\npath = "/f"\nprefix = "/p"\n'
                     'pin = ">=x"\npublic_keys = ["nope"]\n')
    assert any("apps.a.pin:" in ln for ln in lines)
    assert any("apps.a.public_keys[0]: not a minisign" in ln for ln in lines)


def test_not_toml() -> None:
    assert problems("[apps\n")[0].startswith("u.toml: not valid TOML")


def test_check_config_command_exits_2_with_problems(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.toml"
    cfg.write_text('[apps.a]\nsource = "nowhere"\n')
    r = run_updaterd("--config", cfg, "check-config")
    assert r.returncode == 2
    assert f"{cfg}: apps.a.source:" in r.stderr
    good = tmp_path / "good.toml"
    good.write_text(GOOD)
    r = run_updaterd("--config", good, "check-config")
    assert r.returncode == 0, r.stderr


def test_refuses_to_start_on_bad_config(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.toml"
    cfg.write_text("[daemon]\nbogus = 1\n")
    r = run_updaterd("--config", cfg, "--once")
    assert r.returncode == 2 and "daemon.bogus: unknown key" in r.stderr


def test_errors_read_as_a_person_would_write_them(tmp_path: Path) -> None:
    """No regular expression and no msgspec wording: what is wrong, and what would be right."""
    from updaterd.errors import ConfigError
    from updaterd.host.config import parse
    text = ('[daemon]\nsocket_mode = "rw"\n[apps.demo]\nsource = "manifst"\n'
            'prefix = "/opt/demo"\ncheck_intervall = "4h"\ncheck_interval = "4 hours"\n'
            'max_rate = "fast"\n')
    with pytest.raises(ConfigError) as e:
        parse(text, "u.toml")
    problems = e.value.problems
    assert "u.toml: daemon.socket_mode: 'rw' is not a mode (examples: 0660, 0600)" in problems
    assert 'u.toml: apps.demo.source: \'manifst\' is not one of "manifest", "github", ' \
        '"directory"' in problems
    assert "u.toml: apps.demo.check_intervall: unknown key (did you mean " \
        "'check_interval'?)" in problems
    assert "u.toml: apps.demo.check_interval: '4 hours' is not a duration (examples: 30s, " \
        "10m, 4h, 1h30m, 7d)" in problems
    assert "u.toml: apps.demo.max_rate: 'fast' is not a rate (examples: 512KiB/s, 20MiB/s)" \
        in problems
    assert not any("regex" in p or "Expected" in p for p in problems)


def test_types_and_ranges_read_plainly() -> None:
    from updaterd.errors import ConfigError
    from updaterd.host.config import parse
    text = ('[daemon]\nmax_parallel_downloads = 100\nsocket = 5\n[apps.x]\n'
            'source = "directory"\npath = "/f"\nprefix = "/p"\nauto_update = "yes"\n'
            'health_check = "bin/x"\nretain = -1\n')
    with pytest.raises(ConfigError) as e:
        parse(text, "u.toml")
    assert e.value.problems == [
        "u.toml: daemon.max_parallel_downloads: 100 is too large (at most 64)",
        "u.toml: daemon.socket: 5 is not a string (in quotes)",
        "u.toml: apps.x.auto_update: 'yes' is not true or false",
        "u.toml: apps.x.health_check: 'bin/x' is not a list ([...])",
        "u.toml: apps.x.retain: -1 is too small (at least 0)"]
