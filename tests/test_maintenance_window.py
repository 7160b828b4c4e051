"""Maintenance windows through the real daemon and `updaterd --once`: the switch waits for the
window (the download does not), `update --now` overrides it or takes a waiting update over, and a
bad window is a configuration error."""

from __future__ import annotations

import subprocess
import time
from datetime import datetime, timedelta
from pathlib import Path

from tests.conftest import Daemon, Host, Nginx
from tests.helpers import BIN, Feed, run_updaterd
from updaterd import window


def closed_window() -> str:
    """A one-minute window two days from now: closed now, opening at a known time."""
    day = window.DAYS[(datetime.now().weekday() + 2) % 7].capitalize()
    return f"{day} 00:00-00:01"


def test_window_defers_the_switch_and_update_now_overrides(
        host: Host, nginx: Nginx, served_feed: Feed, daemon: Daemon) -> None:
    art = served_feed.release("1.0.0")
    host.follow(nginx, served_feed, window=closed_window())
    daemon.start()
    daemon.wait_for(lambda: daemon.app()["phase"] == "waiting_window", what="window wait")
    app = daemon.app()
    assert app["current"] is None and app["available"] == "1.0.0"
    note = next(n for n in app["notes"] if "waits for the window" in n)
    opens_in = note.split("opens in ")[1].rstrip(")")
    assert opens_in.endswith("h") or "d" in opens_in or "h" in opens_in
    assert (host.base / "cache" / "hello" / art.name).exists(), "downloaded before the window"
    # it looks again at the earlier of the check interval (1h here) and the window's opening
    assert 3500 < app["next_check"] - time.time() <= 3600
    assert "waits for the window" in daemon.ctl("status").stdout
    daemon.ctl("update", "hello", "--now", check=True)
    assert host.current() == "1.0.0"


def test_once_outside_the_window_downloads_and_defers(host: Host, nginx: Nginx,
                                                      served_feed: Feed) -> None:
    art = served_feed.release("1.0.0")
    host.follow(nginx, served_feed, window=closed_window())
    r = run_updaterd("--config", host.config, "--once")
    assert r.returncode == 0, r.stderr
    assert "1.0.0 is downloaded and waiting for window (opens in" in r.stderr
    assert host.current() is None
    assert (host.base / "cache" / "hello" / art.name).exists()


def test_bad_window_is_a_config_error(tmp_path: Path) -> None:
    cfg = tmp_path / "u.toml"
    cfg.write_text('[apps.a]\nsource = "directory"\npath = "/f"\nprefix = "/p"\n'
                   'window = "Mon-Fri 2am-5am"\n')
    r = run_updaterd("--config", cfg, "check-config")
    assert r.returncode == 2 and "apps.a.window: bad window part 'Mon-Fri 2am-5am'" in r.stderr


def test_window_wait_is_described_for_people() -> None:
    assert window.describe_wait(timedelta(hours=3, minutes=12).total_seconds()) == "3h12m"


def test_update_now_takes_over_an_update_waiting_for_its_window(
        host: Host, nginx: Nginx, served_feed: Feed, daemon: Daemon) -> None:
    """A client's `update` outside the window waits in the daemon; another client's
    `update --now` is not told busy: it makes that same update go on, and both see its end."""
    served_feed.release("1.0.0")
    host.follow(nginx, served_feed, window=closed_window(), auto_update=False)
    daemon.start()
    daemon.wait_for(lambda: daemon.app()["available"] == "1.0.0" and
                    daemon.app()["phase"] == "idle", what="the first check")
    waiting = subprocess.Popen([str(BIN / "updaterctl"), "--socket", str(daemon.socket),
                                "update", "hello"], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    daemon.wait_for(lambda: daemon.app()["phase"] == "waiting_window", what="the wait")
    r = daemon.ctl("update", "hello", "--now")
    assert r.returncode == 0, r.stderr
    assert "installed 1.0.0" in r.stdout
    out, err = waiting.communicate(timeout=30)
    assert waiting.returncode == 0 and "installed 1.0.0" in out, err
    assert host.current() == "1.0.0"


def test_status_says_when_the_window_lets_an_available_version_install(
        host: Host, nginx: Nginx, served_feed: Feed, daemon: Daemon) -> None:
    """Issue 30: after a check, status said "installs at the next check, in 59m" while the
    version waited for a window two days away; it names the window's opening."""
    served_feed.release("1.0.0")
    host.follow(nginx, served_feed, window=closed_window())
    daemon.start()
    daemon.wait_for(lambda: daemon.app()["phase"] == "waiting_window", what="window wait")
    daemon.ctl("check", "hello", check=True)
    app = daemon.app()
    assert app["phase"] == "idle", app
    note = next(n for n in app["notes"] if n.startswith("1.0.0 installs"))
    assert note.startswith("1.0.0 installs when the window opens, in ") and \
        f"({closed_window()}); `updaterctl update hello --now` installs it now" in note, note
    opens_in = note.split("opens, in ")[1].split(" ")[0]
    assert "d" in opens_in or int(opens_in.split("h")[0]) > 1, note


def test_check_names_how_to_install_a_version_passed_over(
        host: Host, nginx: Nginx, served_feed: Feed, daemon: Daemon) -> None:
    """Issue 30: a host outside a rollout was told "up to date" with no word of the command
    that installs the version on purpose."""
    served_feed.release("1.0.0")
    host.follow(nginx, served_feed)
    daemon.start()
    daemon.wait_for(lambda: daemon.app()["current"] == "1.0.0", what="1.0.0")
    served_feed.release("1.1.0", rollout=0)
    out = daemon.ctl("check", "hello", check=True).stdout.splitlines()
    assert out == ["hello: up to date at 1.0.0",
                   "  1.1.0: available to 0% of hosts, not this one yet",
                   "  (`updaterctl update hello --version V` installs one of these on purpose)"]
