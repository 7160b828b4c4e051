"""Row 159: what an app writes at run time survives updates, rollbacks and retention. Its
`shared` paths live in PREFIX/shared/ and each release links to them (the real daemon,
updaterctl and `updaterd verify`; issue 30)."""

from __future__ import annotations

import os
from pathlib import Path

from tests.conftest import Daemon, Host, Nginx
from tests.helpers import Feed, make_tar, release_files, run_updaterd
from updaterd.install.layout import Layout

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


# -- seeding at its edges, in this process through the real Layout --------------------------


def a_prefix(tmp_path: Path, shared: tuple[str, ...], running: dict[str, str | None]) -> Layout:
    """A prefix running 1.0.0 whose release holds `running` (path -> text, or None for a
    folder); a value starting with '->' is a link to the rest."""
    layout = Layout(tmp_path / "prefix", shared=shared)
    layout.preflight()
    root = layout.release("1.0.0")
    root.mkdir()
    for path, text in running.items():
        p = root / path
        p.parent.mkdir(parents=True, exist_ok=True)
        if text is None:
            p.mkdir()
        elif text.startswith("->"):
            p.symlink_to(text[2:])
        else:
            p.write_text(text)
    layout.switch("1.0.0", "")
    return layout


def stage(layout: Layout, version: str, files: dict[str, str]) -> dict[str, str]:
    """Stage `version` shipping `files` (a value starting with '->' is a link); returns the
    recorded tree's entries."""

    def make(staging: Path) -> Path:
        root = staging / "app"
        root.mkdir()
        for path, text in files.items():
            p = root / path
            p.parent.mkdir(parents=True, exist_ok=True)
            if text.startswith("->"):
                p.symlink_to(text[2:])
            else:
                p.write_text(text)
        return root

    staged = layout.stage_with(make, version)
    assert staged.tree is not None
    return staged.tree.entries


def test_a_link_in_a_parent_folder_of_the_running_release_is_never_followed(
        tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "notes.conf").write_text("not the app's\n")
    layout = a_prefix(tmp_path, ("etc/notes.conf",), {"etc": f"->{elsewhere}"})
    stage(layout, "1.1.0", {"etc/notes.conf": "shipped by 1.1.0\n"})
    assert (layout.prefix / "shared" / "etc" / "notes.conf").read_text() == "shipped by 1.1.0\n"


def test_a_link_at_the_path_in_the_running_release_or_the_new_one_seeds_nothing(
        tmp_path: Path) -> None:
    layout = a_prefix(tmp_path, ("data",), {"data": "->/etc"})
    stage(layout, "1.1.0", {"data/x": "shipped\n"})  # the new release's own folder seeds it
    assert (layout.prefix / "shared" / "data" / "x").read_text() == "shipped\n"
    other = a_prefix(tmp_path / "b", ("cache",), {})
    stage(other, "1.1.0", {"cache": "->/etc", "bin/app": "x"})  # a link is never a seed
    seeded = other.prefix / "shared" / "cache"
    assert seeded.is_dir() and not seeded.is_symlink() and not any(seeded.iterdir())


def test_a_path_first_shipped_by_the_new_release_is_seeded_from_it_and_parents_recorded(
        tmp_path: Path) -> None:
    layout = a_prefix(tmp_path, ("etc/app/notes.conf",), {"bin/app": "1.0.0"})
    entries = stage(layout, "1.1.0", {"bin/app": "1.1.0"})
    assert entries["etc"] == "d:755" and entries["etc/app"] == "d:755"
    assert entries["etc/app/notes.conf"] == "l:../../../../shared/etc/app/notes.conf"
    assert (layout.prefix / "shared" / "etc" / "app" / "notes.conf").is_dir()
    entries = stage(layout, "1.2.0", {"etc/app/notes.conf": "shipped by 1.2.0\n"})
    assert "etc" not in entries or entries["etc"].startswith("d:")  # the release's own folder
    assert os.readlink(layout.release("1.2.0") / "etc" / "app" / "notes.conf") == \
        "../../../../shared/etc/app/notes.conf"
    assert (layout.prefix / "shared" / "etc" / "app" / "notes.conf").is_dir()  # kept


def test_a_fifo_at_the_path_in_the_running_release_is_never_opened(tmp_path: Path) -> None:
    layout = a_prefix(tmp_path, ("run",), {})
    os.mkfifo(layout.release("1.0.0") / "run")
    stage(layout, "1.1.0", {"bin/app": "x"})  # opening the FIFO would block here
    assert (layout.prefix / "shared" / "run").is_dir()
