"""`install = "inplace"`: a real executable in a temp bin/ folder replaced with one rename,
backups, restore on a failed health check, manual rollback by version and by path, retention,
and a kill -9 at every failpoint of the in-place steps."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Daemon, Host, Nginx
from tests.helpers import Feed, app_script, make_tar, run_updaterd
from updaterd import failpoints


class Tool:
    """The target `bin/tool` and the feed that publishes raw builds of it."""

    def __init__(self, host: Host, nginx: Nginx, feed: Feed) -> None:
        self.host, self.nginx, self.feed = host, nginx, feed
        self.bin = host.base / "bin"
        self.bin.mkdir(exist_ok=True)
        self.target = self.bin / "tool"
        self.backups = host.state_dir / "hello" / "backups"

    def publish(self, version: str, healthy: bool = True) -> None:
        art = self.feed.work / f"tool-{version}-linux-x86_64"
        art.write_bytes(app_script(version, healthy))
        self.feed.publish(version, [art])

    def configure(self, **kw: Any) -> None:
        kw.setdefault("health_check", ["./tool"])
        self.host.configure(source="manifest", install="inplace", target=str(self.target),
                            executable="tool",
                            url=self.nginx.url(f"{self.feed.folder.name}/manifest.json"),
                            public_keys=[self.feed.pub], allow_insecure=True, **kw)

    def once(self, *extra: str, env: dict[str, str] | None = None) -> \
            subprocess.CompletedProcess[str]:
        return run_updaterd("--config", self.host.config, *extra, env=env)

    def says(self) -> str:
        out = subprocess.run([str(self.target)], capture_output=True, text=True)
        return (out.stdout + out.stderr).strip()

    def leftovers(self) -> list[str]:
        return [p.name for p in self.bin.iterdir() if p.name.startswith(".updaterd-tmp")]


@pytest.fixture
def tool(host: Host, nginx: Nginx, served_feed: Feed) -> Tool:
    t = Tool(host, nginx, served_feed)
    t.configure()
    return t


def test_install_update_keeps_mode_backs_up_and_touches_nothing_else(tool: Tool) -> None:
    (tool.bin / "neighbour").write_text("not ours")
    tool.target.write_text("#!/bin/sh\necho hand-installed\n")
    tool.target.chmod(0o750)
    tool.publish("1.0.0")
    r = tool.once("--once")
    assert r.returncode == 0, r.stderr
    assert tool.says() == "hello 1.0.0"
    assert stat.S_IMODE(tool.target.stat().st_mode) == 0o750, "the target's mode is kept"
    tool.publish("1.1.0")
    assert tool.once("--once").returncode == 0
    assert tool.says() == "hello 1.1.0"
    backups = sorted(p.name for p in tool.backups.iterdir())
    assert [b.rsplit("-", 1)[0] for b in backups] == ["hello-1.0.0", "hello-unknown"]
    assert (tool.bin / "neighbour").read_text() == "not ours"
    assert sorted(p.name for p in tool.bin.iterdir()) == ["neighbour", "tool"]
    state = tool.host.state()
    assert (state["installed"], state["previous"], state["pending"]) == ("1.1.0", "1.0.0", None)


def test_failed_health_check_restores_the_backup_and_blocks(tool: Tool) -> None:
    tool.publish("1.0.0")
    assert tool.once("--once").returncode == 0
    tool.publish("1.1.0", healthy=False)
    r = tool.once("--once")
    assert r.returncode == 1 and "1.1.0 was rolled back to 1.0.0" in r.stderr
    assert tool.says() == "hello 1.0.0"
    assert tool.host.state()["blocked"] == ["1.1.0"]
    assert tool.leftovers() == []


def test_manual_rollback_by_version_and_by_path_and_outside_paths_refused(
        tool: Tool, tmp_path: Path) -> None:
    for v in ("1.0.0", "1.1.0", "1.2.0"):
        tool.publish(v)
        assert tool.once("--once").returncode == 0
    r = tool.once("rollback", "hello", "--to", "1.0.0")
    assert r.returncode == 0, r.stderr
    assert tool.says() == "hello 1.0.0"
    backup_of_12 = next(p for p in tool.backups.iterdir() if p.name.startswith("hello-1.2.0-"))
    r = tool.once("rollback", "hello", "--to", str(backup_of_12))
    assert r.returncode == 0, r.stderr
    assert tool.says() == "hello 1.2.0"
    outside = tmp_path / "evil"
    outside.write_text("#!/bin/sh\necho evil\n")
    r = tool.once("rollback", "hello", "--to", str(outside))
    assert r.returncode == 1 and "is not one of hello's backups" in r.stderr
    assert tool.says() == "hello 1.2.0"


def test_retention_prunes_the_oldest_backups(tool: Tool) -> None:
    tool.configure(retain=2)
    for v in ("1.0.0", "1.1.0", "1.2.0", "1.3.0"):
        tool.publish(v)
        assert tool.once("--once").returncode == 0
    kept = sorted(p.name.rsplit("-", 1)[0] for p in tool.backups.iterdir())
    assert kept == ["hello-1.1.0", "hello-1.2.0"]


def test_executable_chosen_from_an_archive(tool: Tool) -> None:
    art = tool.feed.work / "tool-2.0.0-linux-x86_64.tar.gz"
    make_tar(art, {"bin/tool": (app_script("2.0.0"), 0o755),
                   "bin/helper": (b"#!/bin/sh\n", 0o755), "README": (b"x", 0o644)},
             top="tool-2.0.0")
    tool.feed.publish("2.0.0", [art])
    assert tool.once("--once").returncode == 0
    assert tool.says() == "hello 2.0.0"
    tool.host.configure(source="manifest", install="inplace", target=str(tool.target),
                        url=tool.nginx.url(f"{tool.feed.folder.name}/manifest.json"),
                        public_keys=[tool.feed.pub], allow_insecure=True,
                        health_check=["./tool"])
    art = tool.feed.work / "tool-2.1.0-linux-x86_64.tar.gz"
    make_tar(art, {"bin/tool": (app_script("2.1.0"), 0o755), "bin/helper": (b"#!/bin/sh\n",
                                                                              0o755)},
             top="tool-2.1.0")
    tool.feed.publish("2.1.0", [art])
    r = tool.once("--once")
    assert r.returncode == 1 and "holds 2 executables; set `executable`" in r.stderr
    assert tool.says() == "hello 2.0.0"


def test_list_backups_and_rollback_through_the_daemon(tool: Tool, daemon: Daemon) -> None:
    tool.configure(check_interval="1h", jitter="0s")
    tool.publish("1.0.0")
    daemon.start()
    daemon.wait_for(lambda: daemon.app()["current"] == "1.0.0", what="install")
    tool.publish("1.1.0")
    daemon.ctl("update", "hello", check=True)
    backups = json.loads(daemon.ctl("--json", "list-backups", "hello", check=True).stdout)
    assert [b["version"] for b in backups] == ["1.0.0"]
    assert backups[0]["size"] == len(app_script("1.0.0"))
    daemon.ctl("rollback", "hello", check=True)
    assert tool.says() == "hello 1.0.0"


INPLACE_POINTS = [fp for fp in failpoints.ALL if fp != "release.after_rename"
                  and not fp.startswith("rollback.")]
ROLLBACK_POINTS = [fp for fp in failpoints.ALL if fp.startswith("rollback.")]


def crash_then_recover(tool: Tool, failpoint: str) -> str:
    r = tool.once("--once", env={"UPDATERD_FAILPOINTS": f"{failpoint}=kill"})
    assert r.returncode == -signal.SIGKILL, f"{failpoint} not reached: {r.stderr}"
    at_crash = tool.says()
    assert at_crash in ("hello 1.0.0", "hello 1.1.0", "broken 1.1.0"), \
        "one complete version at any instant"
    tool.once("--once")
    assert tool.leftovers() == []
    assert tool.host.state()["pending"] is None
    return at_crash


@pytest.mark.parametrize("failpoint", INPLACE_POINTS)
def test_c56_kill_at_each_inplace_step(tool: Tool, failpoint: str) -> None:
    tool.publish("1.0.0")
    assert tool.once("--once").returncode == 0
    tool.publish("1.1.0")
    crash_then_recover(tool, failpoint)
    assert tool.says() == "hello 1.1.0"
    assert tool.host.state()["installed"] == "1.1.0"


@pytest.mark.parametrize("failpoint", ROLLBACK_POINTS)
def test_c66_kill_during_inplace_rollback(tool: Tool, failpoint: str) -> None:
    tool.publish("1.0.0")
    assert tool.once("--once").returncode == 0
    tool.publish("1.1.0", healthy=False)
    crash_then_recover(tool, failpoint)
    assert tool.says() == "hello 1.0.0"
    state = tool.host.state()
    assert state["installed"] == "1.0.0" and state["blocked"] == ["1.1.0"]


def test_leftover_staged_file_is_recognised_and_cleaned(tool: Tool) -> None:
    tool.publish("1.0.0")
    assert tool.once("--once").returncode == 0
    stray = tool.bin / ".updaterd-tmp-tool.deadbeef"
    stray.write_text("half written")
    other = tool.bin / ".updaterd-tmp-other.cafe"
    other.write_text("someone else's")
    assert tool.once("--once").returncode == 0
    assert not stray.exists() and other.exists(), "only our own leftovers are removed"
    os.unlink(other)


# -- owner, mode and backups as an operator sees them -----------------

def test_restores_keep_the_targets_group_and_mode_and_root_owns_them(tool: Tool) -> None:
    # Row 147 changed this test: the owner was kept too, which let that user rewrite the file
    # before root's health check ran it; a foreign owner is now refused (tests/security).
    tool.publish("1.0.0")
    assert tool.once("--once").returncode == 0
    os.chown(tool.target, 0, 65534)
    tool.target.chmod(0o750)
    tool.publish("1.1.0", healthy=False)
    assert tool.once("--once").returncode == 1  # restored after the failed health check
    st = tool.target.stat()
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (0, 65534, 0o750)
    tool.publish("1.2.0")
    assert tool.once("--once").returncode == 0
    st = tool.target.stat()
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (0, 65534, 0o750)
    r = tool.once("rollback", "hello", "--to", "1.0.0")
    assert r.returncode == 0, r.stderr
    st = tool.target.stat()
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (0, 65534, 0o750)
    assert tool.says() == "hello 1.0.0"


def test_backups_are_deduplicated_marked_current_and_forward_is_forward(
        tool: Tool, daemon: Daemon) -> None:
    tool.configure(check_interval="1h", jitter="0s", retain=3)
    for v in ("1.0.0", "1.1.0"):
        tool.publish(v)
        assert tool.once("--once").returncode == 0
    daemon.start()
    r = daemon.ctl("rollback", "hello", "--to", "1.0.0")
    assert r.returncode == 0 and "hello: rolled back from 1.1.0 to 1.0.0" in r.stdout
    r = daemon.ctl("rollback", "hello", "--to", "1.1.0")
    assert r.returncode == 0 and "hello: went forward from 1.0.0 to 1.1.0" in r.stdout, r.stdout
    assert "1.0.0" not in daemon.app()["skipped"], "going forward skips nothing"
    daemon.ctl("rollback", "hello", "--to", "1.0.0", check=True)
    daemon.ctl("rollback", "hello", "--to", "1.1.0", check=True)
    backups = json.loads(daemon.ctl("--json", "list-backups", "hello", check=True).stdout)
    versions = sorted(b["version"] for b in backups)
    assert versions == ["1.0.0", "1.1.0"], "identical copies are kept once"
    current = [b["version"] for b in backups if b["current"]]
    assert current == ["1.1.0"]
    text = daemon.ctl("list-backups", "hello", check=True).stdout
    assert any(line.startswith("1.1.0") and " * " in line for line in text.splitlines())


def test_a_successful_manual_rollback_clears_the_last_error(tool: Tool) -> None:
    tool.publish("1.0.0")
    assert tool.once("--once").returncode == 0
    tool.publish("1.1.0")
    assert tool.once("--once").returncode == 0
    tool.publish("1.2.0", healthy=False)
    assert tool.once("--once").returncode == 1
    assert tool.host.state()["last_error"]
    assert tool.once("rollback", "hello", "--to", "1.0.0").returncode == 0
    assert tool.host.state()["last_error"] is None


def test_j177_a_recall_moves_an_inplace_app_back_to_its_kept_backup(tool: Tool) -> None:
    """The 3 a.m. path for one executable: 1.1.0 (guarded, passing its health check) is
    recalled; the next check puts the 1.0.0 backup back and blocks 1.1.0. It used to log that
    nothing was kept while `list-backups` listed 1.0.0."""
    from updaterd.release import controller
    from updaterd.trust import minisign

    key = minisign.SecretKey.generate()
    tool.publish("1.0.0")
    assert tool.once("--once").returncode == 0
    art = tool.feed.work / "tool-1.1.0-linux-x86_64"
    art.write_bytes(app_script("1.1.0"))
    tool.feed.publish("1.1.0", [art], rollout_keys=[key.public.to_base64()])
    controller.set_state(tool.feed.folder, key, "1.1.0", "active", "", share=100)
    assert tool.once("--once").returncode == 0 and tool.says() == "hello 1.1.0"
    controller.set_state(tool.feed.folder, key, "1.1.0", "recalled", "corrupts data")
    r = tool.once("--once")
    assert r.returncode == 1, r.stderr  # as for any update that ended rolled back
    assert "1.1.0 is recalled by its rollout: corrupts data; going back to 1.0.0" in r.stderr
    assert tool.says() == "hello 1.0.0"
    state = tool.host.state()
    assert state["installed"] == "1.0.0" and state["blocked"] == ["1.1.0"]
    assert state["recall_blocked"] == ["1.1.0"] and state["pending"] is None
    assert tool.once("--once").returncode == 0 and tool.says() == "hello 1.0.0"  # it stays
    assert not tool.leftovers()
