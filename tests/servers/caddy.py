"""A real Caddy 2 (Debian's caddy) serving a folder on plain http://127.0.0.1 (no automatic
HTTPS: the site address names the scheme); `site` goes into the site block (the lines
docs/feed.md gives)."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.servers.nginx import free_port, read_log, stop, wait_for_port


@dataclass
class Caddy:
    root: Path
    port: int
    access_log: Path

    def url(self, rel: str) -> str:
        return f"http://127.0.0.1:{self.port}/{rel}"

    def requests(self) -> list[dict[str, Any]]:
        """Each request as nginx's log has it: method, uri, status."""
        return [{"method": q["request"]["method"], "uri": q["request"]["uri"],
                 "status": q["status"]} for q in read_log(self.access_log)]


@contextlib.contextmanager
def running_caddy(base: Path, site: str) -> Iterator[Caddy]:
    if shutil.which("caddy") is None:
        raise RuntimeError("caddy is not installed (make deps installs caddy)")
    root = base / "www"
    root.mkdir(parents=True, exist_ok=True)
    port = free_port()
    conf = base / "Caddyfile"
    conf.write_text(f"""{{
    admin off
    auto_https off
}}
http://127.0.0.1:{port} {{
    root * {root}
    log {{
        output file {base / "access.log"}
        format json
    }}
    {site}
}}
""")
    env = {**os.environ, "HOME": str(base), "XDG_DATA_HOME": str(base / "data"),
           "XDG_CONFIG_HOME": str(base / "config")}
    proc = subprocess.Popen(["caddy", "run", "--config", str(conf), "--adapter", "caddyfile"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    try:
        wait_for_port(port, proc, "caddy")
        yield Caddy(root=root, port=port, access_log=base / "access.log")
    finally:
        stop(proc)
