"""Delta updates: a release built from a kept one and a pack of what changed.

In-process through the FeedSimulator: the plan (a pack when its base is on disk, else the full
artifact), the same tree as a full install, and a hostile feed, where every case ends in a clean
full install with `releases/` holding exactly what it should. A property test over random trees
and edits, and the publisher's side through `updaterd publish`."""

from __future__ import annotations

import io
import os
import random
import shutil
import tarfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import msgspec
import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.simulator import PLATFORM, FeedSimulator, SimHost, tar_gz
from updaterd.errors import DownloadError
from updaterd.install import delta
from updaterd.release.publish import _extract_for_delta
from updaterd.trust import archive, treehash
from updaterd.trust.feed import Artifact

T = TypeVar("T")


def run(call: Callable[[], Awaitable[T]]) -> T:
    return trio.run(call)


def many_files(version: str, changed: str = "", count: int = 200) -> dict[str, tuple[bytes, int]]:
    """A release of `count` files, the same in every version except `changed` (and VERSION)."""
    files = {f"lib/part{i:03}.txt": (random.Random(i).randbytes(1000), 0o644)
             for i in range(count)}  # they do not compress: a pack must beat the archive
    files["bin/hello"] = (f'#!/bin/sh\necho "hello {version}"\n'.encode(), 0o755)
    files["share/VERSION"] = (f"{version}\n".encode(), 0o644)
    if changed:
        data, mode = files[changed]
        files[changed] = (data + f"changed in {version}\n".encode(), mode)
    return files


@pytest.fixture
def host(tmp_path: Path, sim: FeedSimulator) -> SimHost:
    return SimHost(tmp_path / "host", sim)


def full_tree(sim: FeedSimulator, version: str, tmp: Path) -> dict[str, str]:
    """The tree a full install of `version` makes, from its artifact alone."""
    art = tmp / f"full-{version}.tar.gz"
    art.write_bytes(sim.blobs[f"hello-{version}-{PLATFORM}.tar.gz"])
    return treehash.scan(_extract_for_delta(art, tmp / f"full-{version}"))


def installed_on_delta(host: SimHost, sim: FeedSimulator, tmp_path: Path) -> Any:
    """1.0.0 installed in full, then 1.1.0 (one file changed) published with deltas."""
    sim.release("1.0.0", files=many_files("1.0.0"))
    engine = host.engine()
    run(lambda: engine.update("hello"))
    sim.release("1.1.0", files=many_files("1.1.0", "lib/part007.txt"), deltas=2)
    sim.requests.clear()
    return engine


def assert_clean_full_install(host: SimHost, sim: FeedSimulator, engine: Any,
                              tmp_path: Path) -> None:
    """A hostile or broken delta ends in the full artifact, fetched once, and nothing else."""
    result = run(lambda: engine.update("hello"))
    assert (result.result, result.to_version) == ("installed", "1.1.0")
    assert sim.requests[f"hello-1.1.0-{PLATFORM}.tar.gz"] == 1
    assert host.current() == "1.1.0" and host.releases() == ["1.0.0", "1.1.0"]
    assert host.leftovers() == []
    tree = treehash.load(host.base / "state" / "hello", "1.1.0")
    assert tree is not None and tree.entries == full_tree(sim, "1.1.0", tmp_path)
    base = treehash.load(host.base / "state" / "hello", "1.0.0")
    assert base is not None and not treehash.differences(host.prefix / "releases" / "1.0.0", base)


# -- the plan ---------------------------------------------------------------------------------

def test_a_one_file_change_is_fetched_as_a_pack_and_builds_the_full_tree(
        host: SimHost, sim: FeedSimulator, tmp_path: Path) -> None:
    engine = installed_on_delta(host, sim, tmp_path)
    result = run(lambda: engine.update("hello"))
    assert (result.result, host.current()) == ("installed", "1.1.0")
    pack = sim.descriptor("1.1.0").pack_from("1.0.0")
    assert pack is not None
    cost = pack.size + len(sim.blobs[sim.descriptor_name("1.1.0")])
    said = f"as a delta from 1.0.0: {cost:,} bytes instead of "
    assert said in result.describe("hello")  # what the log and updaterctl print
    assert said in engine.load_state("hello").history[-1].reason  # what `history` shows
    assert pack is not None
    assert [n for n, _ in pack.files] == ["bin/hello", "lib/part007.txt", "share/VERSION"]
    assert sim.requests == {"manifest": 1, sim.descriptor_name("1.1.0"): 1,
                            pack.url: 1}  # never the full artifact
    assert pack.size < len(sim.blobs[f"hello-1.1.0-{PLATFORM}.tar.gz"]) / 10
    tree = treehash.load(host.base / "state" / "hello", "1.1.0")
    assert tree is not None and tree.entries == full_tree(sim, "1.1.0", tmp_path)
    assert not treehash.differences(host.prefix / "releases" / "1.1.0", tree)
    assert host.leftovers() == []
    cache = host.base / "cache" / "hello"
    assert not [p.name for p in cache.iterdir()]  # descriptor and pack are dropped


def test_without_a_kept_release_the_descriptor_is_not_even_fetched(
        host: SimHost, sim: FeedSimulator) -> None:
    sim.release("1.0.0", files=many_files("1.0.0"))
    sim.release("1.1.0", files=many_files("1.1.0", "lib/part001.txt"), deltas=2)
    run(lambda: host.engine().update("hello"))
    assert host.current() == "1.1.0"
    assert sim.requests == {"manifest": 1, f"hello-1.1.0-{PLATFORM}.tar.gz": 1}


def _all_new(version: str) -> dict[str, tuple[bytes, int]]:
    """A release whose one file changes entirely in every version."""
    return {"bin/hello": (b"#!/bin/sh\necho " + version.encode() + b"\n", 0o755),
            "share/data.bin": (os.urandom(4000), 0o644)}


def test_a_delta_that_would_cost_more_than_the_archive_is_not_fetched(
        host: SimHost, sim: FeedSimulator, monkeypatch: pytest.MonkeyPatch) -> None:
    """The plan counts signed bytes: when the one file of a release changes entirely, the
    descriptor and the pack cost more than the archive: the pack is never fetched (the
    descriptor, small, is what says so). Today's publish writes no such pack (H151): an
    older publisher's is made here."""
    sim.release("1.0.0", files=_all_new("1.0.0"))
    engine = host.engine()
    run(lambda: engine.update("hello"))
    with monkeypatch.context() as older_publisher:
        older_publisher.setattr(delta, "MIN_SAVING", -10.0)
        sim.release("1.1.0", files=_all_new("1.1.0"), deltas=2)
    sim.requests.clear()
    run(lambda: engine.update("hello"))
    assert host.current() == "1.1.0"
    assert sim.requests == {"manifest": 1, sim.descriptor_name("1.1.0"): 1,
                            f"hello-1.1.0-{PLATFORM}.tar.gz": 1}


def test_h151_publish_writes_no_pack_that_saves_under_a_tenth(
        host: SimHost, sim: FeedSimulator) -> None:
    sim.release("1.0.0", files=_all_new("1.0.0"))
    engine = host.engine()
    run(lambda: engine.update("hello"))
    sim.release("1.1.0", files=_all_new("1.1.0"), deltas=2)
    assert not [n for n in sim.blobs if ".delta" in n], "neither a pack nor a descriptor"
    sim.requests.clear()
    run(lambda: engine.update("hello"))
    assert sim.requests == {"manifest": 1, f"hello-1.1.0-{PLATFORM}.tar.gz": 1}


def test_a_pack_from_the_release_before_the_previous_one_is_used(
        host: SimHost, sim: FeedSimulator, tmp_path: Path) -> None:
    sim.release("1.0.0", files=many_files("1.0.0"))
    engine = host.engine(retain=3)
    run(lambda: engine.update("hello"))
    sim.release("1.1.0", files=many_files("1.1.0", "lib/part001.txt"), deltas=2)
    sim.release("1.2.0", files=many_files("1.2.0", "lib/part002.txt"), deltas=2)
    sim.requests.clear()
    run(lambda: engine.update("hello"))  # 1.2.0, from 1.0.0: 1.1.0 was never installed
    desc = sim.descriptor("1.2.0")
    assert [p.base for p in desc.packs] == ["1.1.0", "1.0.0"]
    pack = desc.pack_from("1.0.0")
    assert pack is not None and sim.requests[pack.url] == 1
    assert sim.requests[f"hello-1.2.0-{PLATFORM}.tar.gz"] == 0
    tree = treehash.load(host.base / "state" / "hello", "1.2.0")
    assert tree is not None and tree.entries == full_tree(sim, "1.2.0", tmp_path)


# -- a hostile or broken delta: a clean full install, releases/ untouched --------------------

def test_a_pack_that_does_not_match_its_digest_falls_back(host: SimHost, sim: FeedSimulator,
                                                          tmp_path: Path) -> None:
    engine = installed_on_delta(host, sim, tmp_path)
    pack = sim.descriptor("1.1.0").packs[0]
    data = sim.blobs[pack.url]
    sim.blobs[pack.url] = data[:-1] + bytes([data[-1] ^ 1])
    assert_clean_full_install(host, sim, engine, tmp_path)


def test_a_missing_pack_falls_back(host: SimHost, sim: FeedSimulator, tmp_path: Path) -> None:
    engine = installed_on_delta(host, sim, tmp_path)
    del sim.blobs[sim.descriptor("1.1.0").packs[0].url]
    assert_clean_full_install(host, sim, engine, tmp_path)


@pytest.mark.parametrize("fault", ["timeout", "truncated", "longer"])
def test_a_pack_that_cannot_be_fetched_whole_falls_back(
        host: SimHost, sim: FeedSimulator, tmp_path: Path, fault: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A slow or stalled server (the fetcher gives up: its retries and timeouts are tested on
    their own), or a pack served shorter or longer than signed."""
    engine = installed_on_delta(host, sim, tmp_path)
    pack = sim.descriptor("1.1.0").packs[0]
    if fault == "timeout":
        from tests.simulator import SimulatedTransport
        real = SimulatedTransport.file

        async def stalled(self: Any, name: str, *args: Any) -> Any:
            if name == pack.url:
                raise DownloadError(f"{pack.url}: no data for 30 s (read timeout)")
            return await real(self, name, *args)

        monkeypatch.setattr(SimulatedTransport, "file", stalled)
    elif fault == "truncated":
        sim.blobs[pack.url] = sim.blobs[pack.url][:-10]
    else:
        sim.blobs[pack.url] += b"\0" * 10
    assert_clean_full_install(host, sim, engine, tmp_path)


@pytest.mark.parametrize("field,value", [("version", "1.0.9"), ("app", "other"),
                                         ("platform", "linux-aarch64"), ("artifact", "1" * 64)])
def test_a_signed_descriptor_of_another_release_or_artifact_falls_back(
        host: SimHost, sim: FeedSimulator, tmp_path: Path, field: str, value: str) -> None:
    """A descriptor describes one full artifact of one release: one made for another version,
    app, platform's build or build could be internally sound and still install the wrong
    program."""
    engine = installed_on_delta(host, sim, tmp_path)
    desc = sim.descriptor("1.1.0")
    setattr(desc, field, value)
    sim.replace_descriptor("1.1.0", desc)
    assert_clean_full_install(host, sim, engine, tmp_path)


@pytest.mark.parametrize("name,entry", [
    ("../escape", "f:644:" + "0" * 64),
    ("/etc/cron.d/x", "f:644:" + "0" * 64),
    ("lib/out", "l:../../../etc"),
    ("lib/part007.txt/inner", "f:644:" + "0" * 64),
    ("LIB/part007.txt", "f:644:" + "0" * 64),
    ("bin/setuid", "f:4755:" + "0" * 64),
    ("dev", "c:0"),
])
def test_a_signed_descriptor_with_a_hostile_entry_falls_back(
        host: SimHost, sim: FeedSimulator, tmp_path: Path, name: str, entry: str) -> None:
    """A signing publisher (or a stolen key) can name any tree: the entry is in the pack's
    changes and the tree digest agrees, so only the extractor's own checks stand between it
    and the disk."""
    engine = installed_on_delta(host, sim, tmp_path)
    desc = sim.descriptor("1.1.0")
    pack = desc.packs[0]
    pack.changed[name] = entry
    record = treehash.load(host.base / "state" / "hello", "1.0.0")
    assert record is not None
    entries = {n: e for n, e in record.entries.items() if n not in pack.removed}
    entries.update(pack.changed)
    desc.tree = delta.tree_digest(entries)
    sim.replace_descriptor("1.1.0", desc)
    assert_clean_full_install(host, sim, engine, tmp_path)
    assert not (host.base / "escape").exists()


def test_a_descriptor_with_a_key_twice_falls_back(host: SimHost, sim: FeedSimulator,
                                                  tmp_path: Path) -> None:
    engine = installed_on_delta(host, sim, tmp_path)
    raw = msgspec.json.encode(sim.descriptor("1.1.0"))
    twice = raw.replace(b'{"schema":1,', b'{"schema":1,"schema":1,', 1)
    assert twice != raw
    sim.replace_descriptor("1.1.0", twice)
    assert_clean_full_install(host, sim, engine, tmp_path)


@pytest.mark.parametrize("lie", ["more than its files", "other bytes, same sizes"])
def test_a_signed_pack_that_lies_falls_back(host: SimHost, sim: FeedSimulator, tmp_path: Path,
                                            lie: str) -> None:
    """A pack whose digest the descriptor signs, but whose content is not the files it lists:
    the extra bytes are refused at the end of the last file, other bytes by the tree check."""
    engine = installed_on_delta(host, sim, tmp_path)
    desc = sim.descriptor("1.1.0")
    pack = desc.packs[0]
    parts = [sim_file(sim, "1.1.0", n) for n, _ in pack.files]
    if lie == "more than its files":
        parts.append(b"\0" * 4096)
    else:
        parts[0] = parts[0][:-1] + b"X"
    import zstandard

    data = zstandard.ZstdCompressor().compress(b"".join(parts))
    pack.reference = []  # a plain frame: no reference needed
    bad = sim.add_blob(pack.url, data, "x")
    pack.size, pack.blake3 = bad.size, bad.blake3 or ""
    sim.replace_descriptor("1.1.0", desc)
    assert_clean_full_install(host, sim, engine, tmp_path)


def test_a_base_release_edited_on_disk_falls_back_and_is_left_as_it_is(
        host: SimHost, sim: FeedSimulator, tmp_path: Path) -> None:
    engine = installed_on_delta(host, sim, tmp_path)
    edited = host.prefix / "releases" / "1.0.0" / "lib" / "part007.txt"
    os.chmod(edited, 0o644)
    edited.write_bytes(b"edited by hand\n")
    result = run(lambda: engine.update("hello"))
    assert result.result == "installed" and host.current() == "1.1.0"
    assert sim.requests[f"hello-1.1.0-{PLATFORM}.tar.gz"] == 1
    assert edited.read_bytes() == b"edited by hand\n"
    assert host.leftovers() == []


def test_an_unchanged_file_edited_in_the_base_is_not_carried_into_the_new_release(
        host: SimHost, sim: FeedSimulator, tmp_path: Path) -> None:
    """Unchanged files are copied from the kept release: one edited there since it was
    installed fails the tree check, and the new release is extracted whole, sharing nothing
    with the edited file."""
    engine = installed_on_delta(host, sim, tmp_path)
    edited = host.prefix / "releases" / "1.0.0" / "lib" / "part100.txt"
    edited.write_bytes(b"edited by hand\n")
    result = run(lambda: engine.update("hello"))
    assert result.result == "installed" and host.current() == "1.1.0"
    assert sim.requests[f"hello-1.1.0-{PLATFORM}.tar.gz"] == 1
    new = host.prefix / "releases" / "1.1.0" / "lib" / "part100.txt"
    assert new.read_bytes() != b"edited by hand\n"
    assert os.stat(new).st_ino != os.stat(edited).st_ino
    assert host.leftovers() == []


def test_unchanged_files_are_copied_from_the_kept_release_never_shared(
        host: SimHost, sim: FeedSimulator, tmp_path: Path) -> None:
    # Row 150 changed this test: unchanged files were hard-linked (the same inode), so an app
    # that rewrote one in place rewrote the kept release too (tests/security).
    engine = installed_on_delta(host, sim, tmp_path)
    run(lambda: engine.update("hello"))
    old, new = (host.prefix / "releases" / v / "lib" for v in ("1.0.0", "1.1.0"))
    assert (new / "part100.txt").read_bytes() == (old / "part100.txt").read_bytes()
    assert os.stat(new / "part100.txt").st_ino != os.stat(old / "part100.txt").st_ino
    assert os.stat(new / "part100.txt").st_nlink == 1
    assert os.stat(new / "part007.txt").st_ino != os.stat(old / "part007.txt").st_ino
    run(lambda: engine.update("hello"))  # nothing new; then 1.0.0 goes with retain = 0
    engine2 = host.engine(retain=0)
    sim.release("1.2.0", files=many_files("1.2.0", "lib/part009.txt"), deltas=2)
    run(lambda: engine2.update("hello"))
    assert host.releases() == ["1.1.0", "1.2.0"]
    rec = treehash.load(host.base / "state" / "hello", "1.1.0")
    assert rec is not None and not treehash.differences(host.prefix / "releases" / "1.1.0", rec)


@pytest.mark.parametrize("name", ["lib/part007.txt", "lib/part100.txt"],
                         ids=["a reference file", "an unchanged file"])
def test_a_base_recorded_differently_is_not_even_tried(host: SimHost, sim: FeedSimulator,
                                                       tmp_path: Path, name: str) -> None:
    """When the record of the kept release says otherwise (a reference file: not what the pack
    expects; an unchanged one: not the tree the descriptor names), the pack is known to fail
    in advance: it is not downloaded (never two downloads of an update)."""
    engine = installed_on_delta(host, sim, tmp_path)
    folder = host.base / "state" / "hello"
    rec = treehash.load(folder, "1.0.0")
    assert rec is not None
    rec.entries[name] = "f:644:" + "1" * 64
    treehash.save(folder, rec)
    pack = sim.descriptor("1.1.0").packs[0]
    run(lambda: engine.update("hello"))
    assert sim.requests[pack.url] == 0 and host.current() == "1.1.0"
    given_up = [e for e in host.events if e.kind == "notice" and e.plan == "full"]
    assert [e.reason for e in given_up] == ["mismatch"]  # counted by its reason (J179)
    assert "the delta to 1.1.0 was not used (from 1.0.0: " in given_up[0].message


def test_j179_a_delta_with_no_pack_from_a_kept_release_is_counted_as_no_base(
        host: SimHost, sim: FeedSimulator, tmp_path: Path) -> None:
    engine = installed_on_delta(host, sim, tmp_path)
    sim.release("1.2.0", files=many_files("1.2.0", "lib/part008.txt"), deltas=1)  # from 1.1.0
    run(lambda: engine.update("hello", version="1.2.0"))
    given_up = [e for e in host.events if e.kind == "notice" and e.plan == "full"]
    assert [(e.version, e.reason) for e in given_up] == [("1.2.0", "no-base")]
    assert "no pack from a release kept here" in given_up[0].message
    assert host.current() == "1.2.0"


def sim_file(sim: FeedSimulator, version: str, name: str) -> bytes:
    raw = sim.blobs[f"hello-{version}-{PLATFORM}.tar.gz"]
    with tarfile.open(fileobj=io.BytesIO(raw)) as tf:
        f = tf.extractfile(f"hello-{version}/{name}")
        assert f is not None
        return f.read()


# -- the property: a pack and a full install give the same tree -------------------------------

names = st.sampled_from(["a", "b", "c.txt", "d/e", "d/f.bin", "g/h/i", "g/j", "k"])
contents = st.binary(max_size=3000) | st.sampled_from([b"", b"same" * 500, bytes(4096)])
trees = st.dictionaries(names, st.tuples(contents, st.sampled_from([0o644, 0o755])),
                        min_size=1, max_size=8)


def _consistent(files: dict[str, tuple[bytes, int]]) -> dict[str, tuple[bytes, int]]:
    """Drop a file whose name is also a folder of another (`d` and `d/e`)."""
    folders = {"/".join(n.split("/")[:i]) for n in files for i in range(1, n.count("/") + 1)}
    return {n: v for n, v in files.items() if n not in folders}


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture])
@given(old=trees, new=trees)
def test_a_pack_builds_exactly_what_the_full_artifact_extracts_to(
        tmp_path_factory: pytest.TempPathFactory, old: dict[str, tuple[bytes, int]],
        new: dict[str, tuple[bytes, int]]) -> None:
    tmp = tmp_path_factory.mktemp("prop")
    old, new = _consistent(old), _consistent(new)
    (tmp / "old.tar.gz").write_bytes(tar_gz(old, "app-1"))
    (tmp / "new.tar.gz").write_bytes(tar_gz(new, "app-2"))
    old_root = _extract_for_delta(tmp / "old.tar.gz", tmp / "old")
    new_root = _extract_for_delta(tmp / "new.tar.gz", tmp / "new")
    of = Artifact(platform=PLATFORM, url="new.tar.gz", size=1, blake3="0" * 64)
    desc, entries = delta.describe(new_root, "app", "2.0.0", of)
    pack, data = delta.make_pack(new_root, entries, old_root, "1.0.0", "p.delta", level=3)
    desc.packs.append(pack)
    desc = delta.decode(delta.compress(desc), "app", "2.0.0", of)
    (tmp / "stage").mkdir()
    base = treehash.record(old_root, "1.0.0")
    planned = delta.plan(desc, desc.packs[0], base)
    assert planned == entries
    root = delta.build(tmp / "stage", planned, desc.packs[0], io.BytesIO(data), old_root, base,
                       archive.ExtractLimits(1000, 1 << 30, 1 << 30))
    assert treehash.scan(root) == treehash.scan(new_root) == entries
    unchanged = {n for n in new if n in old and old[n][0] == new[n][0]}
    assert not unchanged & {n for n, _ in pack.files}  # from the kept release instead
    shutil.rmtree(tmp)


def test_a_descriptor_that_expands_past_its_cap_falls_back(
        host: SimHost, sim: FeedSimulator, tmp_path: Path) -> None:
    """A compressed descriptor is read through a cap, whatever its frame claims."""
    engine = installed_on_delta(host, sim, tmp_path)
    sim.replace_descriptor("1.1.0", b" " * (delta.MAX_DESCRIPTOR + 1))
    assert_clean_full_install(host, sim, engine, tmp_path)


def test_an_artifact_that_does_not_extract_is_published_without_deltas_and_said(
        tmp_path: Path) -> None:
    """Deltas save bytes; they never stop a publish (the hosts judge the archive); the
    publisher is told why there is none (it was a log line, or nothing at all)."""
    from updaterd.release.publish import keygen, publish

    _, key = keygen(str(tmp_path / "k"))
    feed_dir = tmp_path / "feed"
    for version in ("1.0.0", "1.1.0"):
        art = tmp_path / f"a-{version}-linux-x86_64.tar.gz"
        art.write_bytes(b"not a gzip file")
        done = publish(feed_dir=feed_dir, key_path=key, app="a", version=version,
                       artifacts=[art])
    assert [a.platform for a in done.manifest.releases[-1].artifacts] == ["linux-x86_64"]
    assert any(line.startswith("  no delta packs: it does not extract") for line in done.lines)


def with_shared(version: str, changed: str = "", conf: str = "shipped") -> dict[str,
                                                                               tuple[bytes, int]]:
    files = many_files(version, changed)
    files["etc/notes.conf"] = (f"{conf}\n".encode(), 0o644)
    files["data/seed.txt"] = (b"seed\n", 0o644)
    return files


def test_j179_an_app_with_shared_paths_takes_deltas_and_keeps_its_data(
        host: SimHost, sim: FeedSimulator, tmp_path: Path) -> None:
    """The README's own layout: `shared = ["data", "etc/notes.conf"]`. Every update fell back
    to the full archive ('... is not the tree the descriptor names'): the kept release is
    recorded with links where it shipped those paths. Now the pack is planned against the
    release as published and builds all but the shared paths, which the links replace."""
    sim.release("1.0.0", files=with_shared("1.0.0"))
    engine = host.engine(shared=["data", "etc/notes.conf"])
    run(lambda: engine.update("hello"))
    shared = host.prefix / "shared"
    (shared / "etc" / "notes.conf").write_text("the operator's\n")
    (shared / "data" / "written").write_text("the app's\n")
    # 1.2.0 changes the file it ships at a shared path: its pack reads the old one, which
    # this host no longer has (it is the operator's now), so 1.2.0 comes whole; 1.3.0 does not
    for version, conf, as_delta in (("1.1.0", "shipped", True), ("1.2.0", "changed", False),
                                    ("1.3.0", "changed", True)):
        sim.release(version, files=with_shared(version, "lib/part007.txt", conf), deltas=2)
        sim.requests.clear()
        result = run(lambda: engine.update("hello"))
        assert (result.result, host.current()) == ("installed", version)
        full = f"hello-{version}-{PLATFORM}.tar.gz"
        assert (full not in sim.requests) == as_delta, sim.requests
        assert ("as a delta from" in result.describe("hello")) == as_delta
        given_up = [e for e in host.events if e.kind == "notice" and e.plan == "full"
                    and e.version == version]
        assert [e.reason for e in given_up] == ([] if as_delta else ["shared"]), given_up
        rec = treehash.load(host.base / "state" / "hello", version)
        published = full_tree(sim, version, tmp_path)
        assert rec is not None and treehash.as_published(rec) == published
        assert not treehash.differences(host.prefix / "releases" / version, rec)
        release = host.prefix / "releases" / version
        on_disk = {n: e for n, e in treehash.scan(release).items()
                   if n not in ("data", "etc/notes.conf")}
        assert on_disk == {n: e for n, e in published.items()
                           if not n.startswith("data") and n != "etc/notes.conf"}
        assert os.readlink(release / "data") == "../../shared/data"
        assert (release / "etc" / "notes.conf").read_text() == "the operator's\n"
        assert (release / "data" / "written").read_text() == "the app's\n"
    assert host.leftovers() == []


def test_j179_a_pack_that_reads_a_shared_path_is_refused_before_it_is_fetched(
        host: SimHost, sim: FeedSimulator, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO")
    sim.release("1.0.0", files=with_shared("1.0.0"))
    engine = host.engine(shared=["data", "etc/notes.conf"])
    run(lambda: engine.update("hello"))
    sim.release("1.1.0", files=with_shared("1.1.0", conf="shipped, a line more"), deltas=2)
    pack = sim.descriptor("1.1.0").pack_from("1.0.0")
    assert pack is not None and "etc/notes.conf" in [n for n, _ in pack.reference]
    sim.requests.clear()
    result = run(lambda: engine.update("hello"))
    assert (result.result, host.current()) == ("installed", "1.1.0")
    assert pack.url not in sim.requests  # known before the pack is downloaded
    assert "no delta from 1.0.0: the pack reads etc/notes.conf, which this host keeps in " \
           "shared/" in caplog.text
