"""A small document of a feed (a manifest, a signature, a key set) as a transport answers for
it: the HTTP client, a feed folder and the tests' simulator alike. Apart from the HTTP client
so that a host whose feeds are folders never loads httpx to name it."""

from __future__ import annotations

from dataclasses import dataclass

Validators = tuple[str | None, str | None]  # ETag, Last-Modified


@dataclass(frozen=True)
class Document:
    """Its bytes, or `missing` (404 or 410, when the caller said it is optional), or
    `not_modified` (the validators sent still hold), with the validators to send next time."""

    body: bytes = b""
    missing: bool = False
    not_modified: bool = False
    etag: str | None = None
    last_modified: str | None = None
