"""Restart commands and health checks: run with a timeout, the whole process group killed."""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import stat
import subprocess
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import trio

from updaterd.errors import HealthCheckFailed
from updaterd.trust import tlstrust

if TYPE_CHECKING:
    import httpx

_TAIL = 2048
OUTPUT_CAP = 1024 * 1024  # a command's output is emptied past this while it runs (H148)
_WATCH_EVERY = 0.01  # how often the output's size is looked at, while a command runs
OUTPUT_FILE = "command-output"  # in the app's state folder: where its commands write (J175)
TEND_EVERY = 1.0  # how often the daemon empties output files past OUTPUT_CAP between commands
_tended: set[Path] = set()  # the output files this process gave to commands
PROBE_BODY_CAP = 64 * 1024  # what a health probe reads of an answer at most (H148)


async def probe_url(url: str, timeout: float, every: float = 0.5,
                    ca_file: str | None = None) -> None:
    """GET `url` until it answers 2xx, for at most `timeout` seconds.

    Only the status decides: at most PROBE_BODY_CAP bytes of a body are read before the
    answer is dropped, so an app that answers with gigabytes costs the daemon nothing."""
    import httpx  # loaded by the first health_url check, not by every daemon

    last = "no answer"
    with trio.move_on_after(timeout):
        async with httpx.AsyncClient(timeout=max(min(timeout, 10.0), 0.1), trust_env=False,
                                     verify=tlstrust.context(ca_file)) as client:
            while True:
                try:
                    async with client.stream("GET", url) as r:
                        await _drain_some(r, PROBE_BODY_CAP)
                    if 200 <= r.status_code < 300:
                        return
                    last = f"HTTP {r.status_code}"
                except httpx.HTTPError as e:
                    last = f"{type(e).__name__}"
                await trio.sleep(every)
    raise HealthCheckFailed(f"health_url {url}: no 2xx within {timeout:g}s (last: {last})")


async def _drain_some(response: httpx.Response, cap: int) -> None:
    """Read at most `cap` bytes of a body (so a short one leaves the connection reusable)."""
    seen = 0
    async for chunk in response.aiter_raw():
        seen += len(chunk)
        if seen >= cap:
            return


async def unit_active(unit: str, timeout: float, every: float = 0.5) -> None:
    """`systemctl is-active UNIT` until it says active, for at most `timeout` seconds."""
    state = "unknown"
    with trio.move_on_after(timeout):
        while True:
            r = await trio.run_process(["systemctl", "is-active", unit], check=False,
                                       capture_stdout=True, capture_stderr=True,
                                       env=command_env({}))
            state = r.stdout.decode(errors="replace").strip() or f"exit {r.returncode}"
            if r.returncode == 0 and state == "active":
                return
            if state == "failed":
                break
            await trio.sleep(every)
    raise HealthCheckFailed(f"systemd unit {unit} is {state}, not active")


DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
KEPT = ("PATH", "LANG")


def command_env(extra: Mapping[str, str], passed: Sequence[str] = ()) -> dict[str, str]:
    """The whole environment of a command updaterd runs (G132): PATH and LANG, the
    variables the app's `pass_environment` names, and `extra` (the UPDATERD_* ones); never the
    rest of the daemon's environment (NOTIFY_SOCKET, another app's token ...)."""
    env = {name: os.environ[name] for name in (*KEPT, *passed) if name in os.environ}
    env.setdefault("PATH", DEFAULT_PATH)
    env.update(extra)
    return env


def resolve(argv: list[str], release: Path) -> list[str]:
    """A relative first word with a '/' (`bin/app`) resolves inside the release."""
    first = argv[0]
    if "/" in first and not first.startswith("/"):
        return [str(release / first), *argv[1:]]
    return list(argv)


@contextlib.contextmanager
def _output(path: Path | None) -> Iterator[int]:
    """The file a command writes to, empty, opened with O_APPEND (shared with the command: one
    open file description, so after a truncation its next write lands at the start again, not
    past a hole at its old offset). A named one (`path`) stays tended after the command
    (`tend_outputs`): a process the command left running (`nohup app &`) keeps writing to it
    for as long as it lives, and it must neither grow without bound nor hide (J175). None:
    an unlinked file, for commands that leave nothing behind (updaterd's own checks)."""
    if path is None:
        with tempfile.TemporaryFile() as out:
            fd = out.fileno()
            fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) | os.O_APPEND)
            yield fd
        return
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC,
                 0o600)
    try:
        os.ftruncate(fd, 0)
        _tended.add(path)
        yield fd
    finally:
        os.close(fd)


def tend_outputs() -> None:
    """Empty each named output file that has passed OUTPUT_CAP since it was last looked at:
    what processes left behind by restart commands write is bounded while the daemon runs."""
    for path in list(_tended):
        try:
            fd = os.open(path, os.O_WRONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError:
            _tended.discard(path)  # gone with its app
            continue
        try:
            st = os.fstat(fd)
            if stat.S_ISREG(st.st_mode) and st.st_size > OUTPUT_CAP:
                os.ftruncate(fd, 0)
        finally:
            os.close(fd)


async def tend_outputs_forever(every: float = TEND_EVERY) -> None:
    """The daemon's task for `tend_outputs`."""
    while True:
        if _tended:  # an idle daemon that ran no command yet has nothing to look at
            await trio.to_thread.run_sync(tend_outputs)
        await trio.sleep(every)


async def run(what: str, argv: list[str], *, cwd: Path, timeout: float,
              env: Mapping[str, str], passed: Sequence[str] = (),
              output: Path | None = None) -> str:
    """Run `argv` with `command_env(env, passed)`; raise HealthCheckFailed naming `what` on
    failure, signal or timeout.

    Returns the last line of its output. The output goes to a file (`output`, or an unlinked
    one; a file, not a pipe, so a process the command leaves behind is not killed by SIGPIPE
    when updaterd stops reading) that is emptied whenever it passes OUTPUT_CAP: a command that
    writes without end for its whole timeout holds OUTPUT_CAP plus what it writes in
    _WATCH_EVERY on disk, not its whole output (H148)."""
    full_env = command_env(env, passed)
    with _output(output) as fd:
        cut: list[bytes] = []
        try:
            proc = await trio.lowlevel.open_process(
                argv, cwd=str(cwd), env=full_env, stdin=subprocess.DEVNULL, stdout=fd,
                stderr=subprocess.STDOUT, start_new_session=True)
        except OSError as e:
            raise HealthCheckFailed(f"{what}: cannot run {argv[0]!r}: {e.strerror}") from None
        try:
            # one task, no nursery: a cancel reaches the caller as a plain trio.Cancelled
            with trio.move_on_after(timeout) as scope:
                while proc.returncode is None:
                    with trio.move_on_after(_WATCH_EVERY):
                        await proc.wait()
                    _cap_output(fd, cut)
        finally:
            if proc.returncode is None:  # the timeout, or a cancel: the whole group goes
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                with trio.CancelScope(shield=True):
                    await proc.wait()
        if scope.cancelled_caught:
            raise HealthCheckFailed(f"{what}: no answer within {timeout:g}s; process group killed")
        size = os.fstat(fd).st_size
        last = (cut[-1] if cut else b"") + os.pread(fd, _TAIL, max(size - _TAIL, 0))
        os.ftruncate(fd, 0)  # what a process left behind wrote so far is freed now
        tail = last[-_TAIL:].decode("utf-8", "replace").strip().splitlines()[-1:] or [""]
        code = proc.returncode
        assert code is not None  # waited for above
        if code != 0:
            how = f"killed by signal {-code}" if code < 0 else f"exit status {code}"
            raise HealthCheckFailed(f"{what}: {how}" + (f": {tail[0]}" if tail[0] else ""),
                                    signal=-code if code < 0 else None)
        return tail[0]


def _cap_output(fd: int, cut: list[bytes]) -> None:
    """When a running command's output has passed OUTPUT_CAP: keep its last _TAIL bytes in
    `cut` and empty the file. What is written between the two is lost; only the last line is
    ever shown."""
    size = os.fstat(fd).st_size
    if size > OUTPUT_CAP:
        cut[:] = [os.pread(fd, _TAIL, size - _TAIL)]
        os.ftruncate(fd, 0)
