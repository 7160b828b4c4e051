"""release/feedfolder.py at its edges: its caps to the byte, a missing folder or file, the
owner check as another user than root, an open refused for another reason than a link, and no
descriptor left behind by a refusal. The attacks (a link to the secret key) are J171 in
tests/security/test_publisher_rows.py."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from tests.test_fdtree import APP_UID, as_app_user_said, reachable  # noqa: F401 (a fixture)
from updaterd.errors import FeedError
from updaterd.release import feedfolder


def sized(folder: Path, name: str, size: int) -> None:
    with open(folder / name, "wb") as f:
        f.truncate(size)


def test_the_caps_hold_to_the_byte(tmp_path: Path) -> None:
    assert (feedfolder.SMALL_CAP, feedfolder.MANIFEST_CAP) == (65536, 64 << 20)
    for cap, name in ((65536, "small"), (64 << 20, "manifest")):
        sized(tmp_path, name, cap)
        assert len(feedfolder.read(tmp_path, name, cap) or b"") == cap
        sized(tmp_path, name, cap + 1)
        with pytest.raises(FeedError, match=f"{name} is larger than {cap} bytes"):
            feedfolder.read(tmp_path, name, cap)
    sized(tmp_path, "empty", 0)
    assert feedfolder.read(tmp_path, "empty", 10) == b""


def test_a_missing_folder_or_file_is_none(tmp_path: Path) -> None:
    assert feedfolder.read(tmp_path / "no-feed-yet", "manifest.json", 10) is None
    assert feedfolder.read(tmp_path, "manifest.json", 10) is None
    assert feedfolder.signature_blocks(tmp_path, "manifest.json.minisig") == b""


def test_a_file_of_another_user_is_refused_whoever_publishes(reachable: Path) -> None:  # noqa: F811
    """As the app's user (uid 65534): a root-owned file in its own folder is refused too (a
    lower uid than the publisher's), and its own file is read."""
    os.chown(reachable, APP_UID, APP_UID)
    (reachable / "roots").write_text("root's")
    (reachable / "mine").write_text("mine")
    os.chown(reachable / "mine", APP_UID, APP_UID)
    code, said = as_app_user_said(lambda: feedfolder.read(reachable, "roots", 100))
    assert code == 2 and f"{reachable / 'roots'} belongs to uid 0, not to the publisher " \
                          f"(uid {APP_UID})" in said, said
    code, said = as_app_user_said(lambda: feedfolder.read(reachable, "mine", 100))
    assert code == 0, said


def test_an_open_refused_for_another_reason_than_a_link_says_that_reason(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "manifest.json").write_text("{}")
    real = os.open

    def refuse(path: str, flags: int, mode: int = 0o777, *, dir_fd: int | None = None) -> int:
        if path == "manifest.json":
            raise OSError(errno.EOPNOTSUPP, "Operation not supported", path)
        return real(path, flags, mode, dir_fd=dir_fd)

    monkeypatch.setattr(os, "open", refuse)
    with pytest.raises(FeedError) as e:
        feedfolder.read(tmp_path, "manifest.json", 100)
    assert str(e.value) == f"{tmp_path / 'manifest.json'}: Operation not supported"
    monkeypatch.undo()
    os.mkfifo(tmp_path / "pipe")
    with pytest.raises(FeedError, match="pipe is not a regular file"):
        feedfolder.read(tmp_path, "pipe", 100)


def test_a_refusal_leaves_no_descriptor_open(tmp_path: Path) -> None:
    feed = tmp_path / "feed"
    feed.mkdir()
    (feed / "manifest.json").write_text("{}")
    os.chown(feed, APP_UID, APP_UID)
    before = len(os.listdir("/proc/self/fd"))
    for _ in range(5):
        with pytest.raises(FeedError, match="belongs to uid 65534"):
            feedfolder.read(feed, "manifest.json", 100)
    os.chown(feed, 0, 0)
    os.chown(feed / "manifest.json", APP_UID, APP_UID)
    for _ in range(5):
        with pytest.raises(FeedError, match="belongs to uid 65534"):
            feedfolder.read(feed, "manifest.json", 100)
    assert len(os.listdir("/proc/self/fd")) == before
    os.symlink("/etc", tmp_path / "link")
    with pytest.raises(FeedError, match="is a symbolic link or not a folder"):
        feedfolder.read(tmp_path / "link", "passwd", 100)


def test_a_socket_in_the_feed_folder_is_named_for_what_opening_it_says(tmp_path: Path) -> None:
    import socket

    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(tmp_path / "manifest.json"))
        with pytest.raises(FeedError) as e:
            feedfolder.read(tmp_path, "manifest.json", 100)
    assert str(e.value) == f"{tmp_path / 'manifest.json'}: No such device or address"
