"""Operations an operator can steer: every outcome recorded the same way whoever
started it (catalogue G142), busy answered at once, edits that do not wait, `cancel`.
The real daemon and updaterctl, a feed on nginx, slow downloads through `max_rate`."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import updaterctl
from tests.conftest import Daemon, Host, Nginx
from tests.helpers import BIN, Feed, app_script, make_tar, make_zip

SLOW = "200KiB/s"


def slow_release(feed: Feed, version: str, size: int = 3 << 20, fmt: str = "tar.gz") -> Path:
    """A release with an incompressible blob: several seconds to download at SLOW (a tar.gz
    streams into its staging folder; a zip goes through the download cache)."""
    art = feed.work / f"hello-{version}-linux-x86_64.{fmt}"
    files = {"bin/hello": (app_script(version), 0o755), "share/blob": (os.urandom(size), 0o644)}
    if fmt == "zip":
        make_zip(art, files, top=f"hello-{version}")
    else:
        make_tar(art, files, top=f"hello-{version}")
    feed.publish(version, [art])
    return art


class Watch:
    """`updaterctl --json watch` in the background: the event stream a client sees."""

    def __init__(self, daemon: Daemon) -> None:
        self.out = daemon.host.base / "events.jsonl"
        with open(self.out, "w") as f:
            self.proc = subprocess.Popen([str(BIN / "updaterctl"), "--socket",
                                          str(daemon.socket), "--json", "watch"], stdout=f)
        time.sleep(0.3)

    def events(self) -> list[dict[str, Any]]:
        return [json.loads(x) for x in self.out.read_text().splitlines() if x.strip()]

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


@pytest.fixture
def watch(running: Daemon) -> Iterator[Watch]:
    w = Watch(running)
    yield w
    w.close()


def metric(daemon: Daemon, name: str, labels: str) -> float:
    text = daemon.ctl("metrics", check=True).stdout
    for line in text.splitlines():
        if line.startswith(f"{name}{{{labels}}} "):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name}{{{labels}}} not in\n{text}")


def wait_phase(daemon: Daemon, phase: str, timeout: float = 20) -> None:
    daemon.wait_for(lambda: daemon.app()["phase"] == phase, timeout, f"phase {phase}")


# -- G142: every kind of failure, told the same way everywhere --------------------------------

@pytest.mark.parametrize("fault", ["bad signature", "404", "digest mismatch", "disk full"])
def test_g142_a_failure_agrees_in_status_history_events_log_and_metrics(
        running: Daemon, served_feed: Feed, watch: Watch, fault: str) -> None:
    if fault == "disk full":
        from tests.faults.test_disk_full import small_fs
        with small_fs(running.host.base / "cache", "1m"):  # a zip: through the cache
            slow_release(served_feed, "1.1.0", size=3 << 20, fmt="zip")
            _g142_agreement(running, watch, "downloading", "MiB free")
        return
    art = served_feed.release("1.1.0")
    if fault == "bad signature":
        manifest = served_feed.folder / "manifest.json"
        manifest.write_text(manifest.read_text().replace('"1.1.0"', '"1.1.1"'))
    elif fault == "404":
        (served_feed.folder / art.name).unlink()
    else:
        data = bytearray((served_feed.folder / art.name).read_bytes())
        data[len(data) // 2] ^= 0xFF
        (served_feed.folder / art.name).write_bytes(bytes(data))
    _g142_agreement(running, watch, "checking" if fault == "bad signature" else "downloading",
                    {"bad signature": "signature", "404": "HTTP 404",
                     "digest mismatch": "mismatch"}[fault])


def _g142_agreement(running: Daemon, watch: Watch, step: str, why: str) -> None:
    """`update` fails at `step` (its message says `why`): status, the event stream, the log,
    the metrics and the history all say so, the same way."""
    before = metric(running, "updaterd_failures_total", 'app="hello"')
    r = running.ctl("update", "hello")
    assert r.returncode == 1 and why in r.stderr, r.stderr
    app = running.app()
    assert app["phase"] == "failed", "never left at checking or downloading"
    assert app["last_error"] and app["last_error"] in r.stderr
    errors = [e for e in watch.events() if e["kind"] == "error"]
    assert len(errors) == 1 and errors[0]["outcome"] == "failed" and errors[0]["step"] == step
    assert f"update failed at {step}: " in running.log.read_text()
    assert metric(running, "updaterd_failures_total", 'app="hello"') == before + 1
    assert metric(running, "updaterd_phase", 'app="hello",phase="failed"') == 1
    state = running.host.state()
    assert state["consecutive_failures"] == 1  # what the scheduler's backoff reads
    if step != "checking":
        assert state["history"][-1]["action"] == "failed"
        assert state["history"][-1]["version"] == "1.1.0"


def test_g142_a_failed_health_check_is_a_rolled_back_outcome(running: Daemon,
                                                             served_feed: Feed,
                                                             watch: Watch) -> None:
    served_feed.release("1.1.0", healthy=False)
    r = running.ctl("update", "hello")
    assert r.returncode == 1 and "health check" in r.stderr
    results = [e for e in watch.events() if e["kind"] == "result"]
    assert results[-1]["outcome"] == "rolled_back"
    assert metric(running, "updaterd_rollbacks_total", 'app="hello"') == 1
    assert running.app()["phase"] == "idle" and running.app()["current"] == "1.0.0"


def test_g142_a_scheduled_check_that_fails_is_logged_and_backs_off(
        host: Host, nginx: Nginx, served_feed: Feed, daemon: Daemon) -> None:
    served_feed.release("1.0.0")
    host.follow(nginx, served_feed)
    (served_feed.folder / "manifest.json.minisig").unlink()
    daemon.start()
    daemon.wait_for(lambda: daemon.app()["phase"] == "failed", what="the failed check")
    app = daemon.app()
    assert "update failed at checking: " in daemon.log.read_text()
    assert app["next_check"] - time.time() > 30, "retried after the backoff, not at once"


# -- busy answers at once; edits never wait ----------------------------------------------------

@pytest.fixture
def downloading(host: Host, nginx: Nginx, served_feed: Feed, daemon: Daemon) -> Daemon:
    """hello on 1.0.0, with 1.1.0 being downloaded slowly by the scheduler."""
    served_feed.release("1.0.0")
    host.follow(nginx, served_feed, max_rate=SLOW, check_interval="2s")
    daemon.start()
    daemon.wait_for(lambda: daemon.app()["current"] == "1.0.0", what="1.0.0")
    slow_release(served_feed, "1.1.0")  # the next scheduled check, 2 s on, downloads it
    daemon.wait_for(lambda: daemon.app()["phase"] == "downloading", what="the slow download")
    return daemon


def test_every_method_answers_within_a_second_during_a_long_download(
        downloading: Daemon) -> None:
    d = downloading
    for args in (["status"], ["list-backups", "hello"], ["history", "hello"], ["metrics"],
                 ["check", "hello"], ["update", "hello"], ["rollback", "hello"],
                 ["pause", "hello"], ["resume", "hello"], ["skip", "hello", "9.9.9"],
                 ["unskip", "hello", "9.9.9"]):
        t0 = time.monotonic()
        r = d.ctl(*args, timeout=10)
        took = time.monotonic() - t0
        assert took < 1, (args, took)
        if args[0] in ("check", "update", "rollback"):
            assert r.returncode == 1 and "hello is busy: downloading for " in r.stderr, r.stderr
            assert "`updaterctl cancel hello` stops it" in r.stderr
        else:
            assert r.returncode == 0, (args, r.stderr)
    assert d.app()["phase"] == "downloading", "the download went on"


def test_a_version_skipped_during_its_download_is_not_installed(downloading: Daemon) -> None:
    d = downloading
    d.ctl("skip", "hello", "1.1.0", check=True)
    d.wait_for(lambda: d.app()["phase"] == "idle", timeout=60, what="the download to end")
    app = d.app()
    assert app["current"] == "1.0.0"
    history = d.host.state()["history"]
    assert history[-1]["action"] == "cancelled" and "skipped" in history[-1]["reason"]


def test_cancel_stops_a_download_at_once(downloading: Daemon) -> None:
    d = downloading
    w = Watch(d)
    failures = metric(d, "updaterd_failures_total", 'app="hello"')
    t0 = time.monotonic()
    r = d.ctl("cancel", "hello")
    assert r.returncode == 0 and "hello: cancelled while downloading" in r.stdout
    d.wait_for(lambda: d.app()["phase"] == "idle", timeout=5, what="idle")
    assert time.monotonic() - t0 < 2
    assert d.app()["current"] == "1.0.0"
    assert d.host.state()["history"][-1]["action"] == "cancelled"
    assert not list((d.host.prefix / "releases").glob("1.1.0*"))
    r = d.ctl("cancel", "hello")
    assert r.returncode == 1 and "nothing to cancel" in r.stderr
    # the same story in the event stream, the log and the metrics (not a failure)
    w.close()
    results = [e for e in w.events() if e["kind"] == "result"]
    assert results and results[-1]["outcome"] == "cancelled"
    assert "cancelled at downloading" in d.log.read_text()
    assert metric(d, "updaterd_failures_total", 'app="hello"') == failures


def test_cancel_past_the_switch_is_refused_and_the_update_finishes(
        host: Host, nginx: Nginx, served_feed: Feed, daemon: Daemon) -> None:
    served_feed.release("1.0.0")
    host.follow(nginx, served_feed, health_check=["/bin/sh", "-c", "sleep 3"])
    daemon.start()
    daemon.wait_for(lambda: daemon.app()["phase"] == "health_check", what="health check")
    r = daemon.ctl("cancel", "hello")
    assert r.returncode == 1 and "past its switch (health_check)" in r.stderr
    daemon.wait_for(lambda: daemon.app()["current"] == "1.0.0", what="the install to finish")


# -- what the operator reads ---------------------------------------------------------------------

def test_check_of_every_app_names_each_failure_and_keeps_going(
        host: Host, nginx: Nginx, served_feed: Feed, daemon: Daemon) -> None:
    from tests.helpers import write_config
    served_feed.release("1.0.0")
    good = {"source": "manifest", "url": nginx.url(f"{served_feed.folder.name}/manifest.json"),
            "public_keys": [served_feed.pub], "allow_insecure": True, "check_interval": "1h",
            "jitter": "0s", "auto_update": False}
    write_config(host.config, host.daemon_table(), {
        "broken": {**good, "url": nginx.url("nowhere/manifest.json"),
                   "prefix": str(host.base / "broken")},
        "hello": {**good, "prefix": str(host.prefix)}})
    daemon.start()
    daemon.wait_for(lambda: {a["phase"] for a in daemon.status()["apps"]} <= {"idle", "failed"}
                    and all(a["last_check"] for a in daemon.status()["apps"]),
                    what="the first scheduled checks")
    r = daemon.ctl("check")
    assert r.returncode == 1
    assert "hello: 1.0.0 is available (current nothing)" in r.stdout
    assert "broken: check failed: " in r.stderr and "HTTP 404" in r.stderr
    out = json.loads(daemon.ctl("--json", "check").stdout)
    assert set(out) == {"broken", "hello"} and "error" in out["broken"]
    assert out["hello"]["available"] == "1.0.0"


def test_reload_of_an_invalid_file_prints_every_problem(running: Daemon) -> None:
    config = running.host.config
    config.write_text(config.read_text().replace('check_interval = "1h"',
                                                 'check_interval = "4 hours"\nbogus = 1'))
    r = running.ctl("reload")
    assert r.returncode == 1 and "configuration refused; the old one is kept" in r.stderr
    assert "apps.hello.bogus: unknown key" in r.stderr
    assert "apps.hello.check_interval" in r.stderr
    assert "reload refused: " in running.log.read_text()


def test_status_says_why_and_what_undoes_it(running: Daemon, served_feed: Feed) -> None:
    served_feed.release("1.1.0", healthy=False)
    assert running.ctl("update", "hello").returncode == 1
    served_feed.release("1.2.0")
    running.ctl("skip", "hello", "1.2.0", check=True)
    notes = running.app()["notes"]
    assert any(n.startswith("rolled back from 1.1.0 to 1.0.0: health check") and
               n.endswith("`updaterctl unskip hello 1.1.0` allows it again") for n in notes)
    assert "1.2.0 is skipped: `updaterctl unskip hello 1.2.0` allows it again" in notes
    actions = [(h["action"], h["version"]) for h in running.host.state()["history"]]
    assert ("rolled_back", "1.0.0") in actions and actions[-2:] != [("blocked", "1.2.0")]
    running.ctl("unskip", "hello", "1.2.0", check=True)
    running.ctl("check", "hello", check=True)
    notes = running.app()["notes"]
    assert any(n.startswith("1.2.0 installs at the next check, in ") and
               n.endswith("`updaterctl update hello` installs it now") for n in notes), notes
    running.ctl("pause", "hello", check=True)
    assert "paused: `updaterctl resume hello` to go on" in running.app()["notes"]


def test_rollback_after_rollback_toggles_like_rpm_ostree(running: Daemon,
                                                         served_feed: Feed) -> None:
    served_feed.release("1.1.0")
    running.ctl("update", "hello", check=True)
    r = running.ctl("rollback", "hello")
    assert "rolled back from 1.1.0 to 1.0.0" in r.stdout
    assert running.app()["skipped"] == ["1.1.0"]
    r = running.ctl("rollback", "hello")  # undoes the rollback
    assert "went forward from 1.0.0 to 1.1.0" in r.stdout
    app = running.app()
    assert app["current"] == "1.1.0" and app["skipped"] == [], "nothing left skipped"


def test_messages_an_operator_reads(running: Daemon) -> None:
    out = running.ctl("status", check=True).stdout
    assert re.search(r"pid \d+, up \d+[smhd], config ", out) and "up since" not in out
    r = subprocess.run([str(BIN / "updaterd"), "--config", str(running.host.config),
                        "check-config"], capture_output=True, text=True)
    assert r.stdout.strip().endswith(": OK (1 app)")


def test_a_user_the_socket_keeps_out_is_told_why(host: Host, nginx: Nginx, served_feed: Feed,
                                                 daemon: Daemon, public_dir: Path) -> None:
    served_feed.release("1.0.0")
    host.follow(nginx, served_feed)
    daemon.socket = host.open_socket_in(public_dir)
    host.config.write_text(host.config.read_text().replace('socket_mode = "0666"',
                                                           'socket_mode = "0660"'))
    daemon.start()
    # The checkout (and its venv) may be closed to other users (a root home, `mktemp -d`):
    # nobody runs updaterctl's own code from a copy it can read, with the system's Python
    # (`status` needs nothing but the standard library).
    ctl = public_dir / "ctl"
    shutil.copytree(Path(updaterctl.__file__).parent, ctl / "updaterctl")
    run_ctl = f"import sys; sys.path.insert(0, {str(ctl)!r}); from updaterctl.cli import main; " \
              "sys.exit(main())"
    r = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                        "/usr/bin/python3", "-c", run_ctl, "--socket", str(daemon.socket),
                        "status"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 4, "not permitted, not unreachable"
    assert "permission denied; the socket is mode 0660, group " in r.stderr, r.stderr
    assert "join group" in r.stderr and "or run as root" in r.stderr


def test_reload_applies_a_new_socket_mode(running: Daemon) -> None:
    import stat as stat_mod
    assert stat_mod.S_IMODE(running.socket.stat().st_mode) == 0o660
    config = running.host.config
    config.write_text(config.read_text().replace("[daemon]\n", '[daemon]\nsocket_mode = "0600"\n'))
    running.ctl("reload", check=True)
    assert stat_mod.S_IMODE(running.socket.stat().st_mode) == 0o600


def test_json_output_matches_the_published_schema(running: Daemon) -> None:
    import msgspec

    from updaterctl.protocol import CLI_RESULTS, JSON_SCHEMA_VERSION
    schema = json.loads(running.ctl("--json-schema", check=True).stdout)
    assert schema["schema_version"] == JSON_SCHEMA_VERSION
    for argv, shape in ((["status"], "status"), (["check"], "check"),
                        (["check", "hello"], "check"), (["list-backups", "hello"],
                                                        "list-backups"),
                        (["history", "hello"], "history"), (["metrics"], "metrics")):
        assert shape in schema["commands"]
        out = running.ctl("--json", *argv, check=True).stdout
        msgspec.json.decode(out, type=CLI_RESULTS[shape])  # raises when the shape differs
    metrics = json.loads(running.ctl("--json", "metrics", check=True).stdout)
    assert {"name": "updaterd_consecutive_failures", "labels": {"app": "hello"},
            "value": 0.0} in metrics
    r = running.ctl("--json", "rollback", "hello")  # nothing to go back to: refused
    assert r.returncode == 1
    error = msgspec.json.decode(r.stdout, type=CLI_RESULTS["error"])
    assert error.code == 4 and "no previous version" in error.message


def _complete(daemon: Daemon, words: list[str]) -> list[str]:
    """What bash completion offers for the last word of `updaterctl WORDS...`."""
    completion = Path(__file__).resolve().parent.parent / "contrib/completion/updaterctl.bash"
    line = " ".join(["updaterctl", "--socket", str(daemon.socket), *words])
    script = (f"source {completion}; COMP_WORDS=({line}); "
              f"COMP_CWORD=$((${{#COMP_WORDS[@]}} - 1)); _updaterctl; "
              'printf "%s\\n" "${COMPREPLY[@]}"')
    if words[-1] == "":
        script = script.replace(f"COMP_WORDS=({line})", f"COMP_WORDS=({line} '')")
    r = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=30,
                       env=dict(os.environ, PATH=f"{BIN}:{os.environ['PATH']}"))
    return [w for w in r.stdout.split() if w]


def test_completion_offers_versions_where_a_version_goes(running: Daemon,
                                                         served_feed: Feed) -> None:
    served_feed.release("1.1.0")
    running.ctl("update", "hello", check=True)
    served_feed.release("1.2.0")
    running.ctl("check", "hello", check=True)
    assert _complete(running, ["skip", "hello", ""]) == ["1.2.0"]
    running.ctl("skip", "hello", "1.2.0", check=True)
    assert _complete(running, ["unskip", "hello", ""]) == ["1.2.0"]
    assert sorted(_complete(running, ["rollback", "hello", "--to", ""])) == ["1.0.0", "1.1.0"]
    assert sorted(_complete(running, ["rollback", "hello", "--"])) == ["--help", "--to",
                                                                    "--with-data"]
    assert "hello" in _complete(running, ["skip", ""]), "the app comes first"


# -- progress as a person reads it ----------------------------------------------------------------

def test_the_meter_smooths_the_rate_and_says_eta_in_minutes() -> None:
    from updaterctl.commands import Meter, clock
    from updaterctl.protocol import Event
    assert (clock(991), clock(45), clock(7500)) == ("16m31s", "45s", "2h05m")
    m = Meter()

    def at(t: float, done: int) -> str:
        ev = Event(app="a", kind="progress", phase="downloading", version="1.1.0", done=done,
                   total=100 << 20)
        return m.line(ev, now=t)

    first = at(0.0, 10 << 20)  # a resumed partial: no rate from one sample
    assert "10%" in first and "/s" not in first
    for t in range(1, 12):
        line = at(float(t), (10 << 20) + t * (1 << 20))
    assert "1.0 MiB/s" in line and "1m19s left" in line, line  # 79 MiB at 1 MiB/s


def test_a_check_of_a_server_that_is_down_says_it_is_retrying(
        host: Host, feed: Feed, daemon: Daemon) -> None:
    host.configure(source="manifest", url="http://127.0.0.1:9/feed/manifest.json",
                   public_keys=[feed.pub], allow_insecure=True, check_interval="1h",
                   jitter="0s", limits={"backoff_base": "1s", "backoff_cap": "1s",
                                        "retries": 2})
    daemon.start()
    wait_phase(daemon, "failed")  # the scheduler's first check gave up
    w = Watch(daemon)
    try:
        r = daemon.ctl("check", "hello")
        assert r.returncode == 1 and "gave up after 3 attempts" in r.stderr

        def retrying() -> bool:
            return any(e["message"].startswith("retrying in ") and
                       "(attempt 2 of 3): " in e["message"] and "Connect" in e["message"]
                       for e in w.events() if e["kind"] == "phase")
        daemon.wait_for(retrying, timeout=15, what="a retrying event")
    finally:
        w.close()


def test_watch_shows_percent_rate_and_time_left(downloading: Daemon) -> None:
    proc = subprocess.Popen([str(BIN / "updaterctl"), "--socket", str(downloading.socket),
                             "watch", "hello"], stdout=subprocess.PIPE, text=True)
    time.sleep(3)
    proc.terminate()
    out, _ = proc.communicate(timeout=10)
    progress = [line for line in out.splitlines() if "downloading 1.1.0" in line]
    assert progress and re.search(r"\d+%", progress[-1])
    assert re.search(r"KiB/s  \d+(m\d\ds|s) left", progress[-1]), progress[-1]
