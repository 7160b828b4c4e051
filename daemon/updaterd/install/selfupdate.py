"""updaterd keeping itself up to date (`self = true`).

updaterd updates itself as a `releases` app whose prefix `updaterd self-install` made:

    <prefix>/releases/<v>/bin/updaterd   this release's launcher (sh); bin/updaterctl too
    <prefix>/releases/<v>/lib/           the code: the updaterd and updaterctl packages
    <prefix>/python                      runs the interpreter that holds the dependencies
    <prefix>/launcher                    what the service runs; part of no release, so that a
                                         bad release cannot break it
    <prefix>/.self-trial                 "<version> <previous> <starts>" while a version is on
                                         trial; the launcher counts the starts
    <prefix>/.self-failed                the version the launcher gave up on

The daemon switches, tries the new release as a child (`--version`, `check-config`), journals,
then re-executes itself through the launcher, handing the listening socket over as fd 3
(LISTEN_FDS), so that clients queue in its backlog instead of finding no socket. The new daemon
finishes the transaction: health checks, then commit, or roll back and re-execute into the old
version. A new version that cannot even start is caught by the launcher: after
MAX_TRIAL_STARTS starts without a commit it points `current` back at the previous release, and
the old daemon blocks the version when it starts.
"""

from __future__ import annotations

import io
import os
import shlex
import shutil
import socket
import sys
import tarfile
import tempfile
from pathlib import Path

import updaterctl
import updaterd
from updaterctl._version import __version__
from updaterd import failpoints, fsutil, versions
from updaterd.errors import HealthCheckFailed, LayoutError, UpdaterError
from updaterd.host import tokens
from updaterd.install.layout import Layout

MAX_TRIAL_STARTS = 3
TRIAL = ".self-trial"
FAILED = ".self-failed"
LAUNCHER = "launcher"
LISTEN_FD = 3  # sd_listen_fds(3): the first passed descriptor

_RELEASE_LAUNCHER = """#!/bin/sh
# updaterd {version}: runs this release's code with the interpreter <prefix>/python names.
# -P: the working directory never shadows a module; the code's folder comes first on sys.path.
release=$(dirname "$(dirname "$(readlink -f "$0")")")
exec "$release/../../python" -P -c \\
    'import sys; sys.path.insert(0, sys.argv.pop(1)); from {package}.cli import main; \\
sys.exit(main())' "$release/lib" "$@"
"""

_PYTHON = """#!/bin/sh
# Written by `updaterd self-install`: the interpreter (with trio, httpx, msgspec ...) that every
# release of updaterd in this prefix runs with.
exec {python} "$@"
"""

_LAUNCHER = """#!/bin/sh
# Written by `updaterd self-install`; part of no release, so that a bad release cannot break it.
# Starts the current release of updaterd. While a new version is on trial ({trial}), it counts
# the starts; after {max} starts without a commit it points `current` back at the previous
# release and leaves the version in {failed} for the daemon to block.
prefix=$(dirname "$(readlink -f "$0")")
trial="$prefix/{trial}"
if [ -f "$trial" ] && read -r version previous starts < "$trial"; then
    case "$version/$previous" in  # two safe names, as the daemon wrote them
        */|/*|.*|*/.*|*..*|*[!A-Za-z0-9._+/-]*|*/*/*) version= ;;
    esac
    [ -d "$prefix/releases/$previous" ] || version=
    case "$starts" in ''|*[!0-9]*) starts=0 ;; esac
    if [ -n "$version" ] && [ "$starts" -ge {max} ]; then
        echo "updaterd launcher: $version did not commit after $starts starts;" \\
             "going back to $previous" >&2
        tmp="$prefix/{tmp}current.launcher"
        ln -sfn "releases/$previous" "$tmp" && mv -fT "$tmp" "$prefix/current" &&
            printf '%s\\n' "$version" > "$prefix/{failed}" && rm -f "$trial"
    elif [ -n "$version" ]; then
        tmp="$prefix/{tmp}trial.launcher"
        printf '%s %s %s\\n' "$version" "$previous" $((starts + 1)) > "$tmp" &&
            mv -f "$tmp" "$trial"
    fi
fi
exec "$prefix/bin/updaterd" "$@"
"""


def running_version() -> str:
    return __version__


# -- building and installing releases -------------------------------------------------------

def _copy_package(module_file: str | None, dest: Path) -> None:
    if module_file is None:
        raise UpdaterError("cannot find the running updaterd's code")
    shutil.copytree(Path(module_file).parent, dest,
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))


def release_tree(dest: Path, version: str) -> None:
    """Write a release of the running code, as `version`, into the empty folder `dest`."""
    try:
        versions.parse(version)
    except ValueError:
        raise UpdaterError(f"{version!r} is not a semantic version") from None
    if not versions.is_safe_name(version):
        raise UpdaterError(f"{version!r} cannot name a release folder")
    lib, bin_dir = dest / "lib", dest / "bin"
    _copy_package(updaterd.__file__, lib / "updaterd")
    _copy_package(updaterctl.__file__, lib / "updaterctl")
    (lib / "updaterctl" / "_version.py").write_text(
        f'"""The one place the version is written (updaterd and updaterctl share it)."""\n\n'
        f'__version__ = "{version}"\n')
    bin_dir.mkdir()
    for package in ("updaterd", "updaterctl"):
        script = bin_dir / package
        script.write_text(_RELEASE_LAUNCHER.format(version=version, package=package))
        script.chmod(0o755)
    _explicit_modes(dest)


def _explicit_modes(root: Path) -> None:
    """Folders 0755, files 0644 (0755 when executable): what the caller's umask would have
    left writable to others is not (catalogue G140)."""
    for dirpath, _dirnames, filenames in os.walk(root):
        os.chmod(dirpath, 0o755)
        for name in filenames:
            path = os.path.join(dirpath, name)
            if not os.path.islink(path):
                os.chmod(path, 0o755 if os.stat(path).st_mode & 0o100 else 0o644)


def build(out_dir: Path, version: str | None = None) -> Path:
    """`updaterd self-build`: the running code as a release archive for `updaterd publish`."""
    version = version or __version__
    out_dir.mkdir(parents=True, exist_ok=True)
    archive = out_dir / f"updaterd-{version}.tar.gz"
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / f"updaterd-{version}"
        root.mkdir()
        release_tree(root, version)
        buf = io.BytesIO()

        def owned_by_root(info: tarfile.TarInfo) -> tarfile.TarInfo:
            info.uid = info.gid = 0
            info.uname = info.gname = "root"
            return info

        with tarfile.open(fileobj=buf, mode="w:gz") as tar:
            tar.add(root, arcname=root.name, filter=owned_by_root)
        fsutil.atomic_write(archive, buf.getvalue())
    return archive


def self_install(prefix: Path, python: str) -> str:
    """`updaterd self-install`: make `prefix` a self-updating installation of the running code.

    Returns the version installed. Refuses a prefix that already has a current release.
    """
    layout = Layout(prefix)
    if layout.current.exists() or layout.current.is_symlink():
        raise UpdaterError(f"{layout.current} exists; {prefix} is already an installation")
    if not os.access(python, os.X_OK):
        raise UpdaterError(f"{python} is not an executable interpreter")
    layout.preflight()
    staged = layout.new_staging()
    try:
        release_tree(staged, __version__)
        fsutil.make_durable(staged)
        layout.place_release(staged, __version__)
    finally:
        shutil.rmtree(staged, ignore_errors=True)
    fsutil.atomic_write(prefix / "python",
                        _PYTHON.format(python=shlex.quote(os.path.abspath(python))).encode(),
                        mode=0o755)
    fsutil.atomic_write(prefix / LAUNCHER,
                        _LAUNCHER.format(trial=TRIAL, failed=FAILED, max=MAX_TRIAL_STARTS,
                                         tmp=fsutil.TMP_MARK).encode(), mode=0o755)
    layout.switch(__version__, failpoint="")
    return __version__


# -- the trial of a new version --------------------------------------------------------------

def start_trial(prefix: Path, version: str, previous: str | None) -> None:
    if previous is None:
        raise LayoutError("updaterd has no previous version to come back to")
    fsutil.atomic_write(prefix / TRIAL, f"{version} {previous} 0\n".encode())


def end_trial(prefix: Path) -> None:
    (prefix / TRIAL).unlink(missing_ok=True)
    fsutil.fsync_dir(prefix)


def take_failed(prefix: Path) -> str | None:
    """The version the launcher gave up on (once; the note is removed)."""
    path = prefix / FAILED
    try:
        text = path.read_text(errors="replace").strip()
    except FileNotFoundError:
        return None
    path.unlink()
    return text if versions.is_safe_name(text) else None


async def try_release(run_dir: Path, version: str, config_path: str, timeout: float) -> None:
    """Before handing over: the new release must say its version and accept our config."""
    from updaterd.install import health

    exe = run_dir / "bin" / "updaterd"
    said = await health.run("updaterd --version", [str(exe), "--version"], cwd=run_dir,
                            timeout=timeout, env={})
    if said != f"updaterd {version}":
        raise HealthCheckFailed(f"{exe} --version says {said!r}, not 'updaterd {version}'")
    await health.run("updaterd check-config", [str(exe), "--config", config_path,
                                               "check-config"],
                     cwd=run_dir, timeout=timeout, env={})


# -- handing over -----------------------------------------------------------------------------

def exec_path(prefix: Path) -> Path:
    launcher = prefix / LAUNCHER
    return launcher if launcher.is_file() else prefix / "bin" / "updaterd"


def reexec(prefix: Path, listen_fd: int | None) -> None:
    """Replace this process with the updaterd that `prefix` runs now; returns only on failure.

    The pid stays (systemd's MAINPID, the pidfile); the listening socket is passed as fd 3.
    """
    exe = exec_path(prefix)
    env = dict(os.environ, UPDATERD_REEXEC="1", **tokens.environment())
    if listen_fd is not None:
        os.dup2(listen_fd, LISTEN_FD, inheritable=True)
        env.update(LISTEN_FDS="1", LISTEN_PID=str(os.getpid()), LISTEN_FDNAMES="updaterd")
    sys.stdout.flush()
    sys.stderr.flush()
    failpoints.hit("handover.before_exec")
    os.execve(exe, [str(exe), *sys.argv[1:]], env)


def adopt_listener(path: Path) -> socket.socket | None:
    """The listening socket handed over by the process we replaced (or by systemd), when it
    is a Unix stream socket bound to `path`; None otherwise."""
    if os.environ.get("LISTEN_PID") != str(os.getpid()) or os.environ.get("LISTEN_FDS") != "1":
        return None
    for name in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
        os.environ.pop(name, None)
    try:
        sock = socket.socket(fileno=LISTEN_FD)
    except OSError:
        return None
    os.set_inheritable(LISTEN_FD, False)
    if sock.family != socket.AF_UNIX or sock.type != socket.SOCK_STREAM or \
            not _bound_for(sock.getsockname(), path):
        sock.close()
        return None
    return sock


def _bound_for(name: object, path: Path) -> bool:
    """True when a socket bound as `name` serves `path`: bound there (systemd), or bound under
    a temp name beside it and renamed into place (`rpc.create_socket`)."""
    if not isinstance(name, str):
        return False
    bound = Path(name)
    return bound == path or (bound.parent == path.parent
                             and bound.name.startswith(f"{fsutil.TMP_MARK}{path.name}."))
