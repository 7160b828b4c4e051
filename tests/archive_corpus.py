"""Hostile and good tar archives for the extractor (catalogue group B, B54), on the standard
library alone: `make test` runs them with the checkout's virtual environment (test_archive) and
again with the system's own python3 (`python3 tests/archive_corpus.py`, PYTHONPATH=daemon:ctl),
which on Debian 12 has no `tarfile.data_filter`. Every hostile archive must be refused with an
ArchiveError naming a member, and nothing outside the staging folder may change; every good one
must extract to exactly the tree it describes.
"""

from __future__ import annotations

import io
import os
import sys
import tarfile
import tempfile
from collections.abc import Callable
from pathlib import Path

from updaterd.errors import ArchiveError
from updaterd.trust import archive

LIMITS = archive.ExtractLimits(max_members=1000, max_total=10 << 20, max_file=5 << 20)
Member = tuple[tarfile.TarInfo, bytes | None]


def m(name: str, kind: bytes = tarfile.REGTYPE, mode: int = 0o644, link: str = "",
      pax: dict[str, str] | None = None) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.linkname = kind, mode, link
    if pax:
        info.pax_headers = dict(pax)
    return info


def f(name: str, data: bytes = b"x", mode: int = 0o644) -> Member:
    return m(name, mode=mode), data


def d(name: str) -> Member:
    return m(name, tarfile.DIRTYPE, 0o755), None


def sym(name: str, target: str) -> Member:
    return m(name, tarfile.SYMTYPE, link=target), None


def hard(name: str, target: str) -> Member:
    return m(name, tarfile.LNKTYPE, link=target), None


def tar_of(members: list[Member], fmt: int = tarfile.PAX_FORMAT) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tf:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            tf.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


HOSTILE: dict[str, Callable[[], bytes]] = {
    "dotdot file": lambda: tar_of([f("../x")]),
    "inner dotdot": lambda: tar_of([f("a/../../x")]),
    "absolute file": lambda: tar_of([f("/tmp/updaterd-corpus-abs")]),
    "double-slash absolute": lambda: tar_of([f("//tmp/updaterd-corpus-abs")]),
    "drive letter": lambda: tar_of([f("C:x")]),
    "backslash name": lambda: tar_of([f("a\\..\\x")]),
    "newline in name": lambda: tar_of([f("a\nb")]),
    "dotdot folder": lambda: tar_of([d("../d")]),
    "character device": lambda: tar_of([(m("dev", tarfile.CHRTYPE), None)]),
    "block device": lambda: tar_of([(m("blk", tarfile.BLKTYPE), None)]),
    "fifo": lambda: tar_of([(m("fifo", tarfile.FIFOTYPE), None)]),
    "device named as the root": lambda: tar_of([(m(".", tarfile.CHRTYPE), None)]),
    "setuid file": lambda: tar_of([f("bin/su", mode=0o4755)]),
    "setgid file": lambda: tar_of([f("bin/sg", mode=0o2755)]),
    "absolute symlink": lambda: tar_of([sym("etc", "/etc")]),
    "symlink up and out": lambda: tar_of([sym("x", "../../x")]),
    "symlink to the parent": lambda: tar_of([sym("up", "..")]),
    "symlink to the root": lambda: tar_of([sym("self", ".")]),
    "empty symlink": lambda: tar_of([sym("e", "")]),
    "symlink target with control": lambda: tar_of([sym("c", "a\x1bb")]),
    "symlink target with DEL": lambda: tar_of([sym("c", "a\x7fb")]),
    "symlink target with backslash": lambda: tar_of([sym("c", "..\\..\\etc")]),
    "nested symlink out": lambda: tar_of([sym("a/l", "../../etc")]),
    "file through an absolute symlink": lambda: tar_of([sym("x", "/etc"), f("x/passwd")]),
    "file through an inside symlink": lambda: tar_of([d("sub"), sym("x", "sub"),
                                                      f("x/passwd")]),
    "folder through a symlink": lambda: tar_of([d("sub"), sym("x", "sub"), d("x/y")]),
    "chain out together": lambda: tar_of([sym("a", "b"), sym("b", "..")]),
    "chain out past dots": lambda: tar_of([sym("d/e/f/s2", "../../x"),
                                           sym("s1", "d/e/f/s2/../../..")]),
    "link through a link": lambda: tar_of([d("real"), sym("l1", "real"), sym("l2", "l1/x")]),
    "hard link absolute": lambda: tar_of([hard("h", "/etc/passwd")]),
    "hard link dotdot": lambda: tar_of([hard("h", "../x")]),
    "hard link to a symlink": lambda: tar_of([f("t"), sym("s", "t"), hard("h", "s")]),
    "hard link to a later file": lambda: tar_of([hard("h", "t"), f("t")]),
    "hard link to itself": lambda: tar_of([hard("h", "h")]),
    "hard link to a folder": lambda: tar_of([d("dir"), hard("h", "dir")]),
    "hard link to nothing": lambda: tar_of([hard("h", "missing")]),
    "duplicate file": lambda: tar_of([f("a", b"1"), f("a", b"2")]),
    "file then symlink of one name": lambda: tar_of([f("a"), sym("a", "b")]),
    "folder then symlink of one name": lambda: tar_of([d("a"), sym("a", "b")]),
    "folder then file of one name": lambda: tar_of([d("a"), f("a")]),
    "implicit folder then file": lambda: tar_of([f("a/x"), f("a")]),
    "case clash": lambda: tar_of([f("README"), f("readme")]),
    "file under a file": lambda: tar_of([f("a"), f("a/b")]),
    "pax path override out": lambda: tar_of([(m("innocent", pax={"path": "../evil"}), b"x")]),
    "pax linkpath override out": lambda: tar_of([(m("l", tarfile.SYMTYPE, link="ok",
                                                    pax={"linkpath": "/etc"}), None)]),
    "pax hard linkpath out": lambda: tar_of([(m("h", tarfile.LNKTYPE, link="ok",
                                               pax={"linkpath": "../../etc/passwd"}), None)]),
    "GNU long name out": lambda: tar_of([f("../" * 40 + "x")], tarfile.GNU_FORMAT),
    "symlink named as the root": lambda: tar_of([sym(".", "x")]),
    "symlink named ./": lambda: tar_of([sym("./", "x")]),
    "file named as the root": lambda: tar_of([f(".")]),
    "hard link named as the root": lambda: tar_of([f("t"), hard("./", "t")]),
    "a link's folder taken by a file": lambda: tar_of([f("b"), sym("a/a", "../b"), f("a")]),
    "a link's folder taken by a link": lambda: tar_of([sym("a/a", "x"), sym("a", "b")]),
    "a file over a link's name": lambda: tar_of([sym("l", "t"), f("t"), f("l")]),
    "a file too large": lambda: tar_of([f("big", b"x" * ((5 << 20) + 1))]),
    "a link out of the stripped top folder": lambda: tar_of([f("a/t", b"t"),
                                                             sym("a/b/l", "../../a/t")]),
    "a link to the stripped top folder": lambda: tar_of([f("a/t"), sym("a/l", "..")]),
    "a link that steps down, then climbs out of the top folder": lambda: tar_of([
        f("a/t"), d("a/x"), sym("a/l", "x/../../a/t")]),
}


GOOD: dict[str, tuple[Callable[[], bytes], dict[str, str]]] = {
    # name -> (archive, what the release holds: path -> "file:DATA", "dir", "link:TARGET")
    "files, folders and links": (lambda: tar_of([
        d("app"), d("app/bin"), f("app/bin/tool", b"#!/bin/sh\n", 0o755), f("app/lib/a", b"a"),
        sym("app/bin/alias", "tool"), sym("app/current-lib", "lib"),
        sym("app/lib/deep/up", "../a"), hard("app/lib/b", "app/lib/a")]),
        {"bin": "dir", "bin/tool": "file:#!/bin/sh\n", "lib": "dir", "lib/a": "file:a",
         "lib/b": "file:a", "lib/deep": "dir", "bin/alias": "link:tool",
         "current-lib": "link:lib", "lib/deep/up": "link:../a"}),
    "a root folder entry and dotted names": (lambda: tar_of([
        d("./"), f("./x", b"1"), f("..hidden", b"2"), sym("l", "./x")]),
        {"x": "file:1", "..hidden": "file:2", "l": "link:./x"}),
    "a link made before its target": (lambda: tar_of([sym("a/l", "../t"), f("t", b"t")]),
                                      {"a": "dir", "a/l": "link:../t", "t": "file:t"}),
    "a link inside through dots": (lambda: tar_of([f("a/t", b"t"), f("x", b"x"),
                                                  sym("a/b/l", "../../a/./t")]),
                                   {"a": "dir", "a/t": "file:t", "a/b": "dir", "x": "file:x",
                                    "a/b/l": "link:../../a/./t"}),
    "a link inside the stripped top folder": (lambda: tar_of([f("top/t", b"t"),
                                                             sym("top/b/l", ".././t")]),
                                              {"t": "file:t", "b": "dir", "b/l": "link:.././t"}),
    "a link through a sibling inside the top folder": (lambda: tar_of([
        f("top/t", b"t"), d("top/c"), sym("top/b/l", "../c/../t")]),
        {"t": "file:t", "b": "dir", "c": "dir", "b/l": "link:../c/../t"}),
}


def _snapshot(outside: Path) -> set[str]:
    found = set()
    for dirpath, dirnames, filenames in os.walk(outside):
        for n in dirnames + filenames:
            p = os.path.join(dirpath, n)
            if "/stage-" not in p:
                found.add(p)
    return found


def _extract(data: bytes, staging: Path) -> Path:
    with tempfile.TemporaryFile() as fh:
        fh.write(data)
        fh.seek(0)
        return archive.extract(fh, "tar", staging, LIMITS, "app")


Extract = Callable[[bytes, Path], Path]  # the archive's bytes, an empty staging folder


def _staged(data: bytes, outside: Path, extract: Extract) -> Path:
    return extract(data, Path(tempfile.mkdtemp(prefix="stage-", dir=outside)))


def check_hostile(name: str, workdir: Path, extract: Extract = _extract) -> str:
    """"" when `name` is refused as it must be, else what went wrong; `extract`: how the
    archive reaches the extractor (a file; tests/test_streaming.py streams it)."""
    outside = workdir / "outside"
    outside.mkdir()
    (outside / "bystander").write_text("untouched")
    before = _snapshot(outside)
    try:
        _staged(HOSTILE[name](), outside, extract)
    except ArchiveError as e:
        if not str(e).startswith("member "):
            return f"refused without naming the member: {e}"
    except Exception as e:
        return f"raised {type(e).__name__}: {e}"
    else:
        return "extracted"
    if _snapshot(outside) != before or (outside / "bystander").read_text() != "untouched":
        return "changed something outside the staging folder"
    return ""


def check_good(name: str, workdir: Path, extract: Extract = _extract) -> str:
    outside = workdir / "outside"
    outside.mkdir()
    make, expected = GOOD[name]
    try:
        root = _staged(make(), outside, extract)
    except Exception as e:
        return f"refused: {e}"
    found: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for n in dirnames + filenames:
            p = Path(dirpath) / n
            rel = str(p.relative_to(root))
            if p.is_symlink():
                found[rel] = f"link:{os.readlink(p)}"
            elif p.is_dir():
                found[rel] = "dir"
            else:
                found[rel] = f"file:{p.read_text()}"
    return "" if found == expected else f"extracted {found}, not {expected}"


def main() -> int:
    """Every case; one line per failure, then the counts in the form test runners print."""
    failed = 0
    with tempfile.TemporaryDirectory() as tmp:
        for i, (name, check) in enumerate([*((n, check_hostile) for n in HOSTILE),
                                           *((n, check_good) for n in GOOD)]):
            work = Path(tmp) / str(i)
            work.mkdir()
            problem = check(name, work)
            if problem:
                failed += 1
                print(f"FAILED {name}: {problem}")
    total = len(HOSTILE) + len(GOOD)
    print(f"python {sys.version.split()[0]}, tarfile.data_filter "
          f"{'present' if hasattr(tarfile, 'data_filter') else 'absent'}")
    print(f"corpus: {total - failed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
