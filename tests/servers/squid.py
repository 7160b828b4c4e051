"""A real Squid (Debian's 5.7) as a caching reverse proxy before a backend on 127.0.0.1, as a
feed is served through a cache that keeps what it is given: an answer without an expiry is
fresh for an hour (`refresh_pattern`), so a changed feed reads as unchanged until then."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.servers.nginx import free_port, stop, wait_for_port


@dataclass
class Squid:
    port: int

    def url(self, rel: str) -> str:
        return f"http://127.0.0.1:{self.port}/{rel}"


@contextlib.contextmanager
def running_squid(backend_port: int) -> Iterator[Squid]:
    """squid in the foreground; its files in a folder of its own under /tmp (it runs as the
    `proxy` user, who cannot enter pytest's root-only folders)."""
    if shutil.which("squid") is None:
        raise RuntimeError("squid is not installed (make deps installs squid)")
    base = Path(tempfile.mkdtemp(prefix="updaterd-squid-"))
    base.chmod(0o777)
    port = free_port()
    conf = base / "squid.conf"
    conf.write_text(f"""
http_port 127.0.0.1:{port} accel defaultsite=127.0.0.1 no-vhost
cache_peer 127.0.0.1 parent {backend_port} 0 no-query originserver name=origin
http_access allow all
cache_peer_access origin allow all
cache_mem 32 MB
maximum_object_size_in_memory 8 MB
refresh_pattern . 60 100% 1440 override-lastmod
pid_filename {base}/squid.pid
access_log stdio:{base}/access.log
cache_log {base}/cache.log
cache_store_log none
coredump_dir {base}
shutdown_lifetime 0 seconds
pinger_enable off
""")
    conf.chmod(0o644)
    proc = subprocess.Popen(["squid", "-N", "-f", str(conf)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        wait_for_port(port, proc, "squid")
        yield Squid(port=port)
    finally:
        stop(proc, timeout=15)
        shutil.rmtree(base, ignore_errors=True)
