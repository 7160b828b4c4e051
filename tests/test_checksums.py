"""Checksum files as `sha256sum` and `b3sum` write them, and the recorded BLAKE3 trees that
`updaterd verify` checks releases against (fast, in-process; `make mutate` runs these against
mutants of checksums.py and treehash.py)."""

from __future__ import annotations

import hashlib
import os
import stat
import subprocess
from pathlib import Path

import blake3
import pytest

from updaterd.errors import FeedError
from updaterd.trust import checksums, treehash

A, B = "a" * 64, "b" * 64


@pytest.mark.parametrize(("name", "algorithm"), [
    ("SHA256SUMS", "sha256"), ("checksums.txt", "sha256"), ("B3SUMS", "blake3"),
    ("tool.blake3", "blake3"), ("BLAKE3SUMS.txt", "blake3"), ("sums.b3", "blake3"),
    ("SHA512SUMS", "sha256")])
def test_the_algorithm_comes_from_the_file_name(name: str, algorithm: str) -> None:
    assert checksums.algorithm(name) == algorithm


def test_the_real_tools_output_is_read(tmp_path: Path) -> None:
    (tmp_path / "tool.tar.gz").write_bytes(b"payload")
    (tmp_path / "other").write_bytes(b"x")
    sha = subprocess.run(["sha256sum", "tool.tar.gz", "other"], cwd=tmp_path,
                         capture_output=True, text=True, check=True).stdout
    b3 = subprocess.run(["b3sum", "tool.tar.gz", "other"], cwd=tmp_path,
                        capture_output=True, text=True, check=True).stdout
    assert checksums.digest_for(sha, "SHA256SUMS", "tool.tar.gz") == \
        hashlib.sha256(b"payload").hexdigest()
    assert checksums.digest_for(b3, "B3SUMS", "tool.tar.gz") == \
        blake3.blake3(b"payload").hexdigest()


def test_binary_marker_comments_blank_lines_and_crlf() -> None:
    text = f"# made by hand\n\n   \n{B} *other\r\n{A.upper()} *tool.tar.gz\r\n"
    assert checksums.digest_for(text, "SHA256SUMS", "tool.tar.gz") == A
    assert checksums.digest_for(text, "SHA256SUMS", "other") == B


def test_only_the_exact_name_matches() -> None:
    text = f"{A}  tool.tar.gz.sig\n{B}  ./tool.tar.gz\n"
    with pytest.raises(FeedError, match=r"tool\.tar\.gz is not listed in SHA256SUMS"):
        checksums.digest_for(text, "SHA256SUMS", "tool.tar.gz")


def test_the_same_digest_twice_is_fine_two_digests_are_not() -> None:
    assert checksums.digest_for(f"{A}  t\n{A}  t\n", "S", "t") == A
    with pytest.raises(FeedError, match="t is listed in S with different digests"):
        checksums.digest_for(f"{A}  t\n{B}  t\n", "S", "t")


@pytest.mark.parametrize("line", [f"{A[:-1]}  t", f"{A}0  t", f"{A} t", f"{A}\tt",
                                  f"{'g' * 64}  t", f"{A}  ", "t"])
def test_a_malformed_line_is_named(line: str) -> None:
    with pytest.raises(FeedError, match=r"S: line 2 is not '<hex>  <name>'"):
        checksums.digest_for(f"{B}  other\n{line}\n", "S", "t")


def test_an_empty_file_lists_nothing() -> None:
    with pytest.raises(FeedError, match="is not listed"):
        checksums.digest_for("", "S", "t")


# -- treehash -------------------------------------------------------------------------------------

def release(root: Path) -> Path:
    (root / "bin").mkdir(parents=True)
    (root / "bin" / "tool").write_bytes(b"#!/bin/sh\n")
    (root / "bin" / "tool").chmod(0o755)
    (root / "share").mkdir()
    (root / "share" / "data").write_bytes(b"data")
    (root / "share" / "data").chmod(0o644)
    (root / "share").chmod(0o755)
    os.symlink("../bin/tool", root / "share" / "link")
    return root


def test_scan_describes_files_links_and_folders(tmp_path: Path) -> None:
    entries = treehash.scan(release(tmp_path / "r"))
    tool, data = (blake3.blake3(b).hexdigest() for b in (b"#!/bin/sh\n", b"data"))
    assert entries == {"bin": "d:755", "share": "d:755", "bin/tool": f"f:755:{tool}",
                       "share/data": f"f:644:{data}", "share/link": "l:../bin/tool"}


def test_a_fifo_is_described_as_something_else(tmp_path: Path) -> None:
    root = release(tmp_path / "r")
    os.mkfifo(root / "pipe")
    assert treehash.scan(root)["pipe"] == "?:10000"


def test_an_intact_release_has_no_differences(tmp_path: Path) -> None:
    root = release(tmp_path / "r")
    assert treehash.differences(root, treehash.record(root, "1.0.0")) == []


def test_each_kind_of_difference_is_named(tmp_path: Path) -> None:
    root = release(tmp_path / "r")
    rec = treehash.record(root, "1.0.0")
    (root / "share" / "data").write_bytes(b"")  # a file torn to zero length
    (root / "bin" / "tool").chmod(0o4755)
    (root / "share" / "link").unlink()
    os.symlink("/etc/passwd", root / "share" / "link")
    (root / "share" / "extra").write_bytes(b"")
    (root / "bin").chmod(0o777)
    os.rename(root / "share" / "data", root / "moved")
    assert treehash.differences(root, rec) == [
        "share/data: missing", "moved: not in the release as installed",
        "share/extra: not in the release as installed",
        "bin: changed (d)", "bin/tool: changed (f)", "share/link: changed (l)"]
    assert treehash.differences(root, rec, added=False) == [
        "share/data: missing", "bin: changed (d)", "bin/tool: changed (f)",
        "share/link: changed (l)"]


def test_what_a_program_adds_beside_its_files_can_be_left_out(tmp_path: Path) -> None:
    root = release(tmp_path / "r")
    rec = treehash.record(root, "1.0.0")
    (root / "bin" / "__pycache__").mkdir()
    (root / "bin" / "__pycache__" / "tool.cpython-311.pyc").write_bytes(b"\0")
    assert treehash.differences(root, rec, added=False) == []
    assert treehash.differences(root, rec) == [
        "bin/__pycache__: not in the release as installed",
        "bin/__pycache__/tool.cpython-311.pyc: not in the release as installed"]


def test_a_missing_release_is_one_difference(tmp_path: Path) -> None:
    rec = treehash.record(release(tmp_path / "r"), "1.0.0")
    assert treehash.differences(tmp_path / "gone", rec) == [f"{tmp_path / 'gone'} is missing"]


def test_records_are_saved_loaded_and_dropped(tmp_path: Path) -> None:
    rec = treehash.record(release(tmp_path / "r"), "1.2.3")
    state = tmp_path / "state"
    treehash.save(state, rec)
    assert (state / "trees" / "1.2.3.json").is_file()
    assert stat.S_IMODE((state / "trees").stat().st_mode) == 0o755
    assert treehash.load(state, "1.2.3") == rec
    assert treehash.load(state, "9.9.9") is None
    (state / "trees" / "1.2.3.json").write_text("{not json")
    assert treehash.load(state, "1.2.3") is None
    treehash.drop(state, "1.2.3")
    assert not (state / "trees" / "1.2.3.json").exists()
    treehash.drop(state, "1.2.3")  # already gone: nothing to do


@pytest.mark.parametrize("version", ["../evil", "a/b", "..", ""])
def test_a_version_that_cannot_name_a_file_is_never_a_path(tmp_path: Path,
                                                            version: str) -> None:
    assert treehash.load(tmp_path, version) is None
    treehash.drop(tmp_path, version)
    with pytest.raises(ValueError, match="cannot name a file"):
        treehash.save(tmp_path, treehash.TreeRecord(version=version, entries={}))
