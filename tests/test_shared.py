"""Row 159: what an app writes at run time survives updates, rollbacks and retention. Its
`shared` paths live in PREFIX/shared/ and each release links to them (the real daemon,
updaterctl and `updaterd verify`)."""

from __future__ import annotations

import os
from pathlib import Path

from tests.conftest import Daemon, Host, Nginx
from tests.helpers import Feed, make_tar, release_files, run_updaterd

# The app, at each start: appends its version to data/runs, writes its config if missing.
APP = ["sh", "-c", "mkdir -p data etc && echo $UPDATERD_VERSION >> data/runs && "
       "{ test -e etc/notes.conf || echo written-by-the-app > etc/notes.conf; }"]


def ship(feed: Feed, version: str, conf: bool = True) -> None:
    files = release_files(version)
    if conf:
        files["etc/notes.conf"] = (f"shipped by {version}\n".encode(), 0o644)
    art = feed.work / f"hello-{version}-linux-x86_64.tar.gz"
    make_tar(art, files, top=f"hello-{version}")
    feed.publish(version, [art])


def test_h159_app_data_survives_updates_rollbacks_and_retention(
        host: Host, nginx: Nginx, served_feed: Feed, daemon: Daemon) -> None:
    ship(served_feed, "1.0.0")
    host.follow(nginx, served_feed, shared=["data", "etc/notes.conf"], health_check=APP,
                retain=1)
    daemon.start()
    daemon.wait_for(lambda: daemon.app()["current"] == "1.0.0", what="1.0.0")
    shared = host.prefix / "shared"
    assert (shared / "etc" / "notes.conf").read_text() == "shipped by 1.0.0\n"  # seeded
    assert (shared / "data" / "runs").read_text() == "1.0.0\n"
    release = host.prefix / "releases" / "1.0.0"
    assert os.readlink(release / "data") == "../../shared/data"
    assert os.readlink(release / "etc" / "notes.conf") == "../../../shared/etc/notes.conf"
    (host.prefix / "current" / "etc" / "notes.conf").write_text("edited by the operator\n")

    for version in ("1.1.0", "1.2.0"):
        ship(served_feed, version)
        daemon.ctl("update", "hello", check=True)
    assert (shared / "etc" / "notes.conf").read_text() == "edited by the operator\n"
    assert (shared / "data" / "runs").read_text() == "1.0.0\n1.1.0\n1.2.0\n"
    assert sorted(p.name for p in (host.prefix / "releases").iterdir()) == ["1.1.0", "1.2.0"]

    r = run_updaterd("--config", host.config, "verify")
    assert r.returncode == 0 and "differences" not in r.stdout, r.stdout + r.stderr
    daemon.ctl("rollback", "hello", check=True)
    assert host.current() == "1.1.0"
    assert (host.prefix / "current" / "data" / "runs").read_text().startswith(
        "1.0.0\n1.1.0\n1.2.0\n")
    assert (host.prefix / "current" / "etc" / "notes.conf").read_text() == \
        "edited by the operator\n"


def test_h159_data_written_before_the_path_was_shared_is_kept(
        host: Host, nginx: Nginx, served_feed: Feed, daemon: Daemon) -> None:
    """Sharing a path later copies what the running release holds (the app wrote it there);
    a path no release ships and nothing wrote starts as an empty folder."""
    ship(served_feed, "1.0.0", conf=False)
    host.follow(nginx, served_feed, health_check=APP)
    daemon.start()
    daemon.wait_for(lambda: daemon.app()["current"] == "1.0.0", what="1.0.0")
    assert (host.prefix / "releases" / "1.0.0" / "data" / "runs").read_text() == "1.0.0\n"
    for path in ((host.prefix / "releases" / "1.0.0" / "data"),
                 (host.prefix / "releases" / "1.0.0" / "data" / "runs")):
        os.chown(path, 65534, 65534)  # the app runs as its own user: its files stay its own
    host.follow(nginx, served_feed, health_check=APP, shared=["data", "cache", "etc/notes.conf"])
    daemon.ctl("reload", check=True)
    ship(served_feed, "1.1.0", conf=False)
    daemon.ctl("update", "hello", check=True)
    shared = host.prefix / "shared"
    assert (shared / "data" / "runs").read_text() == "1.0.0\n1.1.0\n"
    copied = (shared / "data", shared / "data" / "runs")
    assert [(p.stat().st_uid, p.stat().st_gid) for p in copied] == [(65534, 65534)] * 2
    assert (shared / "etc" / "notes.conf").read_text() == "written-by-the-app\n"
    assert (shared / "cache").is_dir() and not any((shared / "cache").iterdir())


def test_h159_a_link_planted_in_shared_is_never_written_through(
        host: Host, nginx: Nginx, served_feed: Feed, daemon: Daemon, tmp_path: Path) -> None:
    """The app may own what is in shared/: a folder of it replaced by a link is refused, and
    nothing is moved or created where the link points."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (host.prefix / "shared").mkdir(parents=True)
    (host.prefix / "shared" / "etc").symlink_to(elsewhere)
    ship(served_feed, "1.0.0")
    host.follow(nginx, served_feed, shared=["etc/notes.conf"])
    daemon.start()
    daemon.wait_for(lambda: "not a folder" in (daemon.app().get("last_error") or ""),
                    what="the update refused at the planted link")
    assert list(elsewhere.iterdir()) == [] and host.current() is None


def test_check_config_refuses_shared_paths_it_cannot_keep(host: Host) -> None:
    for shared, why in ((["/var/data"], "relative path"), (["../data"], "relative path"),
                        (["data", "data/x"], "inside 'data'"), (["a", "a"], "named twice")):
        host.configure(source="directory", path="/srv/feed", shared=shared)
        r = run_updaterd("--config", host.config, "check-config")
        assert r.returncode != 0 and "shared" in r.stderr and why in r.stderr, (shared, r.stderr)
    host.configure(source="directory", path="/srv/feed", install="inplace",
                   target="/usr/local/bin/hello", shared=["data"])
    r = run_updaterd("--config", host.config, "check-config")
    assert r.returncode != 0 and "in-place" in r.stderr, r.stderr
