"""A small forward HTTP proxy on 127.0.0.1 for tests: absolute-form GETs are relayed to their
origin and logged, so a test can show which requests went through it."""

from __future__ import annotations

import contextlib
import http.client
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit


class _Relay(BaseHTTPRequestHandler):
    server: ProxyServer

    def do_GET(self) -> None:
        target = urlsplit(self.path)
        self.server.seen.append(self.path)
        upstream = http.client.HTTPConnection(target.hostname or "", target.port or 80,
                                              timeout=30)
        path = target.path + (f"?{target.query}" if target.query else "")
        headers = {k: v for k, v in self.headers.items()
                   if k.lower() not in ("proxy-connection", "connection", "host")}
        upstream.request("GET", path, headers=headers)
        reply = upstream.getresponse()
        self.send_response(reply.status)
        for k, v in reply.getheaders():
            if k.lower() not in ("connection", "transfer-encoding"):
                self.send_header(k, v)
        self.send_header("Connection", "close")
        self.end_headers()
        while chunk := reply.read(65536):
            self.wfile.write(chunk)
        upstream.close()

    def log_message(self, format: str, *args: object) -> None:
        pass


class ProxyServer(ThreadingHTTPServer):
    seen: list[str]


@contextlib.contextmanager
def running_proxy() -> Iterator[ProxyServer]:
    server = ProxyServer(("127.0.0.1", 0), _Relay)
    server.seen = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
