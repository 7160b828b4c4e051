"""`make bench`: updaterd measured side by side with the tools an operator would use instead.

Every figure is a median of several runs, and every ratio compares two figures from the same
run (ours / theirs, for times: above 1 means slower). Writes bench/results.md and
bench/throughput.png. `--quick` shrinks every size so CI can keep the harness working.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio

from tests.servers.nginx import running_nginx
from updaterd import fsutil
from updaterd.trust import archive, digests, treehash

BIN = Path(sys.executable).parent
HERE = Path(__file__).resolve().parent
MIB = 1 << 20


@dataclass
class Row:
    section: str
    what: str
    ours: float
    theirs_name: str = ""
    theirs: float | None = None
    unit: str = "s"

    @property
    def ratio(self) -> float | None:
        return self.ours / self.theirs if self.theirs else None


def median_time(fn: Callable[[], object], runs: int, before: Callable[[], object] | None = None) \
        -> float:
    times = []
    for _ in range(runs):
        if before is not None:
            before()
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def paired_times(ours: Callable[[], object], theirs: Callable[[], object], runs: int,
                 before: Callable[[], object] | None = None) -> tuple[float, float]:
    """Medians of both, their runs taken in turn (theirs, ours, theirs, ours ...): a disk's or
    a CPU's slow minute then falls on both sides instead of on whichever ran in it."""
    times: tuple[list[float], list[float]] = ([], [])
    for _ in range(runs):
        for i, fn in ((1, theirs), (0, ours)):
            if before is not None:
                before()
            start = time.perf_counter()
            fn()
            times[i].append(time.perf_counter() - start)
    return statistics.median(times[0]), statistics.median(times[1])


def sh(*cmd: str, cwd: Path | None = None) -> None:
    """Run a command quietly; its stderr is shown only when it fails."""
    r = subprocess.run(cmd, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    if r.returncode != 0:
        raise RuntimeError(f"{cmd[0]} failed ({r.returncode}): {r.stderr.decode()[-2000:]}")


def random_file(path: Path, size: int) -> None:
    with open(path, "wb") as f:
        left = size
        while left:
            n = min(left, 8 * MIB)
            f.write(os.urandom(n))
            left -= n


# -- 1. download -------------------------------------------------------------------------------

def bench_download(tmp: Path, size: int, runs: int) -> list[Row]:
    rows = []
    with running_nginx(tmp / "nginx") as nginx:
        art = nginx.root / "artifact.bin"
        random_file(art, size)
        d = digests.of_file(str(art))
        url = nginx.url("artifact.bin")
        out = tmp / "dl"
        out.mkdir()

        def clear() -> None:
            for p in out.iterdir():
                p.unlink()
            os.sync()  # neither side inherits the other's dirty pages

        fetch_times: list[float] = []

        def ours_fetch() -> None:
            r = subprocess.run([sys.executable, "-m", "bench.fetch_one", url, str(out / "a"),
                                str(size), d.sha256, d.blake3], capture_output=True, text=True,
                               check=True)
            fetch_times.append(float(r.stdout.split()[1]))

        ours, curl = paired_times(ours_fetch, lambda: sh("curl", "-s", "-o", str(out / "c"), url),
                                  runs, clear)
        curl_sums = median_time(lambda: sh("sh", "-c", f"curl -s -o {out}/s {url} && "
                                           f"sha256sum {out}/s >/dev/null && "
                                           f"b3sum {out}/s >/dev/null"), runs, clear)
        art.unlink()
    mib = size / MIB
    rows.append(Row("download", f"{mib:.0f} MiB, sha256+blake3 on the way", ours, "curl -o",
                    curl))
    rows.append(Row("download", f"{mib:.0f} MiB, the same, as the running daemon does it "
                    "(the process's start and imports left out)", statistics.median(fetch_times),
                    "curl -o", curl))
    rows.append(Row("download", f"{mib:.0f} MiB, verified", ours,
                    "curl -o; sha256sum; b3sum", curl_sums))
    return rows


# -- 2. verification on disk -------------------------------------------------------------------

def bench_verify(tmp: Path, size: int, runs: int) -> list[Row]:
    path = tmp / "verify.bin"
    random_file(path, size)

    def ours_sha256() -> None:
        import hashlib
        with open(path, "rb") as f:
            hashlib.file_digest(f, "sha256")

    def ours_blake3() -> None:
        import blake3
        blake3.blake3(max_threads=blake3.blake3.AUTO).update_mmap(str(path))

    rows = [
        Row("verify", "sha256", median_time(ours_sha256, runs), "sha256sum",
            median_time(lambda: sh("sha256sum", str(path)), runs)),
        Row("verify", "blake3", median_time(ours_blake3, runs), "b3sum",
            median_time(lambda: sh("b3sum", str(path)), runs)),
        Row("verify", "sha256+blake3, one pass (what a download computes)",
            median_time(lambda: digests.of_file(str(path)), runs), "sha256sum; b3sum",
            median_time(lambda: sh("sh", "-c", f"sha256sum {path} >/dev/null && "
                                   f"b3sum {path} >/dev/null"), runs)),
    ]
    path.unlink()
    return rows


# -- 3. install (safe extraction) --------------------------------------------------------------

def release_tree(root: Path, size: int, small_files: int) -> None:
    (root / "bin").mkdir(parents=True)
    (root / "lib").mkdir()
    big = (size - small_files * 1024) // 3
    for i in range(3):
        random_file(root / "lib" / f"big{i}.bin", big)
    for i in range(small_files):
        sub = root / "share" / f"d{i // 100}"
        sub.mkdir(parents=True, exist_ok=True)
        (sub / f"f{i}.txt").write_bytes(os.urandom(512).hex().encode())
    (root / "bin" / "app").write_text("#!/bin/sh\necho hi\n")
    (root / "bin" / "app").chmod(0o755)


def one_file_tree(root: Path, size: int) -> None:
    """A release of one large incompressible file (and the app's script)."""
    (root / "bin").mkdir(parents=True)
    random_file(root / "blob", size)
    (root / "bin" / "app").write_text("#!/bin/sh\n")
    (root / "bin" / "app").chmod(0o755)


def bench_install(tmp: Path, size: int, small_files: int, runs: int) -> list[Row]:
    src = tmp / "src"
    release_tree(src / "app-1.0", size, small_files)
    arts = {"tar.gz": tmp / "r.tar.gz", "tar.zst": tmp / "r.tar.zst", "zip": tmp / "r.zip"}
    sh("tar", "-C", str(src), "-czf", str(arts["tar.gz"]), "app-1.0")
    sh("tar", "-C", str(src), "--zstd", "-cf", str(arts["tar.zst"]), "app-1.0")
    sh("zip", "-qr", str(arts["zip"]), "app-1.0", cwd=src)
    shutil.rmtree(src)
    limits = archive.ExtractLimits(max_members=10**6, max_total=1 << 40, max_file=1 << 40)
    rows = []
    places = {"disk": tmp / "x", "tmpfs": Path(tempfile.mkdtemp(dir="/dev/shm"))}
    try:
        for where, base in places.items():
            base.mkdir(exist_ok=True)
            for kind, art in arts.items():
                dest = base / "out"

                def clear(dest: Path = dest) -> None:
                    shutil.rmtree(dest, ignore_errors=True)
                    dest.mkdir()
                    os.sync()  # neither side pays for the other's writeback

                def ours(art: Path = art, kind: str = kind, dest: Path = dest,
                         durable: bool = where == "disk") -> None:
                    with open(art, "rb") as f:
                        root = archive.extract(f, kind, dest, limits, "app")  # type: ignore[arg-type]
                    if durable:  # what an install does before the rename into releases/
                        fsutil.make_durable(root)

                tool = (["unzip", "-q", str(art), "-d", str(dest)] if kind == "zip" else
                        ["tar", "--zstd" if kind == "tar.zst" else "-z", "-xf", str(art), "-C",
                         str(dest)])
                mine, theirs = paired_times(ours, lambda tool=tool: sh(*tool), runs, clear)
                rows.append(Row("install", f"{kind} on {where} ({size // MIB} MiB, "
                                f"{small_files} small files)", mine,
                                "unzip" if kind == "zip" else "tar -xf", theirs))
                clear()
    finally:
        shutil.rmtree(places["tmpfs"], ignore_errors=True)
    for art in arts.values():
        art.unlink()
    return rows


# -- 3b. re-hash a kept release (`updaterd verify`, a rollback's check, a release's record) ----

def bench_rehash(tmp: Path, size: int, small_files: int, runs: int) -> list[Row]:
    """treehash.scan, which walks by descriptor (fdtree: an O_PATH open and a fstat per entry),
    beside b3sum over the same files."""
    root = tmp / "rehash" / "app"
    release_tree(root, size, small_files)
    files = tmp / "rehash" / "files"
    sh("sh", "-c", f"cd {root} && find . -type f > {files}")

    def theirs() -> None:
        sh("sh", "-c", f"cd {root} && xargs -a {files} -d '\\n' b3sum > /dev/null")

    mine, other = paired_times(lambda: treehash.scan(root), theirs, runs)
    shutil.rmtree(tmp / "rehash")
    return [Row("re-hash", f"a release ({size // MIB} MiB, {small_files} small files)", mine,
                "find; b3sum", other)]


# -- 4. a whole update, and 7b. its peak memory ------------------------------------------------

def _feed(nginx_root: Path, work: Path, artifact: Path, version: str) -> tuple[str, str]:
    """Publish `artifact` into a signed feed under nginx; returns (feed folder name, pubkey)."""
    from updaterd.release.publish import keygen, publish

    pub, key = keygen(str(work / "bench-key"), force=True)
    folder = nginx_root / "feed"
    publish(feed_dir=folder, key_path=key, app="app", version=version, artifacts=[artifact],
            platform="linux-x86_64")
    return "feed", pub.read_text().splitlines()[1]


def _config(work: Path, url: str, pub: str, prefix: Path, health: bool = True,
            auto_update: bool = True) -> Path:
    """An app following the feed at `url` (with the sample app's health check, unless not).
    Its daemon's socket is `work/sock`; without `auto_update` a daemon checks at start and
    installs only when asked, so that an update can be timed from a running daemon."""
    cfg = work / "bench.toml"
    check = 'health_check = ["bin/app"]\n' if health else ""
    check += "" if auto_update else "auto_update = false\n"
    cfg.write_text(f"""[daemon]
state_dir = "{work}/state"
cache_dir = "{work}/cache"
lock_file = "{work}/lock"
socket = "{work}/sock"
platform = "linux-x86_64"
[apps.app]
source = "manifest"
url = "{url}"
public_keys = ["{pub}"]
allow_insecure = true
prefix = "{prefix}"
{check}""")
    return cfg


def run_peak(cmd: list[str]) -> tuple[float, float]:
    """Wall time and peak resident memory (MiB) of one command.

    VmHWM is read from /proc while it runs: rusage's maxrss would also count the pages the
    child shared with this (large) process between fork and exec.
    """
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    peak = 0
    status = Path(f"/proc/{proc.pid}/status")
    while proc.poll() is None:
        try:
            text = status.read_text()
        except OSError:
            break
        for line in text.splitlines():  # Popen returns after exec: this is the new program
            if line.startswith("VmHWM:"):
                peak = max(peak, int(line.split()[1]))
        time.sleep(0.1)
    if proc.wait() != 0:
        raise RuntimeError(f"{cmd[0]} failed with {proc.returncode}")
    return time.perf_counter() - start, peak / 1024


def bench_whole_update(tmp: Path, size: int, small_files: int, runs: int,
                       big: int) -> list[Row]:
    work = tmp / "whole"
    work.mkdir()
    src = work / "src"
    release_tree(src / "app-1.0.0", size, small_files)
    art = work / "app-1.0.0-linux-x86_64.tar.gz"
    sh("tar", "-C", str(src), "-czf", str(art), "app-1.0.0")
    shutil.rmtree(src)
    rows = []
    with running_nginx(work / "nginx") as nginx:
        name, pub = _feed(nginx.root, work, art, "1.0.0")
        url = nginx.url(f"{name}/manifest.json")
        sha = digests.of_file(str(art)).sha256
        prefix = work / "opt"

        def fresh() -> None:
            for p in (prefix, work / "state", work / "cache", work / "dl"):
                shutil.rmtree(p, ignore_errors=True)

        cfg = _config(work, url, pub, prefix)
        ours = median_time(lambda: sh(str(BIN / "updaterd"), "--config", str(cfg), "--once"),
                           runs, fresh)
        script = f"""set -e
curl -sf -o /dev/null {url}
mkdir -p {work}/dl {prefix}/releases/1.0.0
curl -sf -o {work}/dl/a.tar.gz {nginx.url(f"{name}/{art.name}")}
echo "{sha}  {work}/dl/a.tar.gz" | sha256sum -c --quiet
tar -xzf {work}/dl/a.tar.gz -C {prefix}/releases/1.0.0 --strip-components=1
ln -sfn releases/1.0.0 {prefix}/current.tmp && mv -T {prefix}/current.tmp {prefix}/current
{prefix}/current/bin/app >/dev/null
"""
        theirs = median_time(lambda: sh("sh", "-c", script), runs, fresh)
        rows.append(Row("update", f"check, download, verify, stage, switch, health "
                        f"({size // MIB} MiB, {small_files} small files)", ours,
                        "curl; sha256sum; tar; ln (no signature, no fsync)", theirs))
        fresh()
        shutil.rmtree(nginx.root / name)
        # peak memory while downloading and installing one large artifact
        bigsrc = work / "big"
        one_file_tree(bigsrc / "app-2.0.0", big)
        bigart = work / "app-2.0.0-linux-x86_64.tar"
        sh("tar", "-C", str(bigsrc), "-cf", str(bigart), "app-2.0.0")
        shutil.rmtree(bigsrc)
        name, pub = _feed(nginx.root, work, bigart, "2.0.0")
        bigart.unlink()
        cfg = _config(work, nginx.url(f"{name}/manifest.json"), pub, prefix)
        wall, peak = run_peak([str(BIN / "updaterd"), "--config", str(cfg), "--once"])
        rows.append(Row("footprint", f"peak memory, downloading and installing "
                        f"{big / 2**30:.2f} GiB ({wall:.0f} s)", peak, unit="MiB"))
        fresh()
    return rows


# -- 4b. streaming installs: the whole update against the download alone (row 183) ---------

def bench_stream(tmp: Path, size: int, small_files: int, one_file: int, runs: int,
                 rate: str) -> list[Row]:
    """The whole update of a tar.gz, which streams (download, hash and unpack in one pass),
    beside the download alone and `curl | tar` on a link capped at `rate` (nginx's
    limit_rate: every client alike) and on loopback; then one large file on loopback."""
    work = tmp / "stream"
    work.mkdir()
    prefix, out = work / "opt", work / "out"
    rows = []
    with running_nginx(work / "nginx", http_extra=f"location /capped/ {{ limit_rate {rate}; "
                       "alias " + str(work / "nginx" / "www" / "feed") + "/; }") as nginx:
        for tree_size, files in ((size, small_files), (one_file, 0)):
            src = work / "src"
            if files:
                release_tree(src / "app-1.0.0", tree_size, files)
            else:
                one_file_tree(src / "app-1.0.0", tree_size)
            art = work / "app-1.0.0-linux-x86_64.tar.gz"
            sh("tar", "-C", str(src), "-czf", str(art), "app-1.0.0")
            shutil.rmtree(src)
            name, pub = _feed(nginx.root, work, art, "1.0.0")
            sha = digests.of_file(str(art)).sha256
            what = f"{tree_size // MIB} MiB, {files} files" if files else \
                f"{tree_size // MIB} MiB in one file"

            def fresh() -> None:
                for p in (prefix, work / "state", work / "cache", out, work / "dl"):
                    shutil.rmtree(p, ignore_errors=True)
                out.mkdir()
                os.sync()

            links = (("capped", f"a link capped at {rate}/s"), (name, "loopback")) if files \
                else ((name, "loopback"),)
            for folder, where in links:
                url = nginx.url(f"{folder}/{art.name}")
                cfg = _config(work, nginx.url(f"{folder}/manifest.json"), pub, prefix)
                ours = median_time(lambda cfg=cfg: sh(str(BIN / "updaterd"), "--config",
                                                      str(cfg), "--once"), runs, fresh)
                pipe = median_time(lambda url=url: sh(
                    "sh", "-c", f"curl -sf {url} | tar -xzf - -C {out}"), runs, fresh)
                rows.append(Row("stream", f"whole update, {where} ({what})", ours,
                                "curl | tar -xzf - (nothing verified)", pipe))
                if folder == "capped":
                    alone = median_time(lambda url=url: sh("curl", "-sf", "-o", "/dev/null",
                                                           url), runs, fresh)
                    rows.append(Row("stream", f"whole update, {where} ({what})", ours,
                                    "the download alone (curl -o /dev/null)", alone))
                else:
                    script = f"""set -e
mkdir -p {work}/dl
curl -sf -o {work}/dl/a.tar.gz {url}
echo "{sha}  {work}/dl/a.tar.gz" | sha256sum -c --quiet
tar -xzf {work}/dl/a.tar.gz -C {out}
"""
                    three = median_time(lambda script=script: sh("sh", "-c", script), runs,
                                        fresh)
                    rows.append(Row("stream", f"whole update, {where} ({what})", ours,
                                    "curl; sha256sum; tar -xzf", three))
            fresh()
            shutil.rmtree(nginx.root / name)
            art.unlink()
    shutil.rmtree(work)
    return rows


# -- delta updates: bytes and whole-update time against the full artifact -----------------------

def _delta_update(work: Path, nginx: Any, label: str, old: Path, new: Path,
                  runs: int) -> list[Row]:
    """Whole update from `old` to `new` (artifacts): with the feed's delta, and with the full
    artifact only, each from the same host state (old installed); and the bytes each fetched."""
    from updaterd.release.publish import keygen, publish

    times: dict[str, float] = {}
    served: dict[str, float] = {}
    fetched: dict[str, int] = {}
    for plan in ("delta", "full"):
        host = work / f"host-{plan}"
        template = work / f"template-{plan}"
        folder = nginx.root / f"feed-{plan}"
        pub, key = keygen(str(work / f"key-{plan}"), force=True)
        publish(feed_dir=folder, key_path=key, app="app", version="1.0.0", artifacts=[old],
                platform="linux-x86_64", delta_from=0)
        host.mkdir(mode=0o755)
        cfg = _config(host, nginx.url(f"feed-{plan}/manifest.json"),
                      pub.read_text().splitlines()[1], host / "opt", health=False,
                      auto_update=False)
        sh(str(BIN / "updaterd"), "--config", str(cfg), "update", "app")
        sh("cp", "-a", str(host), str(template))
        publish(feed_dir=folder, key_path=key, app="app", version="1.1.0", artifacts=[new],
                platform="linux-x86_64", delta_from=1 if plan == "delta" else 0)

        def restore(host: Path = host, template: Path = template) -> None:
            shutil.rmtree(host)
            sh("cp", "-a", str(template), str(host))
            os.sync()  # the copy's writes are not the update's to make durable

        times[plan] = median_time(
            lambda cfg=cfg: sh(str(BIN / "updaterd"), "--config", str(cfg), "update", "app"),
            runs, restore)
        assert os.readlink(host / "opt" / "current").endswith("1.1.0"), label
        served[plan] = _daemon_update_time(cfg, host / "sock", runs, restore)
        if plan == "delta":
            sent = [p.stat().st_size for p in folder.iterdir()
                    if p.name.startswith(new.name) and p.name != new.name]
            fetched[plan] = sum(sent)  # the descriptor and the one pack
        else:
            fetched[plan] = new.stat().st_size
        shutil.rmtree(folder)
        shutil.rmtree(host)
        shutil.rmtree(template)
    return [Row("delta", f"{label}: whole update, `updaterd update` (a process)",
                times["delta"], "the same update, full artifact", times["full"]),
            Row("delta", f"{label}: whole update, asked of the running daemon",
                served["delta"], "the same update, full artifact", served["full"]),
            Row("delta", f"{label}: bytes fetched", fetched["delta"],
                "full artifact", fetched["full"], unit="B")]


def _daemon_update_time(cfg: Path, sock: Path, runs: int,
                        restore: Callable[[], object]) -> float:
    """Median time of `updaterctl update` answered by a daemon already running and idle (its
    start and first check are not counted: a daemon runs for months)."""
    times = []
    for _ in range(runs):
        restore()
        proc = subprocess.Popen([str(BIN / "updaterd"), "--config", str(cfg)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 60
            while subprocess.run([str(BIN / "updaterctl"), "--socket", str(sock), "check",
                                  "app"], capture_output=True).returncode != 0:
                if time.monotonic() > deadline:  # the daemon is up once a check answers
                    raise RuntimeError("the daemon did not answer `check`")
                time.sleep(0.05)
            start = time.perf_counter()
            sh(str(BIN / "updaterctl"), "--socket", str(sock), "update", "app")
            times.append(time.perf_counter() - start)
        finally:
            proc.terminate()
            proc.wait(30)
    return statistics.median(times)


def _patch_from_bytes(work: Path, old_dir: Path, new_dir: Path) -> tuple[int, int]:
    """`zstd -19 --patch-from` old tar -> new tar, and our descriptor + pack, in bytes."""
    from updaterd.release.publish import keygen, publish

    tars = work / "tars"
    tars.mkdir()
    for d, name in ((old_dir, "old.tar"), (new_dir, "new.tar")):
        sh("tar", "-C", str(d), "-cf", str(tars / name), ".")
    sh("zstd", "-q", "-19", "--long=30", f"--patch-from={tars / 'old.tar'}",
       str(tars / "new.tar"), "-o", str(tars / "patch.zst"))
    patch = (tars / "patch.zst").stat().st_size
    feed = work / "patch-feed"
    _, key = keygen(str(work / "patch-key"), force=True)
    for version, d in (("1.0.0", old_dir), ("1.1.0", new_dir)):
        art = tars / f"app-{version}-linux-x86_64.tar.gz"
        sh("tar", "-C", str(d), "-czf", str(art), ".")
        publish(feed_dir=feed, key_path=key, app="app", version=version, artifacts=[art],
                platform="linux-x86_64", delta_from=1)
    ours = sum(p.stat().st_size for p in feed.iterdir() if ".delta" in p.name
               and p.name.startswith("app-1.1.0"))
    shutil.rmtree(tars)
    shutil.rmtree(feed)
    return ours, patch


def _real_pairs(work: Path) -> list[tuple[str, Path, Path]]:
    """Consecutive releases of real software: this repository at two commits, and two
    versions of a wheel updaterd depends on (pip download; skipped, and said, when offline)."""
    pairs = []
    repo = HERE.parent
    old, new = work / "repo-old", work / "repo-new"
    try:
        for rev, d in (("HEAD~10", old), ("HEAD", new)):
            d.mkdir()
            data = subprocess.run(["git", "-C", str(repo), "archive", rev], check=True,
                                  capture_output=True).stdout
            subprocess.run(["tar", "-x", "-C", str(d)], input=data, check=True)
        pairs.append(("updaterd's source, HEAD~10 -> HEAD", old, new))
    except (subprocess.CalledProcessError, FileNotFoundError) as e:
        print(f"bench: delta: no git history here ({e}); the repository pair is skipped")
    wheels = work / "wheels"
    for version in ("0.18.6", "0.19.0"):  # one at a time: pip resolves one version per name
        got = subprocess.run([str(BIN / "pip"), "download", "-q", "--no-deps", "--only-binary",
                              ":all:", "-d", str(wheels), f"msgspec=={version}"],
                             capture_output=True, text=True, timeout=300)
    found = sorted(wheels.glob("msgspec-*.whl"))
    if len(found) == 2:
        dirs = []
        for whl in found:
            d = work / whl.name.split("-")[1]
            sh("unzip", "-q", str(whl), "-d", str(d))
            dirs.append(d)
        pairs.append(("msgspec wheel 0.18.6 -> 0.19.0", dirs[0], dirs[1]))
    else:
        print("bench: delta: pip download of the msgspec wheels failed (offline?); "
              f"that pair is skipped: {got.stderr.strip()[-200:]}")
    return pairs


def bench_delta(tmp: Path, size: int, small_files: int, runs: int) -> list[Row]:
    work = tmp / "delta"
    work.mkdir()
    rows = []
    with running_nginx(work / "nginx") as nginx:
        src = work / "src"
        release_tree(src / "app-1.0.0", size, small_files)
        old = work / "app-1.0.0-linux-x86_64.tar.gz"
        sh("tar", "-C", str(src), "-czf", str(old), "app-1.0.0")
        (src / "app-1.0.0").rename(src / "app-1.1.0")
        changed = src / "app-1.1.0" / "share" / "d0" / "f0.txt"
        changed.write_bytes(changed.read_bytes() + b"one more line\n")
        new = work / "app-1.1.0-linux-x86_64.tar.gz"
        sh("tar", "-C", str(src), "-czf", str(new), "app-1.1.0")
        shutil.rmtree(src)
        rows += _delta_update(work, nginx, f"one file changed in {size // MIB} MiB, "
                              f"{small_files} files", old, new, runs)
        old.unlink()
        new.unlink()
        for label, old_dir, new_dir in _real_pairs(work):
            ours, patch = _patch_from_bytes(work, old_dir, new_dir)
            rows.append(Row("delta", f"{label}: descriptor + pack", ours,
                            "zstd -19 --patch-from (old tar -> new tar)", patch, unit="B"))
            arts = []
            for version, d in (("1.0.0", old_dir), ("1.1.0", new_dir)):
                art = work / f"app-{version}-linux-x86_64.tar.gz"
                sh("tar", "-C", str(d), "-czf", str(art), ".")
                arts.append(art)
            rows += _delta_update(work, nginx, label, arts[0], arts[1], runs)
            for art in arts:
                art.unlink()
    return rows


# -- 8. a fleet of hosts checking one feed -----------------------------------------------------

def bench_fleet(tmp: Path, hosts: int, spread: float, steady: int = 10) -> list[Row]:
    """`hosts` simulated daemons follow one feed: a first check gets the manifest, then
    `steady` more each, spread over `spread` seconds, send its ETag while nothing is published.
    The steady state is what a fleet costs its feed's server day after day."""
    from updaterd.host.config import Limits
    from updaterd.net.fetcher import Fetcher

    work = tmp / "fleet"
    work.mkdir()
    art = work / "app-1.0.0-linux-x86_64.tar.gz"
    art.write_bytes(os.urandom(1024))
    with running_nginx(work / "nginx") as nginx:
        name, _ = _feed(nginx.root, work, art, "1.0.0")
        url = nginx.url(f"{name}/manifest.json")
        mark = len(nginx.requests())

        async def fleet() -> float:
            import random

            rng = random.Random(7)
            limiter = trio.CapacityLimiter(256)  # sockets this one process may hold at once
            fetchers = [Fetcher(Limits(), allow_insecure=True) for _ in range(32)]
            gap = spread / (steady + 1)

            async def host(i: int) -> None:
                fetcher = fetchers[i % 32]
                await trio.sleep(rng.uniform(0, gap))
                async with limiter:
                    etag = (await fetcher.fetch_small(url, max_bytes=1 << 20)).etag
                for _ in range(steady):
                    await trio.sleep(rng.uniform(0.5 * gap, 1.5 * gap))
                    async with limiter:
                        await fetcher.fetch_small(url, max_bytes=1 << 20, etag=etag)

            start = trio.current_time()
            async with trio.open_nursery() as n:
                for i in range(hosts):
                    n.start_soon(host, i)
            for f in fetchers:
                await f.aclose()
            return float(trio.current_time() - start)

        cpu_before = tree_cpu_seconds(nginx.pid)
        elapsed = trio.run(fleet)
        nginx_cpu = tree_cpu_seconds(nginx.pid) - cpu_before
        reqs = [r for r in nginx.requests()[mark:] if r["uri"].endswith("manifest.json")]
    later = [r for r in reqs if r["inm"]]  # the checks after each host's first
    return [Row("fleet", f"{hosts} hosts x (1 + {steady}) checks over {spread:.0f} s: "
                "requests/s at nginx", len(reqs) / elapsed, unit="req/s"),
            Row("fleet", f"share of 304 Not Modified in the {steady} checks after the first",
                100 * sum(r["status"] == 304 for r in later) / len(later), unit="%"),
            Row("fleet", "bytes sent per check after the first (headers and body)",
                sum(r["sent"] for r in later) / len(later), unit="B"),
            Row("fleet", "bytes sent for a first check (headers and manifest)",
                sum(r["sent"] for r in reqs if not r["inm"]) / (len(reqs) - len(later)),
                unit="B"),
            Row("fleet", "nginx CPU (master and worker), share of one core",
                100 * nginx_cpu / elapsed, unit="%")]


def bench_watch(tmp: Path, hosts: int, spread: float, looks: int = 10) -> list[Row]:
    """`hosts` daemons look at one guarded feed between checks (`watch_interval`), each with
    the daemon's own `watch.changed` over the real HTTP transport: the first look after a
    start reads rollout.json whole, the `looks` after it are conditional. Nothing changes
    meanwhile: this is what the watch costs the feed's server every hour of every day."""
    import hashlib

    from updaterd.host.config import AppConfig, Limits
    from updaterd.host.state import AppState
    from updaterd.net.fetcher import Fetcher
    from updaterd.release import controller
    from updaterd.release.publish import keygen, publish
    from updaterd.sources import watch
    from updaterd.sources.manifest import HttpTransport
    from updaterd.trust import minisign
    from updaterd.trust.feed import RolloutMark

    work = tmp / "watch"
    work.mkdir()
    art = work / "app-1.0.0-linux-x86_64.tar.gz"
    art.write_bytes(os.urandom(1024))
    rollout_key = minisign.SecretKey.generate()
    with running_nginx(work / "nginx") as nginx:
        pub, key = keygen(str(work / "bench-key"), force=True)
        folder = nginx.root / "feed"
        publish(feed_dir=folder, key_path=key, app="app", version="1.0.0", artifacts=[art],
                platform="linux-x86_64", rollout_keys=[rollout_key.public.to_base64()])
        controller.set_state(folder, rollout_key, "1.0.0", "active", "", share=100)
        url = nginx.url("feed/manifest.json")
        manifest = (folder / "manifest.json").read_bytes()
        rollout_doc = (folder / "rollout.json").read_bytes()
        cfg = AppConfig(source="manifest", url=url, allow_insecure=True,
                        public_keys=[pub.read_text().splitlines()[1]])
        mark = len(nginx.requests())

        async def fleet() -> tuple[float, int]:
            import random

            rng = random.Random(7)
            limiter = trio.CapacityLimiter(256)  # sockets this one process may hold at once
            fetchers = [Fetcher(Limits(), allow_insecure=True) for _ in range(32)]
            first = await fetchers[0].fetch_small(url, max_bytes=1 << 20)
            gap = spread / (looks + 1)
            changed = 0

            async def host(i: int) -> None:
                nonlocal changed
                transport = HttpTransport(cfg, fetchers[i % 32])
                st = AppState(serial=1, etag=first.etag, last_modified=first.last_modified,
                              manifest_digest=hashlib.sha256(manifest).hexdigest(),
                              rollout_mark=RolloutMark(keys="k", serial=1, digest=hashlib
                                                       .sha256(rollout_doc).hexdigest()))
                seen = watch.Seen()
                await trio.sleep(rng.uniform(0, gap))
                for n in range(looks + 1):
                    if n:
                        await trio.sleep(rng.uniform(0.5 * gap, 1.5 * gap))
                    async with limiter:
                        changed += await watch.changed(transport, st, Limits(), seen) is not None

            start = trio.current_time()
            async with trio.open_nursery() as n:
                for i in range(hosts):
                    n.start_soon(host, i)
            for f in fetchers:
                await f.aclose()
            return float(trio.current_time() - start), changed

        cpu_before = tree_cpu_seconds(nginx.pid)
        elapsed, changed = trio.run(fleet)
        nginx_cpu = tree_cpu_seconds(nginx.pid) - cpu_before
        reqs = nginx.requests()[mark + 1:]
    assert changed == 0, f"{changed} looks saw a change in a feed nobody touched"
    conditional = [r for r in reqs if r["inm"]]  # every look's manifest, later rollout.json
    per_look_requests = (len(conditional) - hosts) / (hosts * looks)  # less each first look's
    per_look = sum(r["sent"] for r in conditional) / len(conditional) * per_look_requests
    return [Row("watch", f"{hosts} hosts x (1 + {looks}) looks over {spread:.0f} s: "
                "requests/s at nginx", len(reqs) / elapsed, unit="req/s"),
            Row("watch", "requests per look (manifest, and rollout.json once accepted)",
                per_look_requests, unit="req"),
            Row("watch", "share of 304 Not Modified among conditional requests",
                100 * sum(r["status"] == 304 for r in conditional) / len(conditional),
                unit="%"),
            Row("watch", "bytes sent per look (headers and body)", per_look, unit="B"),
            Row("watch", "bytes per host per hour at watch_interval 2m (30 looks)",
                30 * per_look, unit="B"),
            Row("watch", f"{hosts} hosts at watch_interval 2m: requests/s a feed serves",
                hosts * per_look_requests / 120, unit="req/s"),
            Row("watch", "nginx CPU (master and worker), share of one core",
                100 * nginx_cpu / elapsed, unit="%")]


# -- 5. switch and rollback --------------------------------------------------------------------

def bench_switch(tmp: Path, runs: int) -> list[Row]:
    from updaterd.install.layout import Layout

    layout = Layout(tmp / "prefix")
    layout.preflight()
    for v in ("1.0.0", "1.1.0"):
        (layout.releases / v / "bin").mkdir(parents=True)
        (layout.releases / v / "bin" / "app").write_text("#!/bin/sh\n")
        (layout.releases / v / "bin" / "app").chmod(0o755)
    versions = iter(["1.0.0", "1.1.0"] * (runs * 200))
    rename = median_time(lambda: fsutil.replace_symlink(layout.current,
                                                        f"releases/{next(versions)}"),
                         runs * 100)
    switch = median_time(lambda: layout.switch(next(versions), failpoint=""), runs * 100)
    ln = median_time(lambda: sh("ln", "-sfn", "releases/1.0.0", str(layout.current)), runs * 10)
    return [Row("switch", "current swap (symlink + rename + fsync of the folder)", rename * 1000,
                "ln -sfn (no fsync), process included", ln * 1000, "ms"),
            Row("switch", "whole switch or rollback, no restart (+ bin/ links)", switch * 1000,
                "ln -sfn (no fsync), process included", ln * 1000, "ms")]


# -- 6. the control socket ---------------------------------------------------------------------

def start_daemon(tmp: Path, apps: int) -> tuple[subprocess.Popen[bytes], Path]:
    sock = tmp / f"d{apps}.sock"
    (tmp / "feed").mkdir(exist_ok=True)
    cfg = tmp / f"d{apps}.toml"
    text = (f'[daemon]\nstate_dir = "{tmp}/state{apps}"\ncache_dir = "{tmp}/cache{apps}"\n'
            f'lock_file = "{tmp}/lock{apps}"\nsocket = "{sock}"\n')
    for i in range(apps):
        text += (f'[apps.a{i}]\nsource = "directory"\npath = "{tmp}/feed"\n'
                 f'prefix = "{tmp}/opt/a{i}"\ncheck_interval = "24h"\njitter = "1h"\n')
    cfg.write_text(text)
    proc = subprocess.Popen([str(BIN / "updaterd"), "--config", str(cfg)],
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while not sock.exists():
        if time.monotonic() > deadline:
            raise RuntimeError("updaterd did not start")
        time.sleep(0.02)
    return proc, sock


def rpc_latencies(sock: Path, clients: int, per_client: int) -> tuple[float, list[float]]:
    request = b'{"jsonrpc":"2.0","id":1,"method":"status"}\n'
    lat: list[float] = []
    lock = threading.Lock()

    def client() -> None:
        mine = []
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(str(sock))
            f = s.makefile("rb")
            for _ in range(per_client):
                t = time.perf_counter()
                s.sendall(request)
                f.readline()
                mine.append(time.perf_counter() - t)
        with lock:
            lat.extend(mine)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return clients * per_client / (time.perf_counter() - start), sorted(lat)


def bench_socket(tmp: Path, runs: int, quick: bool) -> list[Row]:
    proc, sock = start_daemon(tmp, 1)
    try:
        python = median_time(lambda: sh(sys.executable, "-c", "pass"), runs * 5)
        status = median_time(lambda: sh(str(BIN / "updaterctl"), "--socket", str(sock),
                                        "status"), runs * 5)
        rows = [Row("socket", "updaterctl status, wall time", status, "python3 -c pass",
                    python)]
        for clients in (1, 50):
            rps, lat = rpc_latencies(sock, clients, 50 if quick else 400)
            rows.append(Row("socket", f"status round trips/s, {clients} clients", rps, "",
                            None, "req/s"))
            rows.append(Row("socket", f"p50 latency, {clients} clients",
                            lat[len(lat) // 2] * 1000, unit="ms"))
            rows.append(Row("socket", f"p99 latency, {clients} clients",
                            lat[int(len(lat) * 0.99)] * 1000, unit="ms"))
    finally:
        proc.terminate()
        proc.wait()
    return rows


# -- 7. the daemon's footprint -----------------------------------------------------------------

def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def tree_cpu_seconds(pid: int) -> float:
    """CPU time of a process and its children (nginx's master and workers)."""
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return cpu_seconds(pid) + sum(cpu_seconds(int(c)) for c in children)


def bench_footprint(tmp: Path, quick: bool) -> list[Row]:
    rows = []
    idle = 5.0 if quick else 60.0
    for apps in (1, 100) if quick else (1, 100, 1000):
        proc, _ = start_daemon(tmp, apps)
        try:
            time.sleep(1.0)
            before = cpu_seconds(proc.pid)
            if apps == 1:
                time.sleep(idle)
                rows.append(Row("footprint", f"CPU time over {idle:.0f} idle seconds",
                                cpu_seconds(proc.pid) - before, unit="s"))
            rows.append(Row("footprint", f"resident memory, idle, {apps} apps",
                            rss_mib(proc.pid), unit="MiB"))
        finally:
            proc.terminate()
            proc.wait()
    return rows


# -- results -----------------------------------------------------------------------------------

def write_results(rows: list[Row], quick: bool, started: float) -> str:
    lines = [f"# updaterd benchmarks{' (quick)' if quick else ''}", "",
             f"Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on "
             f"{os.cpu_count()} cores, in {time.time() - started:.0f} s. Medians; ratios are "
             "ours / theirs from the same run (for times, above 1 is slower).", "",
             "| section | what | ours | baseline | baseline figure | ratio |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        digits = 3 if r.unit in ("s", "ms") else 0 if r.unit == "B" else 1
        ours = f"{r.ours:.{digits}f} {r.unit}"
        theirs = f"{r.theirs:.{digits}f} {r.unit}" if r.theirs is not None else "-"
        ratio = f"{r.ratio:.2f}" if r.ratio is not None else "-"
        lines.append(f"| {r.section} | {r.what} | {ours} | {r.theirs_name or '-'} | "
                     f"{theirs} | {ratio} |")
    text = "\n".join(lines) + "\n"
    for fleet in (HERE / "rollout-fleet.md", HERE / "three-am-fleet.md"):
        if not quick and fleet.exists():  # `make fleet-figures` (bench/fleet_plot.py)
            text += "\n" + fleet.read_text()
    (HERE / ("results-quick.md" if quick else "results.md")).write_text(text)
    return text


def plot(rows: list[Row], sizes: dict[str, int], png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    picked = [r for r in rows if r.section in ("download", "install") and r.theirs]
    labels = [f"{r.section}: {r.what.split(' (')[0]}\nvs {r.theirs_name}" for r in picked]
    ours = [sizes[r.section] / MIB / r.ours for r in picked]
    theirs = [sizes[r.section] / MIB / (r.theirs or 1) for r in picked]
    fig, ax = plt.subplots(figsize=(11, 0.55 * len(picked) + 1.5))
    y = range(len(picked))
    ax.barh([i + 0.2 for i in y], ours, height=0.4, label="updaterd")
    ax.barh([i - 0.2 for i in y], theirs, height=0.4, label="baseline tool")
    ax.set_yticks(list(y), labels, fontsize=7)
    ax.set_xlabel("MiB/s (higher is better)")
    ax.set_title("Download and install throughput against the tools an operator would use")
    ax.legend()
    fig.tight_layout()
    fig.savefig(png, dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="small sizes, one run: for CI")
    ap.add_argument("--only", action="append", metavar="PART",
                    help="run only this part (download, verify, install, update, stream, "
                         "switch, socket, footprint, fleet, watch, delta); printed, the results "
                         "files untouched")
    args = ap.parse_args()
    quick = args.quick
    started = time.time()
    runs = 1 if quick else 3
    dl_size = (64 if quick else 1024) * MIB
    inst_size, small = ((20 * MIB, 500) if quick else (200 * MIB, 5000))
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_DIR")) as name:
        tmp = Path(name)
        for label, step in (
                ("download", lambda: bench_download(tmp, dl_size, runs)),
                ("verify", lambda: bench_verify(tmp, dl_size, runs)),
                ("install", lambda: bench_install(tmp, inst_size, small, runs)),
                ("re-hash", lambda: bench_rehash(tmp, inst_size, small, runs)),
                ("update", lambda: bench_whole_update(tmp, inst_size, small, runs,
                                                      (128 if quick else 4096) * MIB)),
                ("stream", lambda: bench_stream(tmp, 20 * MIB if quick else 250 * MIB,
                                                200 if quick else 2000,
                                                32 * MIB if quick else 512 * MIB, runs,
                                                "40m")),
                ("switch", lambda: bench_switch(tmp, runs)),
                ("socket", lambda: bench_socket(tmp, runs, quick)),
                ("footprint", lambda: bench_footprint(tmp, quick)),
                ("fleet", lambda: bench_fleet(tmp, 200 if quick else 2000,
                                              5.0 if quick else 20.0)),
                ("watch", lambda: bench_watch(tmp, 200 if quick else 2000,
                                              5.0 if quick else 20.0)),
                ("delta", lambda: bench_delta(tmp, inst_size, small, runs))):
            if args.only and label not in args.only:
                continue
            print(f"bench: {label} ...", flush=True)
            rows += step()
    if args.only:
        for r in rows:
            print(r)
        return
    print(write_results(rows, quick, started))
    png = HERE / ("throughput-quick.png" if quick else "throughput.png")
    plot(rows, {"download": dl_size, "install": inst_size}, png)
    print(f"wrote the table and {png}")


if __name__ == "__main__":
    main()
