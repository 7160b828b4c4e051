"""A real Apache 2.4 (Debian's apache2) on 127.0.0.1, with Debian's default modules and their
settings (mod_deflate, mod_mime ...), serving a folder as a user would; `directory` goes into
the folder's <Directory> block (the lines docs/feed.md gives)."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.servers.nginx import free_port, read_log, stop, wait_for_port

MODULES = Path("/usr/lib/apache2/modules")
# each request as one JSON object, the keys of nginx's log (tests/servers/nginx.py)
LOG_FORMAT = ('{\\"method\\":\\"%m\\",\\"uri\\":\\"%U\\",\\"status\\":%>s,'
              '\\"bytes\\":%B,\\"range\\":\\"%{Range}i\\"}')


@dataclass
class Apache:
    root: Path
    port: int
    access_log: Path

    def url(self, rel: str) -> str:
        return f"http://127.0.0.1:{self.port}/{rel}"

    def requests(self) -> list[dict[str, Any]]:
        return read_log(self.access_log)


@contextlib.contextmanager
def running_apache(directory: str = "", server: str = "") -> Iterator[Apache]:
    """apache2 in the foreground; `server` goes into the server's configuration (a user's
    `AddEncoding` line). Its children run as www-data, so the folder it serves is under /tmp,
    readable by all (a test's own folder may be root's only)."""
    if shutil.which("apache2") is None:
        raise RuntimeError("apache2 is not installed (make deps installs apache2)")
    base = Path(tempfile.mkdtemp(prefix="updaterd-apache-", dir="/tmp"))
    try:
        base.chmod(0o755)
        root = base / "www"
        root.mkdir(mode=0o755)
        port = free_port()
        log = base / "access.log"
        conf = base / "apache2.conf"
        conf.write_text(f"""
ServerRoot /etc/apache2
ServerName 127.0.0.1
PidFile {base}/apache2.pid
DefaultRuntimeDir {base}
Mutex file:{base} default
User www-data
Group www-data
Listen 127.0.0.1:{port}
ErrorLog {base}/error.log
IncludeOptional mods-enabled/*.load
IncludeOptional mods-enabled/*.conf
<IfModule !headers_module>
    LoadModule headers_module {MODULES}/mod_headers.so
</IfModule>
LogFormat "{LOG_FORMAT}" t
CustomLog {log} t
DocumentRoot {root}
{server}
<Directory {root}>
    Require all granted
    {directory}
</Directory>
""")
        env = {**os.environ, "APACHE_RUN_DIR": str(base), "APACHE_LOCK_DIR": str(base),
               "APACHE_LOG_DIR": str(base), "APACHE_RUN_USER": "www-data",
               "APACHE_RUN_GROUP": "www-data", "APACHE_PID_FILE": str(base / "apache2.pid")}
        proc = subprocess.Popen(["apache2", "-f", str(conf), "-DFOREGROUND"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
        try:
            wait_for_port(port, proc, f"apache2 (see {base}/error.log)")
            yield Apache(root=root, port=port, access_log=log)
        finally:
            stop(proc, signal.SIGWINCH)  # graceful stop, as apachectl graceful-stop
    finally:
        shutil.rmtree(base, ignore_errors=True)
