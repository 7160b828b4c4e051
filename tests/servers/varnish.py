"""A real Varnish (Debian's varnishd) in front of a backend on 127.0.0.1, as a feed is served
through a cache: its default VCL, or the lines docs/feed.md gives to add to it."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.servers.nginx import free_port, stop, wait_for_port

# docs/feed.md, Serving a feed: a request that asks for no-cache goes to the origin
HONOUR_NO_CACHE = 'if (req.http.Cache-Control ~ "no-cache") { return (pass); }'


@dataclass
class Varnish:
    port: int
    workdir: Path

    def url(self, rel: str) -> str:
        return f"http://127.0.0.1:{self.port}/{rel}"

    def ban(self, path: str) -> None:
        """Purge one URL path from the cache (as a publisher purging one file)."""
        subprocess.run(["varnishadm", "-n", str(self.workdir), "ban", "req.url", "==", path],
                       check=True, capture_output=True, timeout=30)


@contextlib.contextmanager
def running_varnish(base: Path, backend_port: int, recv: str = "") -> Iterator[Varnish]:
    """varnishd in the foreground with a 64 MiB cache; `recv` goes first in vcl_recv (the
    builtin VCL runs after it)."""
    if shutil.which("varnishd") is None:
        raise RuntimeError("varnishd is not installed (make deps installs varnish)")
    base.mkdir(parents=True, exist_ok=True)
    vcl = base / "feed.vcl"
    vcl.write_text(f"""vcl 4.1;
backend origin {{ .host = "127.0.0.1"; .port = "{backend_port}"; }}
sub vcl_recv {{ {recv} }}
""")
    vcl.chmod(0o644)
    base.chmod(0o755)
    port = free_port()
    # -j none: no jail (a test under a root-only folder; the child needs to read there)
    proc = subprocess.Popen(["varnishd", "-F", "-j", "none", "-n", str(base / "work"),
                             "-f", str(vcl),
                             "-a", f"127.0.0.1:{port}", "-s", "malloc,64m"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_port(port, proc, "varnishd")
        yield Varnish(port=port, workdir=base / "work")
    finally:
        stop(proc, timeout=10)
