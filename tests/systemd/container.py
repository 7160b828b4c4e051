"""A stock Debian 12 (or 13) booted with systemd as PID 1 (systemd-nspawn), for the tests of
updaterd's package and units: the container, a command run inside it, a feed in its /srv, its
config, and the package built on the release it is for."""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

from tests.helpers import app_script, make_tar, write_config
from updaterd.release.publish import keygen, publish

REPO = Path(__file__).resolve().parent.parent.parent
ROOTFS = REPO / "build" / "nspawn" / "rootfs"
# the stock root file systems scripts/nspawn-rootfs.sh makes: Debian 12 and Debian 13
ROOTFS_OF = {"bookworm": ROOTFS, "trixie": REPO / "build" / "nspawn" / "rootfs-trixie"}


class Container:
    """A booted container; `sh` runs a command inside it (nsenter into every namespace)."""

    def __init__(self, root: Path, log: Path) -> None:
        self.root, self.log = root, log
        self.proc = subprocess.Popen(
            ["systemd-nspawn", "--quiet", "--register=no", "--keep-unit", "--console=passive",
             "-D", str(root), f"--bind-ro={REPO}:/mnt/host", "--boot"],
            stdin=subprocess.DEVNULL, stdout=open(log, "wb"), stderr=subprocess.STDOUT)  # noqa: SIM115
        self.leader = self._leader()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            state = self.sh("systemctl is-system-running", check=False).stdout.strip()
            if state in ("running", "degraded"):
                return
            time.sleep(0.2)
        raise RuntimeError(f"the container did not boot: {state}\n{log.read_text()}")

    def _leader(self) -> int:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children")
            for pid in children.read_text().split() if children.exists() else []:
                if Path(f"/proc/{pid}/comm").read_text().strip() == "systemd":
                    return int(pid)
            time.sleep(0.05)
        raise RuntimeError(f"no systemd in the container\n{self.log.read_text()}")

    def sh(self, script: str, check: bool = True, timeout: float = 120,
           user: str | None = None) -> subprocess.CompletedProcess[str]:
        prefix = ["setpriv", f"--reuid={user}", f"--regid={user}", "--init-groups"] \
            if user else []
        env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
               "LANG": "C.UTF-8"}
        # the host's way to the package index (its CA bundle is bound in at the same path)
        env.update({k: v for k, v in os.environ.items() if k in ("PIP_CERT", "SSL_CERT_FILE",
                                                                 "PIP_DEFAULT_TIMEOUT")})
        r = subprocess.run(["nsenter", "-t", str(self.leader), "-a", *prefix,
                            "/bin/bash", "-c", script], capture_output=True, text=True,
                           timeout=timeout, env=env)
        if check and r.returncode != 0:
            raise AssertionError(f"{script}\n--- {r.returncode}\n{r.stdout}\n{r.stderr}")
        return r

    def stop(self) -> None:
        self.sh("systemctl poweroff", check=False, timeout=30)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@contextlib.contextmanager
def booted(base: Path, suite: str = "bookworm") -> Iterator[Container]:
    """A fresh copy of the stock root file system of Debian `suite` under `base`, booted, and
    stopped after."""
    stock = ROOTFS_OF[suite]
    assert stock.is_dir(), f"scripts/nspawn-rootfs.sh {suite} builds it (make test-systemd does)"
    root = base / "root"
    subprocess.run(["cp", "-a", str(stock), str(root)], check=True)
    c = Container(root, base / "console.log")
    try:
        yield c
    finally:
        c.stop()


def feed_into(root: Path, versions: list[tuple[str, bool]], big: int = 0,
              app: str = "hello") -> str:
    """A signed feed of `app` in the container's /srv/feed (/srv/feed-APP for another app);
    returns its public key."""
    name = "feed" if app == "hello" else f"feed-{app}"
    feed, work = root / "srv" / name, root / "srv" / "work"
    work.mkdir(parents=True, exist_ok=True)
    key_file = work / "feed.key"
    if not key_file.exists():
        keygen(str(work / "feed"))
    for version, healthy in versions:
        art = work / f"hello-{version}-linux-x86_64.tar.gz"
        files = {"bin/hello": (app_script(version, healthy), 0o755)}
        if big:
            files["share/blob"] = (os.urandom(big), 0o644)
        make_tar(art, files, top=f"hello-{version}")
        publish(feed_dir=feed, key_path=key_file, app=app, version=version,
                artifacts=[art], platform="linux-x86_64")
    return (work / "feed.pub").read_text().splitlines()[1]


def configure(box: Container, pub: str, **extra: dict[str, object]) -> None:
    apps: dict[str, dict[str, object]] = {"hello": {
        "source": "directory", "path": "/srv/feed", "public_keys": [pub],
        "prefix": "/opt/hello", "health_check": ["bin/hello"], "check_interval": "1h",
        "jitter": "0s"}}
    apps.update(extra)
    path = box.root / "etc" / "updaterd" / "updaterd.toml"
    write_config(path, {"platform": "linux-x86_64"}, apps)
    path.chmod(0o644)


def journal(box: Container, unit: str, priority: str = "debug") -> str:
    return box.sh(f"journalctl -u {unit} -p {priority} -o cat --no-pager", check=False).stdout


def wait_until(box: Container, condition: str, what: str, seconds: int = 20) -> None:
    """Poll a shell condition inside the container; on time-out, show the daemon's journal."""
    r = box.sh(f"for i in $(seq {seconds * 5}); do {condition} && exit 0; sleep 0.2; done; "
               "exit 1", check=False, timeout=seconds + 30)
    assert r.returncode == 0, f"timed out waiting for {what}\n{journal(box, 'updaterd')}"


def readme_install_block() -> list[str]:
    """The README's "Install as a service" commands, one per line (comments dropped)."""
    import re

    text = (REPO / "README.md").read_text()
    rest = text[text.index("## Install as a service"):]
    m = re.search(r"^```sh\n(.*?)^```", rest, re.M | re.S)
    assert m
    return [line.split("  #")[0].strip() for line in m.group(1).splitlines() if line.strip()]


def build_package() -> Path:
    """The README's first line, on this host (Debian 12, the containers' release): the .deb."""
    steps = readme_install_block()
    assert steps[0] == "make deb", steps
    r = subprocess.run(["make", "-s", "deb"], cwd=REPO, capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    return REPO / r.stdout.strip().splitlines()[-1]


def build_package_on(suite: str, base: Path) -> Path:
    """What the README's first line, `make deb`, runs (scripts/build-deb.sh: a stock Debian has
    no make) on a stock Debian `suite` (its own python3): in a copy of that release's root file
    system with this work tree in /root/src, as an operator on that release would. The package
    is for that release alone (its python3 and libc)."""
    root = base / "build-root"
    subprocess.run(["cp", "-a", str(ROOTFS_OF[suite]), str(root)], check=True)
    src = root / "root" / "src"
    src.mkdir(parents=True)
    subprocess.run(f"tar -C {REPO} --exclude=./.venv --exclude=./build --exclude=./dist "
                   f"--exclude=./.fleet --exclude=./.git -cf - . | tar -C {src} -xf -",
                   shell=True, check=True)
    stamp = subprocess.run(["git", "-C", str(REPO), "log", "-1", "--format=%ct"],
                           capture_output=True, text=True).stdout.strip()
    # the host's way to the package index: its CA bundle, its time-out
    ca = os.environ.get("PIP_CERT", "/etc/ssl/certs/ca-certificates.crt")
    r = subprocess.run(
        ["systemd-nspawn", "--quiet", "--register=no", "--keep-unit", "--pipe", "-D", str(root),
         f"--bind-ro={ca}:/run/host-ca.crt", "--setenv=PIP_CERT=/run/host-ca.crt",
         "--setenv=PIP_DEFAULT_TIMEOUT=180", f"--setenv=SOURCE_DATE_EPOCH={stamp}",
         "--chdir=/root/src", "/bin/bash", "-c", "bash scripts/build-deb.sh"],
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, f"make deb on {suite}:\n{r.stdout}\n{r.stderr}"
    built = src / r.stdout.strip().splitlines()[-1]
    out = base / built.name
    subprocess.run(["cp", str(built), str(out)], check=True)
    return out


def install_package(box: Container, deb: Path) -> None:
    """The README's `apt install ./dist/updaterd_*.deb`, as written, in the container's /root
    with that one package in its dist/."""
    steps = readme_install_block()
    line = next(s for s in steps if s.startswith("apt install "))
    dist = box.root / "root" / "dist"
    dist.mkdir(parents=True, exist_ok=True)
    for old in dist.glob("updaterd_*.deb"):
        old.unlink()
    subprocess.run(["cp", str(deb), str(dist)], check=True)
    box.sh(f"cd /root && DEBIAN_FRONTEND=noninteractive {line}", timeout=300)
