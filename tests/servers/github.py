"""A GitHub-like Releases API for tests (ASGI, under hypercorn), following the documented shapes.

State lives in GH_ROOT/api.json: {"releases": [{"tag_name", "draft", "prerelease",
"published_at", "assets": [names], "announce": {name: size}, "odd_assets": [name]}...] newest
first (`announce` overrides a listed size, `odd_assets` are names listed first with no file
behind them: a hostile API, H148-H149), "rate_limited": N, "reset_at": T,
"asset_host": H,
"require_token": T} (asset URLs on host H instead of the API's own; 401 Bad credentials
without `Authorization: Bearer T`); asset bytes are in
GH_ROOT/assets/<name>. Paths may carry the GitHub Enterprise prefix /api/v3.

  GET /repos/O/R/releases/latest        newest release that is neither draft nor prerelease
  GET /repos/O/R/releases               the list (drafts included, marked)
  GET /repos/O/R/releases/assets/ID     JSON, or with Accept: application/octet-stream a 302 to
                                        the storage host (http://127.0.0.2:PORT/storage/NAME)
  GET /storage/NAME                     the bytes
ETag / If-None-Match on the API; while "rate_limited" > 0, API requests get 403 with
x-ratelimit-remaining: 0 and x-ratelimit-reset. Every request goes to GH_LOG as a JSON line.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

from tests.servers.lifespan import serve_lifespan

ROOT = Path(os.environ.get("GH_ROOT", "."))
LOG = os.environ.get("GH_LOG")


def _load() -> dict[str, Any]:
    return json.loads((ROOT / "api.json").read_text())


def _asset_ids(state: dict[str, Any]) -> dict[str, int]:
    names = sorted({n for r in state["releases"] for n in r["assets"]})
    return {n: i + 1 for i, n in enumerate(names)}


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        await serve_lifespan(scope, receive, send)
        return
    headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
    host = headers.get("host", "")
    path = scope["path"]
    entry = {"host": host, "path": path, "authorization": headers.get("authorization"),
             "accept": headers.get("accept"), "inm": headers.get("if-none-match"), "status": 0}

    async def respond(status: int, body: bytes = b"", extra: list[tuple[str, str]] | None = None,
                      content_type: str = "application/json") -> None:
        entry["status"] = status
        hdrs = [("content-type", content_type), ("content-length", str(len(body))),
                *(extra or [])]
        await send({"type": "http.response.start", "status": status,
                    "headers": [(k.encode(), v.encode()) for k, v in hdrs]})
        await send({"type": "http.response.body", "body": body})

    try:
        if path.startswith("/storage/"):
            data = (ROOT / "assets" / path.removeprefix("/storage/")).read_bytes()
            await respond(200, data, content_type="application/octet-stream")
            return
        prefix = "/api/v3" if path.startswith("/api/v3/") else ""
        base = f"http://{host}{prefix}"
        parts = path.removeprefix(prefix).strip("/").split("/")
        state = _load()
        if state.get("rate_limited", 0) > 0:
            state["rate_limited"] -= 1
            (ROOT / "api.json").write_text(json.dumps(state))
            reset = str(state.get("reset_at") or int(time.time()) + 2)
            await respond(403, b'{"message": "API rate limit exceeded"}',
                          [("x-ratelimit-remaining", "0"), ("x-ratelimit-reset", reset)])
            return
        wanted = state.get("require_token")
        if wanted and headers.get("authorization") != f"Bearer {wanted}":
            await respond(401, b'{"message": "Bad credentials", '
                               b'"documentation_url": "https://docs.github.com/rest"}')
            return
        if len(parts) < 4 or parts[0] != "repos" or parts[3] != "releases":
            await respond(404, b'{"message": "Not Found"}')
            return
        owner, repo = parts[1], parts[2]
        ids = _asset_ids(state)

        # "asset_host": a hostile API names asset URLs on another host (G134)
        asset_base = base.replace(host.rsplit(":", 1)[0], state["asset_host"]) \
            if state.get("asset_host") else base

        def asset_json(name: str, tag: str, announce: dict[str, int] | None = None) -> \
                dict[str, Any]:
            size = (announce or {}).get(name)
            if size is None:
                size = (ROOT / "assets" / name).stat().st_size
            return {"url": f"{asset_base}/repos/{owner}/{repo}/releases/assets/{ids[name]}",
                    "id": ids[name], "name": name, "label": "", "state": "uploaded",
                    "content_type": "application/octet-stream", "size": size,
                    "download_count": 0,
                    "browser_download_url":
                        f"http://{host}/{owner}/{repo}/releases/download/{tag}/{name}"}

        def release_json(r: dict[str, Any]) -> dict[str, Any]:
            return {"url": f"{base}/repos/{owner}/{repo}/releases/1", "tag_name": r["tag_name"],
                    "name": r["tag_name"], "draft": r.get("draft", False),
                    "prerelease": r.get("prerelease", False),
                    "published_at": r.get("published_at", "2026-11-28T12:00:00Z"),
                    "assets": [{"url": f"{asset_base}/repos/{owner}/{repo}/releases/assets/0",
                                "name": n, "size": 1} for n in r.get("odd_assets", [])] +
                              [asset_json(n, r["tag_name"], r.get("announce"))
                               for n in r["assets"]]}

        if parts[4:] == ["latest"]:
            stable = [r for r in state["releases"] if not r.get("draft") and
                      not r.get("prerelease")]
            if not stable:
                await respond(404, b'{"message": "Not Found"}')
                return
            body = json.dumps(release_json(stable[0])).encode()
        elif parts[4:] == []:
            body = json.dumps([release_json(r) for r in state["releases"]]).encode()
        elif parts[4:5] == ["assets"] and len(parts) == 6:
            by_id = {v: k for k, v in ids.items()}
            name = by_id.get(int(parts[5]))
            if name is None:
                await respond(404, b'{"message": "Not Found"}')
                return
            if headers.get("accept") == "application/octet-stream":
                port = host.rsplit(":", 1)[1]
                await respond(302, b"", [("location", f"http://127.0.0.2:{port}/storage/{name}")])
                return
            body = json.dumps(asset_json(name, "")).encode()
        else:
            await respond(404, b'{"message": "Not Found"}')
            return
        etag = '"' + hashlib.sha256(body).hexdigest()[:20] + '"'
        if headers.get("if-none-match") == etag:
            await respond(304, b"", [("etag", etag)])
            return
        await respond(200, body, [("etag", etag), ("x-ratelimit-remaining", "4999")])
    finally:
        if LOG:
            with open(LOG, "a") as f:
                f.write(json.dumps(entry) + "\n")
