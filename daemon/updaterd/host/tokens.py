"""API tokens, read once at start and at each reload, then kept in memory only.

A token named by `token_env` is removed from the process environment as soon as it is read, so
no command updaterd runs (restart, health check, a self-update trial) can inherit it, and one
app's command never sees another app's token (catalogue G132). A `token_file` is read at
the same moments, so the file may stay readable by root alone and a reload picks up a new one.
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING

from updaterd.errors import FeedError

if TYPE_CHECKING:
    from updaterd.host.config import AppConfig, Config

MAX_TOKEN_FILE = 64 << 10
_from_env: dict[str, str] = {}
_from_file: dict[str, str | FeedError] = {}
_warned: set[str] = set()
log = logging.getLogger("updaterd.tokens")


def _read_file(path: str) -> str | FeedError:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as e:
        return FeedError(f"token_file: cannot read {path}: {e.strerror or e}")
    with os.fdopen(fd, "rb") as f:
        data = f.read(MAX_TOKEN_FILE + 1)
    if len(data) > MAX_TOKEN_FILE:
        return FeedError(f"token_file: {path} is larger than {MAX_TOKEN_FILE} bytes")
    return data.decode("utf-8", "replace").strip()


def load(config: Config) -> None:
    """Take the tokens the configuration names out of the environment and the token files."""
    for app in config.apps.values():
        if app.token_env:
            value = os.environ.pop(app.token_env, None)
            if value is not None:
                _from_env[app.token_env] = value.strip()
        if app.token_file:
            _from_file[app.token_file] = _read_file(app.token_file)


def get(cfg: AppConfig) -> str | None:
    """The app's token, or None: GitHub serves public repositories without one, so a
    `token_env` that names an unset variable is warned about once, not fatal. FeedError when
    a `token_file` cannot be read."""
    if cfg.token_env:
        token = _from_env.get(cfg.token_env)
        if not token and cfg.token_env not in _warned:
            _warned.add(cfg.token_env)
            log.warning("token_env: the environment has no %s; asking GitHub without a token "
                        "(60 requests an hour, public repositories only)", cfg.token_env)
        return token or None
    if cfg.token_file:
        found = _from_file.get(cfg.token_file) or _read_file(cfg.token_file)
        if isinstance(found, FeedError):
            raise found
        return found
    return None


def environment() -> dict[str, str]:
    """The tokens taken from the environment, for an updaterd that re-executes into a new
    version of itself (which must read them again)."""
    return dict(_from_env)
