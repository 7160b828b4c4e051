"""Builders shared by the tests: sample releases, feeds, configs, and the real updaterd command."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import zstandard

from updaterd.release.publish import keygen, publish

BIN = Path(sys.executable).parent
REPO = Path(__file__).resolve().parent.parent


def code_of_commit(commit: str, into: Path) -> dict[str, str]:
    """The daemon's and updaterctl's code as they were at `commit`, extracted under `into`;
    returns the environment that runs it (`python -m updaterd`). Skips without the history."""
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("needs the repository's git history")
    found = subprocess.run(["git", "-C", str(REPO), "cat-file", "-e", f"{commit}^{{commit}}"],
                           capture_output=True)
    if found.returncode != 0:
        pytest.skip(f"commit {commit} is not in this clone (a shallow clone?)")
    into.mkdir()
    archive = subprocess.run(["git", "-C", str(REPO), "archive", commit, "daemon", "ctl"],
                             capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    env = dict(os.environ, PYTHONPATH=f"{into / 'daemon'}:{into / 'ctl'}",
               PATH=f"{BIN}:{os.environ['PATH']}")
    where = subprocess.run([sys.executable, "-c", "import updaterd; print(updaterd.__file__)"],
                           env=env, capture_output=True, text=True, check=True).stdout
    assert where.startswith(str(into)), where
    return env
NOBODY = 65534


def as_nobody(work: Callable[[], str], real: bool = False) -> str:
    """`work()` in a forked child running as nobody: the effective ids only, or with `real`
    the real ones too (a daemon that an ordinary user started). Returns what `work` returned,
    or `!ExceptionName: message` when it raised."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: no pytest machinery from here on, only os._exit
        try:
            if real:
                os.setgid(NOBODY)
                os.setuid(NOBODY)
            else:
                os.setegid(NOBODY)
                os.seteuid(NOBODY)
            try:
                out = work()
            except BaseException as e:  # reported to the parent, which asserts on it
                out = f"!{type(e).__name__}: {e}"
            os.write(write, out.encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read) as f:
        out = f.read()
    os.waitpid(pid, 0)
    return out


def app_script(version: str, healthy: bool = True) -> bytes:
    body = f'echo "hello {version}"\n' if healthy else f'echo "broken {version}" >&2\nexit 1\n'
    return f"#!/bin/sh\n{body}".encode()


def release_files(version: str, healthy: bool = True) -> dict[str, tuple[bytes, int]]:
    """The files of a sample release: path -> (content, mode)."""
    return {
        "bin/hello": (app_script(version, healthy), 0o755),
        "share/VERSION": (f"{version}\n".encode(), 0o644),
        "share/data.bin": (os.urandom(2048), 0o644),
    }


def make_tar(path: Path, files: dict[str, tuple[bytes, int]], top: str | None = None) -> Path:
    """A .tar.gz/.tar.xz/.tar.bz2/.tar.zst/.tar of `files`, under folder `top` when given."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name, (data, mode) in files.items():
            info = tarfile.TarInfo(f"{top}/{name}" if top else name)
            info.size, info.mode = len(data), mode
            tf.addfile(info, io.BytesIO(data))
    raw = buf.getvalue()
    name = path.name
    if name.endswith(".tar.gz"):
        import gzip
        raw = gzip.compress(raw)
    elif name.endswith(".tar.xz"):
        import lzma
        raw = lzma.compress(raw)
    elif name.endswith(".tar.bz2"):
        import bz2
        raw = bz2.compress(raw)
    elif name.endswith(".tar.zst"):
        raw = zstandard.ZstdCompressor().compress(raw)
    path.write_bytes(raw)
    return path


def make_zip(path: Path, files: dict[str, tuple[bytes, int]], top: str | None = None) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, (data, mode) in files.items():
            info = zipfile.ZipInfo(f"{top}/{name}" if top else name)
            info.external_attr = (0o100000 | mode) << 16
            zf.writestr(info, data)
    return path


@dataclass
class Feed:
    """A feed folder with its own key, published through updaterd's own publish()."""

    folder: Path
    work: Path
    app: str = "hello"
    pub: str = ""
    key: Path = field(default_factory=Path)

    def __post_init__(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        self.work.mkdir(parents=True, exist_ok=True)
        pub, self.key = keygen(str(self.work / "feed"), force=True)
        self.pub = pub.read_text().splitlines()[1]

    def release(self, version: str, healthy: bool = True, fmt: str = "tar.gz",
                **kw: Any) -> Path:
        """Build a sample release artifact and publish it."""
        name = f"hello-{version}-linux-x86_64.{fmt}"
        art = self.work / name
        files = release_files(version, healthy)
        if fmt == "zip":
            make_zip(art, files, top=f"hello-{version}")
        else:
            make_tar(art, files, top=f"hello-{version}")
        self.publish(version, [art], **kw)
        return art

    def publish(self, version: str, artifacts: list[Path], **kw: Any) -> None:
        kw.setdefault("platform", "linux-x86_64")
        kw.setdefault("delta_from", 0)  # full artifacts only, unless a test asks for deltas
        publish(feed_dir=self.folder, key_path=self.key, app=self.app, version=version,
                artifacts=artifacts, **kw)

    def manifest(self) -> dict[str, Any]:
        return json.loads((self.folder / "manifest.json").read_text())

    def republish_by_hand(self, version: str, art: Path) -> None:
        """What `publish` refuses (H155): `version` pointed at other bytes under a new
        serial, as a hostile or older publisher would write it."""
        from updaterd.trust import digests
        m = self.manifest()
        d = digests.of_file(str(art))
        for release in m["releases"]:
            if release["version"] == version:
                entry = release["artifacts"][0]
                entry.update(size=d.size, sha256=d.sha256, blake3=d.blake3)
                (self.folder / entry["url"]).write_bytes(art.read_bytes())
        m["serial"] += 1
        (self.folder / "manifest.json").write_text(json.dumps(m))
        self.resign()

    def resign(self) -> None:
        """Sign the manifest as it is now (for tests that edit it on purpose)."""
        from updaterd.trust import minisign
        secret = minisign.SecretKey.parse(self.key.read_text())
        raw = (self.folder / "manifest.json").read_bytes()
        (self.folder / "manifest.json.minisig").write_text(secret.sign(raw, "test"))


def toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    raise TypeError(v)


def write_config(path: Path, daemon: dict[str, Any], apps: dict[str, dict[str, Any]],
                 limits: dict[str, Any] | None = None) -> Path:
    lines = ["[daemon]"] + [f"{k} = {toml_value(v)}" for k, v in daemon.items()]
    if limits:
        lines += ["", "[limits]"] + [f"{k} = {toml_value(v)}" for k, v in limits.items()]
    for name, table in apps.items():
        lines += ["", f"[apps.{name}]"] + [f"{k} = {toml_value(v)}" for k, v in table.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def run_updaterd(*args: str | Path, env: dict[str, str] | None = None,
                 timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """The real `updaterd` console script of this environment."""
    full_env = {k: v for k, v in os.environ.items() if k != "UPDATERD_FAILPOINTS"}
    full_env.update(env or {})
    return subprocess.run([str(BIN / "updaterd"), *map(str, args)], capture_output=True,
                          text=True, env=full_env, timeout=timeout, check=False)


def rpc_as(uid: int | str, gid: int | str, sock: Path, payload: str,
           groups: list[int] | None = None) -> dict[str, Any]:
    """One JSON-RPC line sent by another user (setpriv + socat), with no supplementary groups
    or exactly `groups`; the first reply, decoded."""
    extra = f"--groups={','.join(map(str, groups))}" if groups else "--clear-groups"
    r = subprocess.run(["setpriv", f"--reuid={uid}", f"--regid={gid}", extra,
                        "socat", "-t", "5", "-", f"UNIX-CONNECT:{sock}"],
                       input=payload + "\n", capture_output=True, text=True, timeout=20)
    assert r.returncode == 0, r.stderr
    return dict(json.loads(r.stdout.splitlines()[0]))


def self_build(out: Path, version: str, patch: dict[str, tuple[str, str]] | None = None) -> Path:
    """`updaterd self-build` as `version` into `out`; `patch` maps a file of the release
    (`lib/updaterd/service/service.py`) to (old text, new text): how the tests make broken
    builds. A file named that the release does not have fails the test (not a working build)."""
    r = run_updaterd("self-build", "--out", out, "--version", version)
    assert r.returncode == 0, r.stderr
    archive = out / f"updaterd-{version}.tar.gz"
    if patch:
        members: list[tuple[tarfile.TarInfo, bytes | None]] = []
        patched: set[str] = set()
        with tarfile.open(archive) as tar:
            for m in tar.getmembers():
                f = tar.extractfile(m)
                members.append((m, f.read() if f else None))
        with tarfile.open(archive, "w:gz") as tar:
            for m, data in members:
                rel = m.name.split("/", 1)[-1]
                if data is not None and rel in patch:
                    old, new = patch[rel]
                    text = data.decode()
                    assert old in text, (rel, old)
                    data = text.replace(old, new, 1).encode()
                    m.size = len(data)
                    patched.add(rel)
                tar.addfile(m, io.BytesIO(data) if data is not None else None)
        assert patched == set(patch), f"not in the release: {sorted(set(patch) - patched)}"
    return archive
