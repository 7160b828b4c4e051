"""Safe extraction: good archives of every format, and every malicious case refused with
nothing written outside the staging folder (catalogue group B)."""

from __future__ import annotations

import bz2
import contextlib
import gzip
import io
import lzma
import os
import re
import stat
import subprocess
import tarfile
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest
import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests import archive_corpus
from tests.helpers import make_tar, make_zip
from updaterd.errors import ArchiveError
from updaterd.trust import archive

LIMITS = archive.ExtractLimits(max_members=1000, max_total=10 << 20, max_file=5 << 20)


class Box:
    """A folder that must stay untouched, holding fresh staging folders (as the engine does)."""

    def __init__(self, outside: Path) -> None:
        self.outside = outside
        outside.mkdir()
        (outside / "bystander").write_text("untouched")

    def staging(self) -> Path:
        return Path(tempfile.mkdtemp(prefix="stage-", dir=self.outside))

    def snapshot(self) -> set[str]:
        found = set()
        for dirpath, dirnames, filenames in os.walk(self.outside):
            for n in dirnames + filenames:
                p = os.path.join(dirpath, n)
                if "/stage-" not in p:
                    found.add(p)
        return found


@pytest.fixture
def box(tmp_path: Path) -> Box:
    return Box(tmp_path / "outside")


def extract_bytes(data: bytes, kind: archive.Kind, staging: Path,
                  limits: archive.ExtractLimits = LIMITS) -> Path:
    f = io.BytesIO(data)
    f.fileno = lambda: (_ for _ in ()).throw(OSError())  # type: ignore[method-assign]
    return archive.extract(f, kind, staging, limits, "app")  # type: ignore[arg-type]


def tar_bytes(members: list[tuple[tarfile.TarInfo, bytes | None]], compress: str = "") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for info, data in members:
            if data is not None:
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
            else:
                tf.addfile(info)
    raw = buf.getvalue()
    if compress == "gz":
        import gzip
        raw = gzip.compress(raw)
    return raw


def member(name: str, kind: bytes = tarfile.REGTYPE, mode: int = 0o644,
           linkname: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.linkname = kind, mode, linkname
    return info


def refused(members: list[tuple[tarfile.TarInfo, bytes | None]], box: Box,
            match: str) -> None:
    before = box.snapshot()
    with pytest.raises(ArchiveError, match=match):
        extract_bytes(tar_bytes(members), "tar", box.staging())
    assert box.snapshot() == before


FILES = {"bin/app": (b"#!/bin/sh\necho hi\n", 0o755), "lib/data.txt": (b"data\n", 0o644)}


@pytest.mark.parametrize("suffix", ["tar.gz", "tar.xz", "tar.zst", "tar.bz2", "tar", "zip"])
def test_each_format_extracts_with_top_folder_stripped_and_exec_bits(
        tmp_path: Path, box: Box, suffix: str) -> None:
    art = tmp_path / f"app.{suffix}"
    (make_zip if suffix == "zip" else make_tar)(art, FILES, top="app-1.0")
    staging = box.staging()
    with open(art, "rb") as f:
        root = archive.extract(f, archive.kind_of(art.name), staging, LIMITS, "app")
    assert root.name == "app-1.0"
    assert (root / "lib" / "data.txt").read_bytes() == b"data\n"
    assert os.access(root / "bin" / "app", os.X_OK)
    assert not os.access(root / "lib" / "data.txt", os.X_OK)


def test_b52_several_roots_are_kept_as_they_are(box: Box) -> None:
    staging = box.staging()
    root = extract_bytes(tar_bytes([(member("a"), b"1"), (member("b/c"), b"2")]), "tar", staging)
    assert sorted(p.name for p in root.iterdir()) == ["a", "b"]


def test_relative_symlink_inside_release_is_allowed(box: Box) -> None:
    staging = box.staging()
    root = extract_bytes(tar_bytes([
        (member("lib/libfoo.so.1"), b"elf"),
        (member("lib/libfoo.so", tarfile.SYMTYPE, linkname="libfoo.so.1"), None),
        (member("bin/x", tarfile.LNKTYPE, linkname="lib/libfoo.so.1"), None),
    ]), "tar", staging)
    assert os.readlink(root / "lib" / "libfoo.so") == "libfoo.so.1"
    assert (root / "bin" / "x").read_bytes() == b"elf"


def test_b28_dotdot_path(box: Box) -> None:
    refused([(member("../../etc/passwd"), b"x")], box, "'..'")


def test_b29_absolute_path_rejected_not_stripped(box: Box) -> None:
    refused([(member("/etc/cron.d/x"), b"x")], box, "absolute")


def test_b30_inner_dotdot(box: Box) -> None:
    refused([(member("a/../../x"), b"x")], box, r"'\.\.'")


def test_b31_symlink_then_file_through_it(box: Box) -> None:
    refused([(member("x", tarfile.SYMTYPE, linkname="/etc"), None),
             (member("x/passwd"), b"root")], box, "symlink|absolute")
    refused([(member("x", tarfile.SYMTYPE, linkname="sub"), None),
             (member("x/passwd"), b"root")], box, "goes through the link")


def test_b32_symlink_to_parents(box: Box) -> None:
    refused([(member("x", tarfile.SYMTYPE, linkname="../../.."), None)], box,
            "leaves the release")


def test_b33_symlink_chain_out(box: Box) -> None:
    refused([(member("a", tarfile.SYMTYPE, linkname="b"), None),
             (member("b", tarfile.SYMTYPE, linkname=".."), None)], box,
            "goes through another symlink")
    refused([(member("d/e/f/s2", tarfile.SYMTYPE, linkname="../../x"), None),
             (member("s1", tarfile.SYMTYPE, linkname="d/e/f/s2/../../.."), None)], box,
            "through another symlink|leaves")


@pytest.mark.parametrize(("target", "link"), [("a/orig", "z/copy"), ("z/orig", "a/copy"),
                                            ("orig", "orig2")])
def test_a_hard_link_to_an_earlier_file_shares_its_inode(box: Box, target: str,
                                                         link: str) -> None:
    root = extract_bytes(tar_bytes([(member(target), b"same"),
                                    (member(link, tarfile.LNKTYPE, linkname=target), None)]),
                         "tar", box.staging())
    assert (root / link).read_bytes() == b"same"
    assert (root / link).stat().st_ino == (root / target).stat().st_ino


def test_a_zip_that_cannot_be_read_as_a_file_is_an_archive_fault(box: Box) -> None:
    """A stream with no seek (a pipe) is not a readable zip: refused as one, not a crash."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("a", b"1")
    read_end, write_end = os.pipe()
    os.write(write_end, buf.getvalue())
    os.close(write_end)
    with open(read_end, "rb", buffering=0) as pipe, \
            pytest.raises(ArchiveError, match="corrupt zip archive"):
        archive.extract(pipe, "zip", box.staging(), LIMITS, "app")  # type: ignore[arg-type]


def test_b34_hard_link_outside(box: Box) -> None:
    refused([(member("x", tarfile.LNKTYPE, linkname="/etc/shadow"), None)], box,
            "hard link|absolute")
    refused([(member("x", tarfile.LNKTYPE, linkname="../out"), None)], box,
            r"hard link|'\.\.'")


def test_b35_hard_link_to_symlink(box: Box) -> None:
    refused([(member("target"), b"x"), (member("s", tarfile.SYMTYPE, linkname="target"), None),
             (member("h", tarfile.LNKTYPE, linkname="s"), None)], box, "not a regular file")


def test_b36_empty_or_root_symlink(box: Box) -> None:
    refused([(member("e", tarfile.SYMTYPE, linkname=""), None)], box, "absolute or empty")
    refused([(member("r", tarfile.SYMTYPE, linkname="."), None)], box, "leaves the release")


def test_b37_non_empty_staging_is_refused(box: Box) -> None:
    staging = box.staging()
    (staging / "planted").write_text("x")
    with pytest.raises(ArchiveError, match="not empty"):
        extract_bytes(tar_bytes([(member("a"), b"1")]), "tar", staging)


@pytest.mark.parametrize("kind", [tarfile.CHRTYPE, tarfile.BLKTYPE, tarfile.FIFOTYPE])
def test_b38_device_and_fifo(box: Box, kind: bytes) -> None:
    refused([(member("dev", kind), None)], box,
            "special file")


@pytest.mark.parametrize("mode", [0o4755, 0o2755])
def test_b39_setuid_setgid_refused(box: Box, mode: int) -> None:
    refused([(member("bin/su", mode=mode), b"x")], box, "setuid or setgid")


def test_b39_b40_world_writable_and_odd_modes_normalised(box: Box) -> None:
    staging = box.staging()
    root = extract_bytes(tar_bytes([(member("d", tarfile.DIRTYPE, mode=0o000), None),
                                    (member("d/f", mode=0o777), b"x"),
                                    (member("g", mode=0o1666), b"y")]), "tar", staging)
    assert stat.S_IMODE((root / "d").stat().st_mode) == 0o755
    assert stat.S_IMODE((root / "d" / "f").stat().st_mode) == 0o755
    assert stat.S_IMODE((root / "g").stat().st_mode) == 0o644


def test_b41_duplicates_and_file_replaced_by_symlink(box: Box) -> None:
    refused([(member("a"), b"1"), (member("a"), b"2")], box, "duplicate")
    refused([(member("a"), b"1"), (member("a", tarfile.SYMTYPE, linkname="b"), None)], box,
            "duplicate")


def test_b42_case_collision(box: Box) -> None:
    refused([(member("Bin/app"), b"1"), (member("bin/app"), b"2")], box, "case")


@pytest.mark.parametrize(("name", "why"), [
    ("a\\b", "backslash"), ("a\x01b", "control"), ("a\x7fb", "control"),
    ("a/" + "x" * 256, "longer than 255"), ("y/" * 2100, "longer than 4096")])
def test_b43_bad_names_in_archive(box: Box, name: str, why: str) -> None:
    refused([(member(name), b"1")], box, why)


def test_b43_nul_in_name() -> None:
    with pytest.raises(ArchiveError, match="NUL"):
        archive.member_parts("a\0b")


def test_b43_invalid_utf8_name() -> None:
    with pytest.raises(ArchiveError, match="UTF-8"):
        archive.member_parts(b"caf\xe9".decode("utf-8", "surrogateescape"))


def test_b44_pax_path_override_escaping(box: Box) -> None:
    info = member("harmless")
    info.pax_headers = {"path": "../../escape"}
    refused([(info, b"x")], box, r"'\.\.'")
    link = member("l", tarfile.SYMTYPE, linkname="ok")
    link.pax_headers = {"linkpath": "../../../etc"}
    refused([(link, None)], box, "leaves")


def test_b45_caps_abort_mid_stream(box: Box) -> None:
    staging = box.staging()
    small = archive.ExtractLimits(max_members=3, max_total=100, max_file=60)
    with pytest.raises(ArchiveError, match="more than 3 members"):
        extract_bytes(tar_bytes([(member(f"f{i}"), b"x") for i in range(5)]), "tar", staging,
                      small)
    staging = box.staging()
    with pytest.raises(ArchiveError, match="per-file limit"):
        extract_bytes(tar_bytes([(member("big"), b"x" * 61)]), "tar", staging, small)
    staging = box.staging()
    with pytest.raises(ArchiveError, match="expands past"):
        extract_bytes(tar_bytes([(member("a"), b"x" * 50), (member("b"), b"x" * 51)]), "tar",
                      staging, small)


def _zero_bomb(compress: Callable[[bytes], bytes], size: int) -> bytes:
    """A tar header for one `size`-byte file of zeros, compressed in streaming pieces."""
    info = tarfile.TarInfo("zeros")
    info.size = size
    header = info.tobuf(format=tarfile.PAX_FORMAT)
    return compress(header + bytes(min(size, 1 << 20)))  # the body is cut: the cap hits first


@pytest.mark.parametrize("kind", ["tar.gz", "tar.xz", "tar.zst"])
def test_b46_huge_declared_member_aborted_at_cap(box: Box, kind: str) -> None:
    import gzip
    import lzma
    comp = {"tar.gz": gzip.compress, "tar.xz": lzma.compress,
            "tar.zst": zstandard.ZstdCompressor().compress}[kind]
    staging = box.staging()
    with pytest.raises(ArchiveError, match="per-file limit"):
        extract_bytes(_zero_bomb(comp, 10 << 30), kind, staging)  # type: ignore[arg-type]


def test_b48_zip_bad_names(box: Box, tmp_path: Path) -> None:
    staging = box.staging()
    for bad in ["../evil", "/abs", "C:\\win", "C:/win"]:
        z = tmp_path / "bad.zip"
        with zipfile.ZipFile(z, "w") as zf:
            zf.writestr(bad, b"x")
        with open(z, "rb") as f, pytest.raises(ArchiveError):
            archive.extract(f, "zip", staging, LIMITS, "app")
        staging = box.staging()


def test_b49_zip_symlink_and_setuid_refused(box: Box, tmp_path: Path) -> None:
    staging = box.staging()
    for mode, match in ((0o120777, "link"), (0o104755, "setuid")):
        z = tmp_path / "l.zip"
        with zipfile.ZipFile(z, "w") as zf:
            info = zipfile.ZipInfo("x")
            info.external_attr = mode << 16
            zf.writestr(info, b"/etc/passwd")
        with open(z, "rb") as f, pytest.raises(ArchiveError, match=match):
            archive.extract(f, "zip", staging, LIMITS, "app")
        staging = box.staging()


def test_b50_zip_local_header_name_differs(box: Box, tmp_path: Path) -> None:
    z = tmp_path / "m.zip"
    with zipfile.ZipFile(z, "w") as zf:
        zf.writestr("good.txt", b"x")
    data = z.read_bytes().replace(b"good.txt", b"evil.txt", 1)  # local header only
    z.write_bytes(data)
    staging = box.staging()
    with open(z, "rb") as f, pytest.raises(ArchiveError, match=r"differ|corrupt"):
        archive.extract(f, "zip", staging, LIMITS, "app")


_COMPRESS: dict[str, Callable[[bytes], bytes]] = {
    "tar.gz": gzip.compress, "tar.xz": lzma.compress, "tar.bz2": bz2.compress,
    "tar.zst": zstandard.ZstdCompressor(write_checksum=True).compress, "tar": bytes}


@pytest.mark.parametrize("kind", list(_COMPRESS))
@pytest.mark.parametrize("cut", ["truncated", "corrupt"])
def test_b51_truncated_or_corrupt_stream(box: Box, cut: str, kind: archive.Kind) -> None:
    """Each format's own error (zlib's, lzma's, bz2's, zstd's, a bad header checksum) is a
    plain ArchiveError. (Bytes changed inside a member's data need not be noticed here: the
    artifact's signed digests are checked before anything is extracted.)"""
    members = [(member(f"d/f{i}"), os.urandom(4000)) for i in range(4)]
    data = _COMPRESS[kind](tar_bytes(members))
    data = data[: len(data) // 2] if cut == "truncated" else data[:20] + b"\xff" * 40 + data[60:]
    staging = box.staging()
    with pytest.raises(ArchiveError):
        extract_bytes(data, kind, staging)


@pytest.mark.parametrize("kind", ["tar.gz", "tar.xz", "tar.bz2", "tar.zst"])
def test_b51_bytes_changed_inside_the_compressed_stream(box: Box, kind: archive.Kind) -> None:
    """A byte changed in the middle: the decompressor's own error (lzma checks each block)
    comes out as an ArchiveError, or the archive extracts; never another exception."""
    members = [(member(f"d/f{i}"), os.urandom(4000)) for i in range(4)]
    data = _COMPRESS[kind](tar_bytes(members))
    for at in range(len(data) // 4, len(data), max(len(data) // 16, 1)):
        changed = data[:at] + bytes([data[at] ^ 0x55]) + data[at + 1:]
        with contextlib.suppress(ArchiveError):
            extract_bytes(changed, kind, box.staging())


@pytest.mark.parametrize("name", sorted(archive_corpus.HOSTILE))
def test_b54_each_hostile_archive_is_refused_by_our_checks_alone(
        name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Row 54 as revised: the filter is never what refuses (as on Debian 12's 3.11.2)."""
    monkeypatch.delattr(tarfile, "data_filter", raising=False)
    assert archive_corpus.check_hostile(name, tmp_path) == ""


@pytest.mark.parametrize("name", sorted(archive_corpus.GOOD))
def test_b54_good_archives_with_links_install_without_the_filter(
        name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(tarfile, "data_filter", raising=False)
    assert archive_corpus.check_good(name, tmp_path) == ""


def test_b54_the_corpus_passes_under_the_systems_own_python(tmp_path: Path) -> None:
    """The same archives under /usr/bin/python3 as the host ships it (Debian 12: 3.11.2, no
    data_filter), with nothing but the standard library and updaterd's own code."""
    system = Path("/usr/bin/python3")
    if not system.exists():
        pytest.skip("no /usr/bin/python3 on this host")
    repo = Path(__file__).resolve().parent.parent
    r = subprocess.run([str(system), str(repo / "tests" / "archive_corpus.py")],
                       env={"PATH": "/usr/bin:/bin", "PYTHONPATH": f"{repo / 'daemon'}:"
                            f"{repo / 'ctl'}", "TMPDIR": str(tmp_path)},
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    total = len(archive_corpus.HOSTILE) + len(archive_corpus.GOOD)
    assert f"corpus: {total} passed, 0 failed" in r.stdout, r.stdout


def test_b54_the_study_s_two_gaps(box: Box) -> None:
    """A link named `.` was skipped instead of refused; a link `a/a` then a member `a` raised a
    raw FileExistsError instead of an archive error."""
    refused([(member(".", tarfile.SYMTYPE, linkname="x"), None)], box,
            "names the release root, which must be a folder")
    refused([(member("./", tarfile.SYMTYPE, linkname="x"), None)], box, "release root")
    refused([(member("b"), b"b"), (member("a/a", tarfile.SYMTYPE, linkname="../b"), None),
             (member("a"), b"a")], box, "member 'a': duplicate name")


def test_b53_raw_binary_named_from_config(box: Box, tmp_path: Path) -> None:
    raw = tmp_path / "download"
    raw.write_bytes(b"\x7fELF...")
    staging = box.staging()
    with open(raw, "rb") as f:
        root = archive.extract(f, "raw", staging, LIMITS, "tool")
    assert [p.name for p in root.iterdir()] == ["tool"]
    assert os.access(root / "tool", os.X_OK)


def test_kind_of() -> None:
    assert archive.kind_of("x-1.0.TAR.ZST") == "tar.zst"
    assert archive.kind_of("x.tgz") == "tar.gz"
    assert archive.kind_of("tool-linux-x86_64") == "raw"


def _quoted_overlap_zip(n: int, kernel: bytes) -> bytes:
    """David Fifield's overlap construction, stored (not deflated) for clarity: the data of
    entry i is the local header of entry i+1 followed by entry i+1's data, so every entry
    quotes all the later ones and the output grows with n squared."""
    import struct
    import zlib

    names = [f"f{i:04d}".encode() for i in range(n)]

    def local(i: int, data: bytes) -> bytes:
        return struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, 0, 0, 0x21,
                           zlib.crc32(data), len(data), len(data), len(names[i]), 0) + names[i]

    datas: list[bytes] = [b""] * n
    headers: list[bytes] = [b""] * n
    datas[n - 1] = kernel
    headers[n - 1] = local(n - 1, kernel)
    for i in range(n - 2, -1, -1):
        datas[i] = headers[i + 1] + datas[i + 1]
        headers[i] = local(i, datas[i])
    body = headers[0] + datas[0]
    offsets, at = [], 0
    for h in headers:
        offsets.append(at)
        at += len(h)
    central = b"".join(
        struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 0x031E, 20, 0, 0, 0, 0x21,
                    zlib.crc32(datas[i]), len(datas[i]), len(datas[i]), len(names[i]), 0, 0,
                    0, 0, 0o100644 << 16, offsets[i]) + names[i] for i in range(n))
    end = struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, n, n, len(central), len(body), 0)
    return body + central + end


def test_b47_zip_quoted_overlap_bomb(box: Box) -> None:
    bomb = _quoted_overlap_zip(200, b"A" * 20000)
    expanded = sum(i.file_size for i in zipfile.ZipFile(io.BytesIO(bomb)).infolist())
    assert len(bomb) < 60_000 and expanded > 4_000_000  # ~70x, from overlap alone
    roomy = archive.ExtractLimits(max_members=1000, max_total=1 << 30, max_file=1 << 30)
    staging = box.staging()
    with pytest.raises(ArchiveError, match="overlaps the next zip entry"):
        extract_bytes(bomb, "zip", staging, roomy)
    assert not any((staging / "tree").iterdir()), "refused before any member was written"
    # without the overlap check Python's zipfile reads it happily (CRCs and names agree)
    with zipfile.ZipFile(io.BytesIO(bomb)) as zf:
        assert len(zf.read("f0000")) > 20000


# -- member names at their edges (each of these kills a mutant the tests above let live) ---------

@pytest.mark.parametrize(("name", "why"), [
    ("a\x1fb", "NUL or control characters"), ("a\x7fb", "NUL or control characters"),
    ("a\nb", "NUL or control characters"), ("C:evil", "drive-letter path"),
    ("C:", "drive-letter path"),
    ("c:/evil", "drive-letter path"), ("a\\b", "backslash"), ("/etc", "absolute path"),
    ("a//b", "an empty component"), ("a/./b", "'.'"), ("a/../b", "'..'"),
    ("\udcff", "not valid UTF-8")])
def test_check_name_refusals(name: str, why: str) -> None:
    from updaterd.trust.archive import member_parts

    with pytest.raises(ArchiveError, match=re.escape(why)):
        member_parts(name)


@pytest.mark.parametrize(("name", "parts"), [
    ("a b", ("a b",)), ("a\x80b", ("a\x80b",)), ("~", ("~",)), ("1:x", ("1:x",)),
    (":x", (":x",)), ("C", ("C",)), ("./././a/", ("a",)), ("./", ()), (".", ()), ("", ()),
    ("dir/", ("dir",)), ("x" * 255, ("x" * 255,)), ("é" * 127, ("é" * 127,))])
def test_check_name_accepts(name: str, parts: tuple[str, ...]) -> None:
    from updaterd.trust.archive import member_parts

    assert member_parts(name) == parts


def test_check_name_limits_are_in_bytes_at_the_edges() -> None:
    from updaterd.trust.archive import MAX_PATH, member_parts

    deep = "/".join(["x" * 254] * 16) + "/" + "y" * (MAX_PATH - 16 * 255)
    assert len(deep.encode()) == MAX_PATH and len(member_parts(deep)) == 17
    with pytest.raises(ArchiveError, match=f"path longer than {MAX_PATH} bytes"):
        member_parts(deep + "z")
    with pytest.raises(ArchiveError, match="a component is longer than 255 bytes"):
        member_parts("x" * 256)
    with pytest.raises(ArchiveError, match="a component is longer than 255 bytes"):
        member_parts("é" * 128)  # 128 characters, 256 bytes


@pytest.mark.parametrize(("target", "why"), [
    ("a\x1fb", "control characters"), ("a\x7fb", "control characters"), ("a\\b", "backslash"),
    ("", "absolute or empty"), ("/x", "absolute or empty"), ("a\0b", "absolute or empty")])
def test_link_targets_refused(tmp_path: Path, target: str, why: str) -> None:
    from updaterd.trust.archive import ExtractLimits, Tree

    tree = Tree(tmp_path, ExtractLimits(10, 10, 10))
    with pytest.raises(ArchiveError, match=re.escape(why)):
        tree.add_link("m", "link", target)
    tree.add_link("m", "ok", "a b~é")
    assert tree.links == {"ok": "a b~é"}


def _tree(tmp_path: Path, **limits: int) -> archive.Tree:
    root = tmp_path / "tree"
    root.mkdir()
    return archive.Tree(root, archive.ExtractLimits(**{**{"max_members": 100, "max_total": 100,
                                                           "max_file": 100}, **limits}))


def test_the_member_cap_is_exact(tmp_path: Path) -> None:
    tree = _tree(tmp_path, max_members=2)
    tree.claim("a", ("a",), "file")
    tree.claim("b", ("b",), "file")
    with pytest.raises(ArchiveError, match="more than 2 members"):
        tree.claim("c", ("c",), "file")


@pytest.mark.parametrize(("first", "second"), [("file", "dir"), ("link", "dir"),
                                               ("dir", "file"), ("dir", "link"),
                                               ("file", "file"), ("link", "link")])
def test_one_name_twice_is_refused_unless_both_are_folders(tmp_path: Path, first: str,
                                                           second: str) -> None:
    tree = _tree(tmp_path)
    tree.claim("x", ("x",), first)
    with pytest.raises(ArchiveError, match="duplicate name"):
        tree.claim("x", ("x",), second)
    tree.claim("d", ("d",), "dir")
    tree.claim("d/", ("d",), "dir")


def test_a_hard_link_must_name_an_earlier_regular_file(tmp_path: Path) -> None:
    tree = _tree(tmp_path)
    tree.claim("d", ("d",), "dir")
    tree.make_dirs(("d",))
    with pytest.raises(ArchiveError, match="not a regular file earlier in the archive"):
        tree.hard_link("h", ("h",), "d")
    with pytest.raises(ArchiveError, match="not a regular file earlier in the archive"):
        tree.hard_link("h", ("h",), "later")
    tree.claim("self", ("self",), "file")
    with pytest.raises(ArchiveError, match="not a regular file earlier in the archive"):
        tree.hard_link("self", ("self",), "self")  # was: FileNotFoundError from os.link


@pytest.mark.parametrize(("key", "target"), [("x", "../y"), ("a/b", "../../y"), ("x", ".."),
                                             ("a/x", "../.."), ("x", "."), ("x", "a/../..")])
def test_a_link_that_leaves_the_release_is_refused_by_our_own_check(
        tmp_path: Path, key: str, target: str) -> None:
    tree = _tree(tmp_path)
    tree.add_link(key, key, target)
    with pytest.raises(ArchiveError, match="leaves the release"):
        tree.create_links()


def test_a_link_that_stays_inside_is_created(tmp_path: Path) -> None:
    tree = _tree(tmp_path)
    tree.add_link("a/x", "a/x", "../y")
    tree.create_links()
    assert os.readlink(tree.root / "a" / "x") == "../y"


def test_a_zip_made_by_the_zip_tool_extracts(box: Box, tmp_path: Path) -> None:
    """Info-ZIP writes extra fields in the local headers: a gap between the entries as the
    overlap check counts them, which must not look like a bomb."""
    import subprocess

    src = tmp_path / "src"
    (src / "bin").mkdir(parents=True)
    (src / "bin" / "app").write_bytes(b"#!/bin/sh\n")
    (src / "bin" / "app").chmod(0o755)
    (src / "README").write_bytes(b"r" * 1000)
    subprocess.run(["zip", "-q", "-r", str(tmp_path / "a.zip"), "bin", "README"], cwd=src,
                   check=True)
    root = extract_bytes((tmp_path / "a.zip").read_bytes(), "zip", box.staging())
    assert (root / "README").read_bytes() == b"r" * 1000
    assert os.access(root / "bin" / "app", os.X_OK)


@pytest.mark.parametrize(("mode", "executable"), [(0o641, True), (0o614, True),
                                                  (0o744, True), (0o644, False)])
def test_any_exec_bit_in_a_zip_makes_an_executable(box: Box, tmp_path: Path, mode: int,
                                                   executable: bool) -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        info = zipfile.ZipInfo("tool")
        info.external_attr = (stat.S_IFREG | mode) << 16
        zf.writestr(info, b"#!/bin/sh\n")
    root = extract_bytes(buf.getvalue(), "zip", box.staging())
    assert os.access(root / "tool", os.X_OK) is executable


def test_the_extracted_root_is_0755(box: Box) -> None:
    root = extract_bytes(tar_bytes([(member("a/f"), b"x"), (member("b/g"), b"y")]), "tar",
                         box.staging())
    assert stat.S_IMODE(root.stat().st_mode) == 0o755


def test_executables_are_the_files_of_bin_else_the_top_level(tmp_path: Path) -> None:
    def exe(p: Path) -> None:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"#!/bin/sh\n")
        p.chmod(0o755)

    with_bin = tmp_path / "with_bin"
    exe(with_bin / "bin" / "b")
    exe(with_bin / "top")
    (with_bin / "bin" / "plain").write_bytes(b"")
    assert [p.name for p in archive.executables(with_bin)] == ["b"]
    without = tmp_path / "without"
    exe(without / "top")
    assert [p.name for p in archive.executables(without)] == ["top"]
    linked = tmp_path / "linked"
    exe(linked / "top")
    exe(linked / "elsewhere" / "e")
    (linked / "bin").symlink_to("elsewhere")
    assert [p.name for p in archive.executables(linked)] == ["top"]


@pytest.mark.parametrize("order", [("README", "readme"), ("readme", "README")])
def test_a_case_clash_is_refused_in_either_order(tmp_path: Path, order: tuple[str, str]) -> None:
    tree = _tree(tmp_path)
    tree.claim(order[0], (order[0],), "file")
    with pytest.raises(ArchiveError, match=f"differs only in case from '{order[0]}'"):
        tree.claim(order[1], (order[1],), "file")


def test_the_size_caps_are_exact(tmp_path: Path) -> None:
    tree = _tree(tmp_path, max_total=10, max_file=6)
    tree.add_size("a", 4)
    tree.add_size("b", 6)
    with pytest.raises(ArchiveError, match="over the per-file limit of 6"):
        tree.add_size("c", 7)
    with pytest.raises(ArchiveError, match="expands past the limit of 10 bytes"):
        tree.add_size("d", 1)


def test_a_nameless_zip_entry_does_not_end_the_extraction(box: Box) -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr(zipfile.ZipInfo("./"), b"")
        zf.writestr("a.txt", b"a")
        zf.writestr("b.txt", b"b")
    root = extract_bytes(buf.getvalue(), "zip", box.staging())
    assert sorted(p.name for p in root.iterdir()) == ["a.txt", "b.txt"]


def test_an_empty_archive_is_an_empty_release(box: Box) -> None:
    root = extract_bytes(tar_bytes([]), "tar", box.staging())
    assert root.name == "tree" and list(root.iterdir()) == []


def test_an_implicit_folder_is_a_name_like_any_other(box: Box) -> None:
    refused([(member("a/x"), b"1"), (member("a"), b"2")], box, "duplicate name")
    refused([(member("a/x"), b"1"), (member("A"), b"2")], box, "differs only in case")


@pytest.mark.parametrize(("data", "size", "why"), [
    (b"12345", 4, "more data than its declared size"), (b"123", 4, r"truncated \(3 of 4")])
def test_a_member_must_hold_exactly_its_declared_size(tmp_path: Path, data: bytes, size: int,
                                                      why: str) -> None:
    tree = _tree(tmp_path)
    with pytest.raises(ArchiveError, match=why):
        tree.write_file("m", ("m",), io.BytesIO(data), False, size)
    tree.write_file("n", ("n",), io.BytesIO(b"1234"), False, 4)
    assert (tree.root / "n").read_bytes() == b"1234"


def test_long_names_are_cut_to_64_characters_in_messages() -> None:
    from updaterd.trust.archive import member_parts

    name = "abcdefgh" * 600
    for bad in (name, "x" * 300):
        with pytest.raises(ArchiveError) as e:
            member_parts(bad)
        assert f"member {bad[:64]!r}" in str(e.value)


@pytest.mark.parametrize(("links", "key"), [
    ({"s": "real", "t": "./s/x"}, "t"), ({"s": "real", "d/t": "../s/x"}, "d/t"),
    ({"s": "real", "t": "a//../s/x"}, "t")])
def test_a_link_through_another_link_is_found_past_dots(tmp_path: Path, links: dict[str, str],
                                                        key: str) -> None:
    tree = _tree(tmp_path)
    for k, target in links.items():
        tree.add_link(k, k, target)
    with pytest.raises(ArchiveError, match=f"member '{key}': symlink to .* goes through"):
        tree.create_links()


@pytest.mark.parametrize("target", ["+a", "-x", "!", "+/s", "d/+"])
def test_names_that_sort_before_dots_are_ordinary(tmp_path: Path, target: str) -> None:
    tree = _tree(tmp_path)
    tree.add_link("s", "s", "real")
    tree.add_link("d/t", "d/t", target)
    tree.create_links()
    assert os.readlink(tree.root / "d" / "t") == target


def test_a_tar_zst_of_several_frames_is_read_to_its_end(box: Box) -> None:
    raw = tar_bytes([(member("a"), b"a" * 5000), (member("b"), b"b" * 5000)])
    half = len(raw) // 2
    c = zstandard.ZstdCompressor()
    root = extract_bytes(c.compress(raw[:half]) + c.compress(raw[half:]), "tar.zst",
                         box.staging())
    assert (root / "b").read_bytes() == b"b" * 5000


@pytest.mark.parametrize("name", ["", ".", "a/b"])
def test_a_raw_executable_needs_a_plain_name(box: Box, name: str) -> None:
    f = io.BytesIO(b"\x7fELF")
    f.fileno = lambda: (_ for _ in ()).throw(OSError())  # type: ignore[method-assign]
    with pytest.raises(ArchiveError, match="must be a plain file name"):
        archive.extract(f, "raw", box.staging(), LIMITS, name)  # type: ignore[arg-type]


def test_an_entry_reaching_one_byte_into_the_next_is_an_overlap(box: Box) -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr("a", b"a" * 100)
        zf.writestr("b", b"b" * 100)
    raw = bytearray(buf.getvalue())
    second = raw.index(b"PK\x01\x02", raw.index(b"PK\x01\x02") + 4)
    offset = int.from_bytes(raw[second + 42:second + 46], "little")
    raw[second + 42:second + 46] = (offset - 1).to_bytes(4, "little")
    with pytest.raises(ArchiveError, match="overlaps the next zip entry"):
        extract_bytes(bytes(raw), "zip", box.staging())


def test_limits_are_values() -> None:
    import dataclasses

    with pytest.raises(dataclasses.FrozenInstanceError):
        LIMITS.max_total = 1  # type: ignore[misc]


@pytest.mark.parametrize("target", ["+a", "-x", "!", "+"])
def test_a_top_level_link_to_a_name_sorting_before_dots_stays_inside(tmp_path: Path,
                                                                    target: str) -> None:
    tree = _tree(tmp_path)
    tree.add_link("t", "t", target)
    tree.create_links()
    assert os.readlink(tree.root / "t") == target


@pytest.mark.parametrize(("mode", "executable"), [(0o641, True), (0o614, True), (0o644, False)])
def test_any_exec_bit_in_a_tar_makes_an_executable(box: Box, mode: int, executable: bool) -> None:
    root = extract_bytes(tar_bytes([(member("tool", mode=mode), b"#!/bin/sh\n"),
                                    (member("other"), b"x")]), "tar", box.staging())
    assert os.access(root / "tool", os.X_OK) is executable


# -- data_filter, where it exists, as the reference: we refuse at least what it refuses -------

needs_filter = pytest.mark.skipif(not hasattr(tarfile, "data_filter"),
                                  reason="this Python has no tarfile.data_filter to compare with")

_COMPONENTS = st.sampled_from(["a", "b", "A", "..", ".", "", "bin", "x y"])
_NAMES = st.builds(lambda lead, parts: lead + "/".join(parts),
                   st.sampled_from(["", "", "/", "./", "//"]),
                   st.lists(_COMPONENTS, min_size=1, max_size=4))
_TYPES = st.sampled_from([tarfile.REGTYPE, tarfile.REGTYPE, tarfile.DIRTYPE, tarfile.SYMTYPE,
                          tarfile.LNKTYPE, tarfile.CHRTYPE, tarfile.FIFOTYPE])
_MEMBERS = st.lists(st.tuples(_NAMES, _TYPES, _NAMES, st.sampled_from([0o644, 0o755, 0o4755])),
                    min_size=1, max_size=6)


def _archive_of(specs: list[tuple[str, bytes, str, int]]) -> bytes:
    return tar_bytes([(member(name, kind, mode, linkname),
                       b"data" if kind == tarfile.REGTYPE else None)
                      for name, kind, linkname, mode in specs])


# link-heavy: most members are links, their targets walk up, across and back down
_LINK_TARGETS = st.builds(lambda lead, parts: lead + "/".join(parts),
                          st.sampled_from(["", "", "", "/", "./", "../"]),
                          st.lists(st.sampled_from(["a", "b", "..", "..", ".", "bin", ""]),
                                   min_size=1, max_size=5))
_LINK_HEAVY = st.lists(st.tuples(
    st.builds(lambda parts: "/".join(parts),
              st.lists(st.sampled_from(["a", "b", "bin", "."]), min_size=1, max_size=3)),
    st.sampled_from([tarfile.SYMTYPE, tarfile.SYMTYPE, tarfile.LNKTYPE, tarfile.REGTYPE,
                     tarfile.DIRTYPE]),
    _LINK_TARGETS, st.just(0o644)), min_size=1, max_size=6)


def _check_against_filter(tmp_path_factory: pytest.TempPathFactory,
                          specs: list[tuple[str, bytes, str, int]]) -> None:
    """For any archive in which data_filter would refuse a member (asked against the empty
    release folder: nothing on disk is a link while files are written), the extraction is
    refused all the same, without asking it, and nothing outside the staging folder changes."""
    box = Box(tmp_path_factory.mktemp("filter") / "outside")
    oracle_root = box.staging()
    filter_refuses = False
    with tarfile.open(fileobj=io.BytesIO(_archive_of(specs))) as tf:
        for info in tf.getmembers():
            try:
                tarfile.data_filter(info, str(oracle_root))
            except tarfile.FilterError:
                filter_refuses = True
    if not filter_refuses:
        return
    before = box.snapshot()
    with pytest.raises(ArchiveError):
        extract_bytes(_archive_of(specs), "tar", box.staging())
    assert box.snapshot() == before


@needs_filter
@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(specs=_MEMBERS)
def test_whatever_data_filter_refuses_is_refused_without_asking_it(
        tmp_path_factory: pytest.TempPathFactory, specs: list[tuple[str, bytes, str, int]]
) -> None:
    _check_against_filter(tmp_path_factory, specs)


@needs_filter
@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(specs=_LINK_HEAVY)
def test_whatever_data_filter_refuses_of_link_heavy_archives_is_refused(
        tmp_path_factory: pytest.TempPathFactory, specs: list[tuple[str, bytes, str, int]]
) -> None:
    _check_against_filter(tmp_path_factory, specs)


@pytest.mark.parametrize(("name", "kind", "linkname"), [
    ("../x", tarfile.REGTYPE, ""), ("a/../../x", tarfile.REGTYPE, ""),
    ("../d", tarfile.DIRTYPE, ""), ("dev", tarfile.CHRTYPE, ""),
    ("fifo", tarfile.FIFOTYPE, ""), (".", tarfile.CHRTYPE, ""), ("./", tarfile.FIFOTYPE, ""),
    ("l", tarfile.SYMTYPE, "/etc/passwd"),
    ("l", tarfile.SYMTYPE, "../../x"), ("h", tarfile.LNKTYPE, "/etc/passwd"),
    ("h", tarfile.LNKTYPE, "../x"),
])
@needs_filter
def test_each_kind_of_member_data_filter_refuses_is_refused(box: Box, name: str, kind: bytes,
                                                          linkname: str) -> None:
    info = member(name, kind, linkname=linkname)
    with pytest.raises(tarfile.FilterError):
        tarfile.data_filter(info, str(box.staging()))
    refused([(info, b"x" if kind == tarfile.REGTYPE else None)], box, f"member {name!r}")


def test_data_filter_is_never_asked(box: Box, monkeypatch: pytest.MonkeyPatch) -> None:
    """Its first backports (3.10.12, 3.11.4) refused good links (cpython gh-107845): the
    extractor's decisions are its own on every Python."""
    asked: list[str] = []

    def spy(info: tarfile.TarInfo, dest: str) -> tarfile.TarInfo:
        asked.append(info.name)
        raise tarfile.AbsoluteLinkError(info)

    monkeypatch.setattr(tarfile, "data_filter", spy)
    root = extract_bytes(tar_bytes([(member("f"), b"1"),
                                    (member("l", tarfile.SYMTYPE, linkname="f"), None),
                                    (member("h", tarfile.LNKTYPE, linkname="f"), None)]),
                         "tar", box.staging())
    assert os.readlink(root / "l") == "f" and (root / "h").read_bytes() == b"1"
    assert asked == []


# -- what a delta build asks of the tree (H150) --------------------------------------------

@pytest.mark.parametrize(("name", "suffix"), [
    ("a.tar.gz", ".tar.gz"), ("A.TGZ", ".tgz"), ("a.tar.zst", ".tar.zst"), ("a.zip", ".zip"),
    ("a.tar", ".tar"), ("tool", ""), ("tool.exe", ""), ("a.gz.tar.xz", ".tar.xz")])
def test_suffix_of_names_the_archive_suffix_as_listed(name: str, suffix: str) -> None:
    assert archive.suffix_of(name) == suffix


def _limits() -> archive.ExtractLimits:
    return archive.ExtractLimits(max_members=10, max_total=1 << 20, max_file=1 << 20)


@pytest.mark.parametrize("executable", [True, False])
def test_copy_file_makes_a_file_of_its_own_with_the_mode_asked(tmp_path: Path,
                                                               executable: bool) -> None:
    source = tmp_path / "kept.txt"
    source.write_bytes(b"kept bytes\n")
    source.chmod(0o600)
    tree = archive.Tree(root=tmp_path / "new", limits=_limits())
    tree.root.mkdir()
    old = os.umask(0o077)
    try:
        tree.copy_file("lib/kept.txt", ("lib", "kept.txt"), str(source), executable, 11)
    finally:
        os.umask(old)
    made = tree.root / "lib" / "kept.txt"
    assert made.read_bytes() == b"kept bytes\n"
    st = made.stat()
    assert stat.S_IMODE(st.st_mode) == (0o755 if executable else 0o644)
    assert st.st_ino != source.stat().st_ino and st.st_nlink == 1
    made.write_bytes(b"rewritten\n")  # the app writes its own file: the kept one stays
    assert source.read_bytes() == b"kept bytes\n"


@pytest.mark.parametrize("recorded", [10, 12])
def test_copy_file_of_another_size_than_recorded_is_refused(tmp_path: Path,
                                                            recorded: int) -> None:
    source = tmp_path / "kept.txt"
    source.write_bytes(b"kept bytes\n")
    tree = archive.Tree(root=tmp_path / "new", limits=_limits())
    tree.root.mkdir()
    with pytest.raises(ArchiveError, match=f"11 bytes where {recorded} were recorded"):
        tree.copy_file("kept.txt", ("kept.txt",), str(source), False, recorded)


def test_copy_file_never_reads_through_a_link(tmp_path: Path) -> None:
    (tmp_path / "secret").write_bytes(b"x")
    (tmp_path / "link").symlink_to(tmp_path / "secret")
    tree = archive.Tree(root=tmp_path / "new", limits=_limits())
    tree.root.mkdir()
    with pytest.raises(OSError):
        tree.copy_file("link", ("link",), str(tmp_path / "link"), False, 1)
