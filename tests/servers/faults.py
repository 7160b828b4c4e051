"""A small ASGI file server for fault injection, run under hypercorn on 127.0.0.1.

GET /<mode>/<file> serves FAULT_ROOT/<file> with ETag and Range support, misbehaving as <mode>:
  plain      correct behaviour
  drop       first request: headers and half the body, then the connection is cut
  fail500    first request: HTTP 500
  r429       first request: HTTP 429 with Retry-After: 1
  bigger     Content-Length larger than the file
  longer     the file and 1 KiB more, chunked (no Content-Length)
  slow       one byte every 0.5 s
  norange    ignores Range (always 200 and the whole file)
  badrange   answers a Range with 206 and a wrong Content-Range
  etagflip   a new ETag on every request
  to-http    redirects to http://127.0.0.1/... (used behind https tests)
  redirect   redirects to /plain/<file>
  moved      redirects for good (301) to /plain/<file>
  offhost    redirects to http://127.0.0.2:<same port>/plain/<file> (another host)
  always304  304 Not Modified to every request, validators or not (a broken cache)
  weakdrop   as drop, with a weak ETag and a Last-Modified date: an If-Range with the weak
             ETag gets the whole file (RFC 9110, as Varnish in front of mod_deflate does), one
             with the date gets the range
  gunzipped  the file gunzipped but still labelled Content-Encoding: gzip (a cache that
             decompressed what the origin labelled gzip, as Varnish does)
  stalesig   a signature (*.minisig) from FILE.stale, unless the request says Cache-Control:
             no-cache (a cache that kept an old signature beside a new manifest)
  cuts       the first three requests of a file are cut, each at a random byte of what it
             asked for (seeded by the path: the same cuts every run); ranges are honoured
  dropnorange  as drop, then ignores Range (a resume gets the whole file again)
Every request is appended to FAULT_LOG as one JSON line.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import random
from collections import Counter
from pathlib import Path
from typing import Any

import trio

from tests.servers.lifespan import serve_lifespan

ROOT = Path(os.environ.get("FAULT_ROOT", "."))
LOG = os.environ.get("FAULT_LOG")
seen: Counter[str] = Counter()


def _log(entry: dict[str, Any]) -> None:
    if LOG:
        with open(LOG, "a") as f:
            f.write(json.dumps(entry) + "\n")


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        await serve_lifespan(scope, receive, send)
        return
    headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
    parts = scope["path"].lstrip("/").split("/", 1)
    mode, name = [*parts, ""][:2]
    key = f"{mode}/{name}"
    seen[key] += 1
    first = seen[key] == 1
    entry = {"path": scope["path"], "mode": mode, "range": headers.get("range"),
             "if_range": headers.get("if-range"), "inm": headers.get("if-none-match"),
             "accept_encoding": headers.get("accept-encoding"),
             "cache_control": headers.get("cache-control"), "status": 0, "sent": 0}

    async def respond(status: int, hdrs: list[tuple[str, str]], body: bytes = b"",
                      more: bool = False) -> None:
        entry["status"] = status
        await send({"type": "http.response.start", "status": status,
                    "headers": [(k.encode(), v.encode()) for k, v in hdrs]})
        entry["sent"] += len(body)
        await send({"type": "http.response.body", "body": body, "more_body": more})

    try:
        path = ROOT / name
        if mode in ("redirect", "moved"):
            await respond(302 if mode == "redirect" else 301,
                          [("location", f"/plain/{name}"), ("content-length", "0")])
            return
        if mode == "offhost":
            port = headers.get("host", "").rsplit(":", 1)[-1]
            await respond(302, [("location", f"http://127.0.0.2:{port}/plain/{name}"),
                                ("content-length", "0")])
            return
        if mode == "to-http":
            await respond(302, [("location", f"http://127.0.0.1:9/{name}"),
                                ("content-length", "0")])
            return
        if not name or not path.is_file():
            await respond(404, [("content-length", "0")])
            return
        data = path.read_bytes()
        stale = path.with_name(path.name + ".stale")
        if mode == "stalesig" and stale.is_file() and headers.get("cache-control") != "no-cache":
            data = stale.read_bytes()
        etag = '"' + hashlib.sha256(data).hexdigest()[:16] + '"'
        modified = "Mon, 07 Dec 2026 10:00:00 GMT"
        if mode == "weakdrop":
            etag = "W/" + etag
        if mode == "gunzipped":
            data = gzip.decompress(data)
        if mode == "etagflip":
            etag = f'"{seen[key]}"'
        if mode == "always500" or (mode == "fail500" and first):
            await respond(500, [("content-length", "0")])
            return
        if mode == "r429" and first:
            await respond(429, [("retry-after", "1"), ("content-length", "0")])
            return
        if mode == "always304" or headers.get("if-none-match") == etag:
            await respond(304, [("etag", etag)])
            return
        start = 0
        rng = headers.get("range")
        if_range = headers.get("if-range")
        strong = not etag.startswith("W/")
        matches = if_range is None or (if_range == etag and strong) or (
            mode == "weakdrop" and if_range == modified)
        if rng and mode not in ("norange", "dropnorange") and matches:
            start = int(rng.split("=")[1].split("-")[0])
            if start >= len(data):
                await respond(416, [("content-range", f"bytes */{len(data)}"),
                                    ("content-length", "0")])
                return
        body = data[start:]
        base = [("etag", etag), ("accept-ranges", "bytes")]
        if mode == "weakdrop":
            base.append(("last-modified", modified))
        if mode == "gunzipped":
            base.append(("content-encoding", "gzip"))
        status = 206 if start else 200
        if start:
            cr = f"bytes {start}-{len(data) - 1}/{len(data)}"
            if mode == "badrange":
                cr = f"bytes 0-{len(data) - 1}/{len(data)}"
            base.append(("content-range", cr))
        if mode == "bigger":
            await respond(status, [*base, ("content-length", str(len(body) + 4096))], body)
            return
        if mode == "longer":
            await respond(status, base, body, more=True)
            await send({"type": "http.response.body", "body": b"\0" * 1024, "more_body": False})
            entry["sent"] += 1024
            return
        if mode == "slow":
            await respond(status, [*base, ("content-length", str(len(body)))], b"", more=True)
            for i in range(len(body)):
                await trio.sleep(0.5)
                await send({"type": "http.response.body", "body": body[i:i + 1],
                            "more_body": i + 1 < len(body)})
                entry["sent"] += 1
            return
        if mode == "cuts" and seen[key] <= 3:  # cut three times, each at a random byte
            cut = random.Random(f"{key}:{seen[key]}").randrange(1, max(len(body), 2))
            await respond(status, [*base, ("content-length", str(len(body)))], body[:cut],
                          more=True)
            raise ConnectionAbortedError("cutting the connection at a random byte")
        if mode in ("drop", "weakdrop", "dropnorange") and first:
            half = len(body) // 2
            await respond(status, [*base, ("content-length", str(len(body)))], body[:half],
                          more=True)
            raise ConnectionAbortedError("dropping the connection on purpose")
        await respond(status, [*base, ("content-length", str(len(body)))], body)
    finally:
        _log(entry)
