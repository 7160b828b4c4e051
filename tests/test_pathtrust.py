"""Which paths updaterd trusts as root, decision by decision (fast, in-process on real folders;
the end-to-end refusals are in tests/security/test_host_rows.py; `make mutate` runs these
against mutants of pathtrust.py)."""

from __future__ import annotations

import os
from pathlib import Path

import msgspec
import pytest

from tests.helpers import NOBODY, as_nobody
from updaterd.errors import UnsafePath
from updaterd.host import pathtrust
from updaterd.host.config import AppConfig, Config

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="chown to another user needs root")
OTHER = 64123  # a uid and gid with no name here


@pytest.fixture
def safe(tmp_path: Path) -> Path:
    """A private folder whose parents pass (pytest's folders are root's, 0700 or sticky)."""
    folder = tmp_path / "safe"
    folder.mkdir(mode=0o755)
    assert pathtrust.problem(folder, "test") is None
    return folder


def test_a_private_file_and_a_missing_path_below_a_safe_folder_pass(safe: Path) -> None:
    (safe / "config").write_text("")
    (safe / "config").chmod(0o644)
    assert pathtrust.problem(safe / "config", "config") is None
    assert pathtrust.problem(safe / "not" / "yet", "state") is None
    pathtrust.require_trusted(safe, "prefix")


@pytest.mark.parametrize(("mode", "who"), [(0o664, "its group"), (0o646, "others"),
                                           (0o647, "others"), (0o674, "its group"),
                                           (0o666, "group and others"),
                                           (0o4662, "group and others")])
def test_writable_by_someone_else_is_named(safe: Path, mode: int, who: str) -> None:
    f = safe / "config"
    f.write_text("")
    f.chmod(mode)
    assert pathtrust.problem(f, "config") == (
        f"config {f}: {f} is writable by {who} (owner root:root, mode {mode:04o}); another user "
        f"could change what updaterd trusts as root. Fix: chown root:root {f} && chmod go-w {f}")
    with pytest.raises(UnsafePath, match="writable by"):
        pathtrust.require_trusted(f, "config")


def test_an_owner_who_is_not_root_is_named_even_with_a_safe_mode(safe: Path) -> None:
    f = safe / "config"
    f.write_text("")
    f.chmod(0o600)
    os.chown(f, OTHER, OTHER)
    assert f"{f} is owned by uid {OTHER}:gid {OTHER} (mode 0600)" in \
        (pathtrust.problem(f, "config") or "")


def test_a_parent_others_can_write_is_the_problem(safe: Path) -> None:
    inner = safe / "inner"
    inner.mkdir(mode=0o755)
    safe.chmod(0o775)
    why = pathtrust.problem(inner / "config", "config") or ""
    assert f"{safe} is writable by its group" in why and f"chmod go-w {safe}" in why


def test_a_root_sticky_folder_is_a_parent_only_for_a_private_entry(safe: Path) -> None:
    shared = safe / "shared"
    shared.mkdir()
    shared.chmod(0o1777)
    mine = shared / "mine"
    why = pathtrust.problem(mine / "state", "state") or ""
    assert f"{mine} does not exist yet in the shared folder {shared} (mode 1777)" in why
    assert why.endswith(f"Fix: mkdir -m 0755 {mine}")
    mine.mkdir(mode=0o755)
    assert pathtrust.problem(mine / "state", "state") is None
    # below it, a second shared folder: the first one's entry is then not private
    inner = shared / "inner"
    (inner / "mine").mkdir(parents=True, mode=0o755)
    inner.chmod(0o1777)
    why = pathtrust.problem(inner / "mine", "state") or ""
    assert f"{inner} is writable by group and others (owner root:root, mode 1777) in the " \
           f"shared folder {shared} (mode 1777)" in why
    assert why.endswith(f"Fix: chown root:root {inner} && chmod go-w {inner}")


def test_a_sticky_folder_is_not_safe_as_the_path_itself(safe: Path) -> None:
    shared = safe / "shared"
    shared.mkdir()
    shared.chmod(0o1777)
    assert f"{shared} is writable by group and others" in \
        (pathtrust.problem(shared, "prefix") or "")


def test_a_sticky_folder_owned_by_another_user_is_no_safe_parent(safe: Path) -> None:
    shared = safe / "shared"
    (shared / "mine").mkdir(parents=True, mode=0o755)
    shared.chmod(0o1777)
    os.chown(shared, OTHER, OTHER)
    assert f"{shared} is owned by" in (pathtrust.problem(shared / "mine", "prefix") or "")


def test_a_writable_folder_without_the_sticky_bit_is_no_safe_parent(safe: Path) -> None:
    shared = safe / "shared"
    (shared / "mine").mkdir(parents=True, mode=0o755)
    shared.chmod(0o777)
    assert f"{shared} is writable by group and others" in \
        (pathtrust.problem(shared / "mine", "prefix") or "")


def test_a_link_is_checked_as_written_and_where_it_leads(safe: Path) -> None:
    unsafe = safe / "unsafe"
    unsafe.mkdir()
    unsafe.chmod(0o777)
    (unsafe / "config").write_text("")
    (unsafe / "config").chmod(0o644)
    link = safe / "link"
    link.symlink_to(unsafe / "config")
    assert f"{unsafe} is writable by group and others" in \
        (pathtrust.problem(link, "config") or "")
    zlink = safe / "zlink"  # a link whose target sorts before it is checked too
    zlink.symlink_to(unsafe / "config")
    assert f"{unsafe} is writable by group and others" in \
        (pathtrust.problem(zlink, "config") or "")
    good = safe / "good"
    good.write_text("")
    good.chmod(0o644)
    (safe / "goodlink").symlink_to(good)
    assert pathtrust.problem(safe / "goodlink", "config") is None  # a link's own mode is 0777


def test_a_link_in_a_shared_sticky_folder_leads_somewhere_checked(safe: Path) -> None:
    shared = safe / "shared"
    shared.mkdir()
    shared.chmod(0o1777)
    target = safe / "target"
    target.mkdir(mode=0o755)
    (shared / "link").symlink_to(target)
    assert pathtrust.problem(shared / "link", "prefix") is None


def test_a_path_that_cannot_be_inspected_is_named(safe: Path) -> None:
    (safe / "file").write_text("")
    (safe / "file").chmod(0o644)
    why = pathtrust.problem(safe / "file" / "below", "state") or ""
    assert why == f"state {safe / 'file' / 'below'}: cannot inspect {safe / 'file' / 'below'}: " \
                  "Not a directory"


def app(**table: object) -> AppConfig:
    return msgspec.convert({"source": "directory", "path": "/srv/feed", **table}, AppConfig)


def test_app_folders_for_each_install_mode_and_unsigned_feed() -> None:
    daemon = msgspec.convert({"daemon": {"state_dir": "/var/lib/u",
                                          "cache_dir": "/var/cache/u"}, "apps": {}},
                             Config).daemon
    base = [("state folder", Path("/var/lib/u/a")), ("cache folder", Path("/var/cache/u/a"))]
    releases = [*base, ("prefix", Path("/opt/a")), ("releases folder", Path("/opt/a/releases")),
                ("staging folder", Path("/opt/a/.staging")), ("bin folder", Path("/opt/a/bin"))]
    signed = app(prefix="/opt/a", public_keys=["RWQ"])
    assert pathtrust.app_folders(signed, "a", daemon) == releases
    unsigned = app(prefix="/opt/a")
    assert pathtrust.app_folders(unsigned, "a", daemon) == \
        [*releases, ("unsigned feed folder", Path("/srv/feed"))]
    skipped = app(prefix="/opt/a", public_keys=["RWQ"], verify="skip")
    assert pathtrust.app_folders(skipped, "a", daemon)[-1] == \
        ("unsigned feed folder", Path("/srv/feed"))
    inplace = app(install="inplace", target="/usr/local/bin/tool", public_keys=["RWQ"])
    assert pathtrust.app_folders(inplace, "a", daemon) == [
        *base, ("backups folder", Path("/var/lib/u/a/backups")),
        ("target folder", Path("/usr/local/bin")),
        ("target", Path("/usr/local/bin/tool"))]  # H147: root runs the target itself
    file_feed = app(source="manifest", path=None, url="file:///srv/m/manifest.json",
                    prefix="/opt/a")
    assert pathtrust.app_folders(file_feed, "a", daemon)[-1] == \
        ("unsigned feed", Path("/srv/m/manifest.json"))
    https_feed = app(source="manifest", path=None, url="https://a.example/m.json",
                     prefix="/opt/a")
    assert pathtrust.app_folders(https_feed, "a", daemon) == releases
    # keys that do not belong to the app's source or install mode change nothing
    stray = [app(source="manifest", path="/srv/stray", url="https://a.example/m.json",
                 prefix="/opt/a", verify="skip"),
             app(source="github", path="/srv/stray", repo="o/r", asset="x", prefix="/opt/a",
                 verify="skip"),
             app(prefix="/opt/a", target="/usr/local/bin/tool", public_keys=["RWQ"])]
    for cfg in stray:
        assert pathtrust.app_folders(cfg, "a", daemon) == releases, cfg
    file_url = app(prefix="/opt/a", path="/srv/feed", url="file:///srv/m/manifest.json")
    assert [w for w, _ in pathtrust.app_folders(file_url, "a", daemon)][-1] == \
        "unsigned feed folder"


def test_setup_problems_names_each_folder_to_mend_once(safe: Path) -> None:
    shared = safe / "open"
    shared.mkdir()
    shared.chmod(0o777)
    config = msgspec.convert({
        "daemon": {"state_dir": str(shared / "state"), "cache_dir": str(shared / "cache"),
                   "lock_file": str(safe / "lock"), "socket": str(safe / "u.sock")},
        "apps": {"a": {"source": "directory", "path": str(safe), "prefix": str(safe / "a"),
                       "public_keys": ["RWQ"]}}}, Config)
    problems = pathtrust.setup_problems(config)
    assert len(problems) == 1 and f"{shared} is writable by group and others" in problems[0]
    (safe / "a").mkdir()
    (safe / "a").chmod(0o757)  # the app's prefix: a second folder to mend
    problems = pathtrust.setup_problems(config)
    assert len(problems) == 2 and f"{safe / 'a'} is writable by others" in problems[1]
    (safe / "a").chmod(0o755)
    shared.chmod(0o755)
    assert pathtrust.setup_problems(config) == []
    with pytest.raises(UnsafePath, match="a state folder"):
        shared.chmod(0o775)
        pathtrust.require_trusted_app(config.apps["a"], "a", config.daemon)
    shared.chmod(0o755)
    pathtrust.require_trusted_app(config.apps["a"], "a", config.daemon)


# -- updaterd run by an ordinary user (the demo, per-user installs) -------------------------------

def problem_as_nobody(check: str) -> str | None:
    """pathtrust.problem(check) as an updaterd whose effective user is nobody."""
    out = as_nobody(lambda: repr(pathtrust.problem(check, "x")))
    return None if out == "None" else out


def test_an_ordinary_user_trusts_root_and_itself_only(public_dir: Path) -> None:
    assert problem_as_nobody("/usr") is None
    mine = public_dir / "mine"
    mine.mkdir(mode=0o755)
    os.chown(mine, NOBODY, NOBODY)
    assert problem_as_nobody(str(mine)) is None
    theirs = public_dir / "theirs"
    theirs.mkdir(mode=0o755)
    os.chown(theirs, OTHER, OTHER)
    assert f"{theirs} is owned by uid {OTHER}" in (problem_as_nobody(str(theirs)) or "")


def test_only_a_sticky_folder_of_roots_is_a_safe_parent(public_dir: Path) -> None:
    sticky = public_dir / "sticky"
    (sticky / "mine").mkdir(parents=True, mode=0o755)
    os.chown(sticky / "mine", NOBODY, NOBODY)
    sticky.chmod(0o1777)
    assert problem_as_nobody(str(sticky / "mine")) is None
    os.chown(sticky, NOBODY, NOBODY)
    assert f"{sticky} is writable by group and others" in \
        (problem_as_nobody(str(sticky / "mine")) or "")
