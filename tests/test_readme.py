"""The README's command blocks, run as written, so that the README cannot
drift from what updaterd does. Paths an operator would use (/srv/www, /opt, /etc/systemd,
/run/updaterd) are moved into a temporary folder; nothing else is changed.

Not run here: `make demo` / `make test` (the suite itself), the "Install as a service" and
"Running the daemon" blocks (systemd as PID 1 and root paths: the nspawn test of the real-host
issue is where they belong), `pip install updaterd` (needs the package on PyPI), and
`updaterctl watch` (runs until interrupted).
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from tests.conftest import Daemon, Host
from tests.helpers import BIN, Feed, make_tar, release_files, write_config

README = Path(__file__).resolve().parent.parent / "README.md"


def blocks(lang: str) -> list[str]:
    """The README's fenced blocks of one language, in order."""
    return re.findall(rf"^```{lang}\n(.*?)^```", README.read_text(), re.M | re.S)


def block_after(heading: str, lang: str = "sh") -> str:
    text = README.read_text()
    rest = text[text.index(heading):]
    m = re.search(rf"^```{lang}\n(.*?)^```", rest, re.M | re.S)
    assert m, heading
    return m.group(1)


def run_block(script: str, cwd: Path, env: dict[str, str] | None = None) -> str:
    full = dict(os.environ, PATH=f"{BIN}:{os.environ['PATH']}", **(env or {}))
    r = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=cwd, env=full,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, f"{script}\n--- stdout\n{r.stdout}\n--- stderr\n{r.stderr}"
    assert "Traceback" not in r.stderr
    return r.stdout


def test_every_toml_block_is_a_configuration_updaterd_accepts(feed: Feed) -> None:
    from updaterd.host import config
    found = blocks("toml")
    assert len(found) >= 5
    for text in found:
        config.parse(text.replace('"RWQ..."', f'"{feed.pub}"'), "README.md")


def test_publishing_a_feed(tmp_path: Path) -> None:
    script = block_after("## Publishing a feed").replace("/srv/www/demo", str(tmp_path / "www"))
    make_tar(tmp_path / "demo-1.3.0-linux-x86_64.tar.zst", release_files("1.3.0"), top="demo")
    run_block(script, tmp_path)
    assert (tmp_path / "www" / "manifest.json").is_file()
    assert '"platform": "yanked"' not in (tmp_path / "www" / "manifest.json").read_text()
    r = subprocess.run(["minisign", "-Vm", "manifest.json", "-p",
                        str(tmp_path / "release-key.pub")], cwd=tmp_path / "www",
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr  # what the next paragraph of the README says


def test_keeping_updaterd_itself_up_to_date(tmp_path: Path) -> None:
    script = block_after("## Keeping updaterd itself up to date")
    assert script.startswith("updaterd self-install ")
    for old, new in (("updaterd self-install", f"{BIN / 'updaterd'} self-install"),
                     ("/opt/updaterd", str(tmp_path / "opt" / "updaterd")),
                     ("/etc/systemd/system", str(tmp_path / "etc" / "systemd" / "system")),
                     ("/srv/www/updaterd", str(tmp_path / "www")),
                     ("contrib/", str(README.parent / "contrib") + "/")):
        script = script.replace(old, new)
    subprocess.run([str(BIN / "updaterd"), "keygen", "--out", "k"], cwd=tmp_path, check=True,
                   capture_output=True)
    run_block(script, tmp_path)
    assert os.readlink(tmp_path / "opt" / "updaterd" / "current").startswith("releases/")
    assert (tmp_path / "etc/systemd/system/updaterd.service.d/self-update.conf").is_file()
    assert "0.2.0" in (tmp_path / "www" / "manifest.json").read_text()


@pytest.fixture
def demo_daemon(host: Host, feed: Feed, daemon: Daemon) -> Daemon:
    """A daemon with an app `demo` on 1.0.0, and 1.3.0 in its feed."""
    feed.app = "demo"
    feed.release("1.0.0")
    from tests.helpers import write_config
    write_config(host.config, host.daemon_table(), {"demo": {
        "source": "directory", "path": str(feed.folder), "public_keys": [feed.pub],
        "prefix": str(host.prefix), "health_check": ["bin/hello"], "check_interval": "1h",
        "jitter": "0s"}})
    daemon.start()
    daemon.wait_for(lambda: daemon.app("demo")["current"] == "1.0.0", what="demo 1.0.0")
    feed.release("1.3.0")
    return daemon


def test_the_updaterctl_block(demo_daemon: Daemon, tmp_path: Path) -> None:
    script = block_after("## updaterctl")
    kept = [line for line in script.splitlines() if not line.startswith("updaterctl watch")]
    script = "\n".join(kept).replace("/usr/local/bin/backup", "true")
    out = run_block(script, tmp_path, {"UPDATERD_SOCKET": str(demo_daemon.socket)})
    assert "demo: installed 1.3.0 (was 1.0.0)" in out
    assert "demo: rolled back from 1.3.0 to 1.0.0" in out
    assert "updaterd_" in out  # the metrics


def test_querying_from_python_and_from_a_shell(demo_daemon: Daemon, tmp_path: Path) -> None:
    sock = str(demo_daemon.socket)
    python = block_after("## Querying from another program", "python")
    python = python.replace("/run/updaterd/updaterd.sock", sock)
    r = subprocess.run([str(BIN / "python"), "-c", python], capture_output=True, text=True,
                       timeout=30)
    assert r.returncode == 0 and r.stdout.startswith("demo 1.0.0"), r.stderr
    text = README.read_text()
    shell = block_after("From a shell:", "sh").replace("/run/updaterd/updaterd.sock", sock)
    assert "From a shell:" in text
    out = run_block(shell, tmp_path)
    assert '"name":"demo"' in out


def test_the_code_map_names_every_module_and_only_modules_that_exist() -> None:
    """The code map is how a newcomer follows one update: a module it does not name is one they
    never find, a name that no longer exists sends them nowhere."""
    text = README.read_text()
    code_map = text[text.index("## Code map"):text.index("## Development")]
    named = set(re.findall(r"`([a-z_/]+\.py)`", code_map))
    root = Path(__file__).resolve().parent.parent
    daemon = root / "daemon" / "updaterd"
    modules = {p.relative_to(daemon).as_posix() for p in daemon.rglob("*.py")
               if p.name not in ("__init__.py", "__main__.py")}
    in_sources = {m.removeprefix("sources/") for m in modules if m.startswith("sources/")}
    missing = {m for m in modules if m not in named and m.removeprefix("sources/") not in named}
    assert not missing, f"modules the code map does not name: {sorted(missing)}"
    ctl = {p.name for p in (root / "ctl" / "updaterctl").glob("*.py")}
    unknown = {n for n in named if n not in modules and n not in in_sources and n not in ctl
               and not (daemon / n).exists()}
    assert not unknown, f"the code map names modules that do not exist: {sorted(unknown)}"


def test_the_bad_release_runbook_runs_as_written(tmp_path: Path) -> None:
    """docs/bad-release.md's commands on a feed whose 1.4.0 is guarded and out to every host:
    recalled, then yanked, then shown (the publisher's block); then, on a real daemon the
    recall moved back to 1.3.0, the data put back as 1.3.0 left it (the host's block)."""
    runbook = (README.parent / "docs" / "bad-release.md").read_text()
    publisher, on_host = re.findall(r"^```sh\n(.*?)^```", runbook, re.M | re.S)[:2]
    www = tmp_path / "srv" / "www"
    run_block("updaterd keygen --out release-key && updaterd keygen --out rollout", tmp_path)
    feed = www / "demo"
    host = Host(tmp_path / "host")
    host.base.mkdir()
    pub = (tmp_path / "release-key.pub").read_text().splitlines()[1]
    write_config(host.config, host.daemon_table(), {"demo": {
        "source": "directory", "path": str(feed), "public_keys": [pub],
        "prefix": str(host.base / "opt" / "demo"), "shared": ["data"], "data_snapshots": True,
        "health_check": ["sh", "-c", "mkdir -p data && echo $UPDATERD_VERSION >> data/runs"],
        "check_interval": "1h", "jitter": "0s", "watch_interval": "0"}})
    daemon = Daemon(host)
    env = {"UPDATERD_SOCKET": str(daemon.socket)}
    try:
        for version, extra in (("1.3.0", ""), ("1.4.0", " --rollout-key rollout.pub")):
            art = make_tar(tmp_path / f"demo-{version}-linux-x86_64.tar.gz",
                           release_files(version), top=f"demo-{version}")
            run_block(f"updaterd publish --feed {feed} --key release-key.key --app demo "
                      f"--version {version}{extra} {art}", tmp_path)
            if version == "1.3.0":
                daemon.start()
                daemon.wait_for(lambda: daemon.app("demo")["current"] == "1.3.0",
                                what="1.3.0")
        run_block(f"updaterd rollout resume 1.4.0 --share 100 --feed {feed} --key rollout.key",
                  tmp_path)
        run_block("updaterctl update demo", tmp_path, env)
        data = host.base / "opt" / "demo" / "shared" / "data" / "runs"
        assert data.read_text() == "1.3.0\n1.4.0\n"
        out = run_block(publisher.replace("/srv/www", str(www)), tmp_path)
        assert "1.4.0: recalled at 100%: corrupts notes on save; 1.4.1 fixes it" in out
        assert "1.4.0  recalled  100%" in out
        manifest = (feed / "manifest.json").read_text()
        assert '"platform":"yanked"' in manifest.replace(" ", "")
        # the recall, as a look acts on it (an update that ends rolled back exits 1)
        run_block("updaterctl update demo || test $? = 1", tmp_path, env)
        assert daemon.app("demo")["current"] == "1.3.0"
        assert data.read_text() == "1.3.0\n1.4.0\n"  # the recall moved code, not data
        out = run_block(on_host, tmp_path, env)
        assert "DATA" in out and "put back the data 1.3.0 left" in out, out
        assert data.read_text() == "1.3.0\n"
    finally:
        daemon.stop()
