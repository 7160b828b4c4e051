"""The shipped units under systemd as PID 1 (real-host issue, section 2): a stock
Debian 12 container booted with systemd-nspawn, updaterd's package installed exactly as the
README's "Install as a service" says, on the system's own python3, then driven as an operator
would: sysusers and tmpfiles, Type=notify, STATUS=, the watchdog, the hardening, reload, stop
during a download or a health check, the admin group, the timer and the journal's priorities.

Run by `make test-systemd` (UPDATERD_TEST_SYSTEMD=1), not by `make test`: it needs root,
systemd-nspawn and a debootstrapped root file system (scripts/nspawn-rootfs.sh).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.systemd.container import (
    Container,
    booted,
    configure,
    feed_into,
    install_package,
    journal,
    readme_install_block,
    wait_until,
)
from updaterd.release.publish import keygen, publish

pytestmark = pytest.mark.skipif(os.environ.get("UPDATERD_TEST_SYSTEMD") != "1",
                                reason="`make test-systemd` runs these (systemd-nspawn)")


@pytest.fixture(scope="module")
def box(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Container]:
    with booted(tmp_path_factory.mktemp("nspawn")) as c:
        yield c


# -- the README's steps ---------------------------------------------------------------------------

def test_install_as_the_readme_says(box: Container, deb: Path) -> None:
    """`make deb` here, `apt install ./dist/updaterd_*.deb` in a stock Debian 12 with its own
    python3 (3.11.2, no tarfile.data_filter: B54), the config edited, the last line as
    written; a tar release installs."""
    steps = readme_install_block()
    install_package(box, deb)
    assert box.sh("systemctl is-active updaterd").stdout.strip() == "active"
    assert box.sh("systemctl is-enabled updaterd").stdout.strip() == "enabled"
    assert "0 apps" in box.sh("systemctl show updaterd -p StatusText --value").stdout
    assert box.sh("readlink -f /usr/lib/updaterd/bin/python3").stdout.strip() == \
        "/usr/bin/python3.11"
    assert box.sh("/usr/lib/updaterd/bin/python3 -c 'import tarfile; "
                  "print(hasattr(tarfile, \"data_filter\"))'").stdout.strip() == "False"
    pub = feed_into(box.root, [("1.0.0", True)])
    configure(box, pub)  # what the editor line stands for
    last = steps[-1]
    assert last.startswith("updaterd check-config"), steps
    box.sh(f"set -e\n{last}", timeout=120)
    # sysusers made the group, tmpfiles the folders, with the owners and modes they list
    assert box.sh("getent group updaterd").returncode == 0
    stats = box.sh("stat -c '%n %a %U:%G' /run/updaterd /run/updaterd/updaterd.sock "
                   "/var/cache/updaterd /var/lib/updaterd /etc/updaterd").stdout
    # RuntimeDirectory= makes /run/updaterd root:root at each start (tmpfiles' group is for
    # hosts without it); the socket's own mode and group decide who may connect
    assert "/run/updaterd 755 root:root" in stats
    assert "/run/updaterd/updaterd.sock 660 root:updaterd" in stats
    assert "/var/cache/updaterd 700 root:root" in stats
    assert "/var/lib/updaterd 755 root:root" in stats
    wait_until(box, "[ -L /opt/hello/current ]", "the first install")
    assert box.sh("/opt/hello/bin/hello").stdout.strip() == "hello 1.0.0"


def test_type_notify_status_text_and_a_fed_watchdog(box: Container) -> None:
    show = box.sh("systemctl show updaterd -p Type -p StatusText -p WatchdogUSec "
                  "-p WatchdogTimestampMonotonic").stdout
    assert "Type=notify" in show and "StatusText=idle, 1 apps" in show, show
    first = re.search(r"WatchdogTimestampMonotonic=(\d+)", show)
    assert first and int(first.group(1)) > 0, "the watchdog was pinged"


def test_a_daemon_that_stops_feeding_the_watchdog_is_restarted(box: Container) -> None:
    before = box.sh("systemctl show updaterd -p MainPID --value").stdout.strip()
    box.sh("mkdir -p /run/systemd/system/updaterd.service.d && printf '[Service]\\n"
           "WatchdogSec=2s\\nTimeoutStopSec=5s\\n"
           "Environment=UPDATERD_FAILPOINTS=watchdog.ping=hang\\n' "
           "> /run/systemd/system/updaterd.service.d/stop.conf && systemctl daemon-reload "
           "&& systemctl restart updaterd")
    box.sh("for i in $(seq 100); do n=$(systemctl show updaterd -p NRestarts --value); "
           "[ \"$n\" -ge 1 ] && exit 0; sleep 0.2; done; exit 1", timeout=60)
    assert "Watchdog timeout" in journal(box, "updaterd") or \
        "watchdog" in journal(box, "updaterd").lower()
    # Stopped while the drop-in's 5 s stop timeout still holds: the hung daemon cannot act on
    # SIGTERM (its event loop is blocked), and the unit's own TimeoutStopSec is 5 minutes.
    box.sh("systemctl stop updaterd && rm /run/systemd/system/updaterd.service.d/stop.conf "
           "&& systemctl daemon-reload && systemctl start updaterd")
    after = box.sh("systemctl show updaterd -p MainPID --value").stdout.strip()
    assert after != before and box.sh("systemctl is-active updaterd").stdout.strip() == "active"


def test_reload_rereads_the_configuration(box: Container) -> None:
    pub = feed_into(box.root, [])
    configure(box, pub, second={"source": "directory", "path": "/srv/feed",
                                "public_keys": [pub], "prefix": "/opt/second",
                                "health_check": ["bin/hello"], "auto_update": False})
    box.sh("systemctl reload updaterd")
    out = box.sh("updaterctl status").stdout
    assert "second" in out
    assert "configuration reloaded" in journal(box, "updaterd")


def test_a_prefix_outside_read_write_paths_names_the_directive(box: Container) -> None:
    pub = feed_into(box.root, [("1.0.0", True)], app="outside")
    configure(box, pub, outside={"source": "directory", "path": "/srv/feed-outside",
                                 "public_keys": [pub], "prefix": "/srv/outside",
                                 "health_check": ["bin/hello"], "auto_update": False},
              tool={"source": "directory", "path": "/srv/feed-outside", "public_keys": [pub],
                    "install": "inplace", "target": "/usr/local/bin/tool",
                    "auto_update": False})
    # check-config runs outside the sandbox, and says it before the first update
    r = box.sh("updaterd check-config", check=False)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "apps.outside.prefix /srv/outside: updaterd.service cannot write it " \
        "(ProtectSystem=strict; ReadWritePaths= lists /opt)" in r.stderr, r.stderr
    assert "apps.tool.target's folder /usr/local/bin: updaterd.service cannot write it" \
        in r.stderr and "ReadWritePaths=/usr/local/bin" in r.stderr, r.stderr
    box.sh("systemctl reload updaterd")
    r = box.sh("updaterctl update outside", check=False)
    assert r.returncode == 1
    assert "ReadWritePaths=" in r.stderr, r.stderr
    assert not (box.root / "srv" / "outside" / "releases").exists()


def test_the_admin_group_drives_updaterctl_and_others_are_told_why(box: Container) -> None:
    box.sh("useradd -M -G updaterd alice && useradd -M bob")
    assert box.sh("updaterctl pause hello", user="alice").returncode == 0
    assert box.sh("updaterctl resume hello", user="alice").returncode == 0
    r = box.sh("updaterctl status", user="bob", check=False)
    assert r.returncode == 4
    assert "permission denied; the socket is mode 0660, group updaterd: join group " \
        "updaterd" in r.stderr, r.stderr


def test_stop_during_a_download_ends_cleanly(box: Container) -> None:
    """A feed over HTTP (the container shares the host's loopback), slowed by max_rate."""
    from tests.servers.nginx import free_port
    pub = feed_into(box.root, [("1.1.0", True)], big=4 << 20)
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "http.server", "--bind", "127.0.0.1",
                               str(port), "--directory", str(box.root / "srv" / "feed")],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        configure(box, pub)
        path = box.root / "etc" / "updaterd" / "updaterd.toml"
        path.write_text(path.read_text().replace(
            'source = "directory"\npath = "/srv/feed"',
            f'source = "manifest"\nurl = "http://127.0.0.1:{port}/manifest.json"\n'
            'allow_insecure = true\nmax_rate = "256KiB/s"', 1))
        box.sh("systemctl reload updaterd && updaterctl update hello --no-wait")
        wait_until(box, "updaterctl status | grep -q downloading", "the slow download")
        t0 = time.monotonic()
        box.sh("systemctl stop updaterd", timeout=60)
        assert time.monotonic() - t0 < 15
    finally:
        server.terminate()
    assert box.sh("systemctl is-active updaterd", check=False).stdout.strip() == "inactive"
    assert box.sh("systemctl show updaterd -p Result --value").stdout.strip() == "success"
    assert not list((box.root / "opt" / "hello" / ".staging").iterdir())
    assert (box.root / "opt" / "hello" / "current").resolve().name == "1.0.0"
    assert "stopping (signal 15)" in journal(box, "updaterd")


def test_the_timer_unit_runs_an_update_and_the_journal_has_priorities(box: Container) -> None:
    pub = feed_into(box.root, [("1.2.0", True)])
    configure(box, pub)
    box.sh("systemctl start updaterd-once.service", timeout=120)
    assert (box.root / "opt" / "hello" / "current").resolve().name == "1.2.0"
    feed_into(box.root, [("1.3.0", False)])
    box.sh("systemctl start updaterd-once.service", check=False, timeout=120)
    assert (box.root / "opt" / "hello" / "current").resolve().name == "1.2.0"
    box.sh("systemctl enable --now updaterd-once.timer")  # what the README says for a timer
    assert "updaterd-once.timer" in box.sh("systemctl list-timers --no-pager").stdout
    errors = journal(box, "updaterd-once", "err")
    assert "1.3.0" in errors and "health check" in errors, errors
    infos_only = journal(box, "updaterd-once", "info")
    assert "installed 1.2.0" in infos_only
    assert "installed 1.2.0" not in errors


def test_h157_a_restart_during_a_health_check_keeps_a_good_release(box: Container) -> None:
    """`systemctl restart updaterd` while an 8 s health check runs: the check is not killed
    with the daemon (KillMode=mixed), the release is installed, nothing is blocked."""
    pub = feed_into(box.root, [("1.4.0", True)])
    configure(box, pub)
    path = box.root / "etc" / "updaterd" / "updaterd.toml"
    path.write_text(path.read_text().replace('health_check = ["bin/hello"]',
                                             'health_check = ["sh", "-c", "sleep 8; bin/hello"]'
                                             '\nhealth_timeout = "60s"', 1))
    # (the stop of the test before cut an update: the start may already resume it, busy)
    box.sh("systemctl restart updaterd && { updaterctl update hello --no-wait || true; }")
    wait_until(box, "updaterctl status | grep -q health", "the health check of 1.4.0")
    box.sh("systemctl restart updaterd", timeout=120)
    wait_until(box, "updaterctl status hello | grep -q '1.4.0.*idle'", "1.4.0 installed", 60)
    assert (box.root / "opt" / "hello" / "current").resolve().name == "1.4.0"
    status = json.loads(box.sh("updaterctl --json status hello").stdout)
    assert "1.4.0" not in status["apps"][0]["blocked"], status
    assert "rolling back" not in journal(box, "updaterd")
    box.sh("systemctl stop updaterd")  # the timer's test next takes the lock


def test_the_daemons_journal_files_failures_as_errors_and_refusals_change_nothing(
        box: Container) -> None:
    """Issue 30: a release rolled back after its health check is found by `journalctl -p err`
    (it was filed at info); a mistyped request is refused and changes no state (H158)."""
    pub = feed_into(box.root, [("1.5.0", False)])
    configure(box, pub)
    box.sh("systemctl start updaterd")
    wait_until(box, "updaterctl status hello >/dev/null 2>&1", "the daemon's socket")
    box.sh("updaterctl update hello", check=False)  # (or the first scheduled check does it)
    wait_until(box, "journalctl -u updaterd -p err -o cat | grep -q 'rolled back'",
               "the rollback of 1.5.0 in the journal's errors", 60)
    errors = journal(box, "updaterd", "err")
    assert "1.5.0" in errors and "rolled back" in errors, errors
    before = json.loads(box.sh("updaterctl --json status hello").stdout)["apps"][0]
    r = box.sh("updaterctl rollback hello --to 9.9.9", check=False)
    assert r.returncode != 0 and "9.9.9" in r.stderr
    after = json.loads(box.sh("updaterctl --json status hello").stdout)["apps"][0]
    assert (after["phase"], after.get("last_error"), after.get("next_check")) == \
        (before["phase"], before.get("last_error"), before.get("next_check"))
    assert "9.9.9" not in journal(box, "updaterd", "warning")
    box.sh("systemctl stop updaterd")


def test_security_exposure_is_reported(box: Container) -> None:
    r = box.sh("systemd-analyze security updaterd --no-pager", check=False)
    line = next((x for x in r.stdout.splitlines() if "Overall exposure level" in x), "")
    print(f"\nsystemd-analyze security updaterd: {line.strip()}")
    assert line
    shutil.copy(box.log, box.log.with_suffix(".kept"))


# -- updaterd keeping itself up to date, through the launcher, under Restart=on-failure -----------

def test_self_update_through_the_launcher_under_restart_on_failure(box: Container) -> None:
    """The README's self-update steps: `self-install` from the service's venv, the drop-in
    (ExecStart=/opt/updaterd/launcher, Restart=on-failure). A good 0.2.0 takes over with the
    same pid; a 0.3.0 that dies as it starts is abandoned after 3 starts and blocked."""
    from tests.helpers import self_build
    work = box.root / "srv" / "self"
    work.mkdir(parents=True, exist_ok=True)
    box.sh("systemctl stop updaterd-once.timer; updaterd self-install "
           "--prefix /opt/updaterd && install -D -m 0644 "
           "/mnt/host/contrib/systemd/updaterd.service.d/self-update.conf "
           "-t /etc/systemd/system/updaterd.service.d/")
    pub_file, key = keygen(str(work / "self"))
    pub = pub_file.read_text().splitlines()[1]
    for version, patch in (("0.2.0", None), ("0.3.0", {"lib/updaterd/service/service.py": (
            "    daemon = Daemon(config, str(Path(config_path).absolute()))\n",
            "    raise SystemExit(70)\n")})):
        publish(feed_dir=box.root / "srv" / "feed-updaterd", key_path=key, app="updaterd",
                version=version, artifacts=[self_build(work / "dist", version, patch)])
    configure(box, feed_into(box.root, []), updaterd={
        "source": "directory", "path": "/srv/feed-updaterd", "public_keys": [pub],
        "prefix": "/opt/updaterd", "self": True, "auto_update": False,
        "health_check": ["bin/updaterctl", "status"], "health_timeout": "30s"})
    box.sh("systemctl daemon-reload && systemctl restart updaterd")
    pid = box.sh("systemctl show updaterd -p MainPID --value").stdout.strip()
    r = box.sh("updaterctl update updaterd --version 0.2.0", check=False, timeout=180)
    assert r.returncode == 0, (r.stdout, r.stderr, journal(box, "updaterd"))
    assert "the new updaterd passed its health check" in r.stdout
    assert box.sh("systemctl show updaterd -p MainPID --value").stdout.strip() == pid
    assert "updaterd 0.2.0" in box.sh("updaterctl status").stdout
    r = box.sh("updaterctl update updaterd --version 0.3.0", check=False, timeout=300)
    assert r.returncode == 1 and "updaterd 0.3.0 was rolled back and blocked" in r.stderr, \
        (r.stdout, r.stderr, journal(box, "updaterd"))
    wait_until(box, "updaterctl status | grep -q 'updaterd 0.2.0'", "0.2.0 back", 60)
    assert os.readlink(box.root / "opt" / "updaterd" / "current") == "releases/0.2.0"
    assert box.sh("systemctl is-active updaterd").stdout.strip() == "active"


def test_the_publishers_timers_keep_a_feed_and_its_rollout_json_fresh(box: Container) -> None:
    """Issue 38: `feed resign` and `rollout resign` had no units; the package ships templated
    ones whose instance is the publishing user, run here under a real PID 1 as that user."""
    box.sh("id publisher >/dev/null 2>&1 || useradd -m publisher")
    setup = r"""set -e
cd ~ && rm -rf x pub && mkdir -p x/hello-1.0.0/bin pub
printf '#!/bin/sh\necho hello\n' > x/hello-1.0.0/bin/hello && chmod +x x/hello-1.0.0/bin/hello
tar czf hello-1.0.0-linux-x86_64.tar.gz -C x hello-1.0.0
updaterd keygen --out pub/release --force >/dev/null
updaterd keygen --out pub/rollout --force >/dev/null
updaterd publish --feed ~/feed --key pub/release.key --app hello --version 1.0.0 \
    --rollout-key pub/rollout.pub hello-1.0.0-linux-x86_64.tar.gz >/dev/null
updaterd rollout halt 1.0.0 --feed ~/feed --key pub/rollout.key >/dev/null
"""
    box.sh(setup, user="publisher")
    box.sh("install -d /etc/updaterd/publish && printf 'FEED=/home/publisher/feed\\n"
           "KEY=/home/publisher/pub/release.key\\nEXPIRES=30d\\n"
           "ROLLOUT_KEY=/home/publisher/pub/rollout.key\\nROLLOUT_EXPIRES=1d\\n' "
           "> /etc/updaterd/publish/publisher.conf")

    def serials() -> tuple[int, int]:
        out = box.sh("cd /home/publisher/feed && python3 -c 'import json; print(json.load("
                     "open(\"manifest.json\"))[\"serial\"], json.load(open(\"rollout.json\"))"
                     "[\"serial\"])'").stdout.split()
        return int(out[0]), int(out[1])

    before = serials()
    for unit in ("updaterd-feed-resign@publisher", "updaterd-rollout-resign@publisher"):
        box.sh(f"systemctl start {unit}.service")
        assert box.sh(f"systemctl show -p Result --value {unit}.service").stdout.strip() \
            == "success", journal(box, unit)
        box.sh(f"systemctl enable --now {unit}.timer")
    assert serials() == (before[0] + 1, before[1] + 1)
    timers = box.sh("systemctl list-timers --all --no-pager").stdout
    assert "updaterd-feed-resign@publisher.timer" in timers
    assert "updaterd-rollout-resign@publisher.timer" in timers
    owners = box.sh("stat -c %U /home/publisher/feed/manifest.json "
                    "/home/publisher/feed/rollout.json.minisig").stdout.split()
    assert owners == ["publisher", "publisher"]  # signed as the publisher, not as root
