"""The ASGI lifespan handshake that hypercorn's trio worker expects of every app."""

from __future__ import annotations

from typing import Any


async def serve_lifespan(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Answer startup and shutdown; other non-HTTP scopes are ignored."""
    if scope["type"] != "lifespan":
        return
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
