"""The configuration file as read from disk: the file's own safety, then `config.parse`, then the
safety of every path it names (catalogue G127, G128, G145). Apart from `config`, which only
reads text, because the path checks need the parsed configuration and `config` must not need
them.
"""

from __future__ import annotations

from pathlib import Path

from updaterd.errors import ConfigError
from updaterd.host import pathtrust
from updaterd.host.config import Config, parse


def load(path: str | Path) -> Config:
    """Read and validate the configuration file at `path`, and the safety of every path it
    names (catalogue G127, G128, G145): a file or folder another user could change is
    refused here, so at start, reload and `check-config` alike."""
    p = Path(path)
    unsafe = pathtrust.problem(p, "configuration file")
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError([f"{p}: cannot read: {e.strerror or e}"]) from None
    except UnicodeDecodeError as e:
        raise ConfigError([f"{p}: not UTF-8 text ({e.reason} at byte {e.start})"]) from None
    try:
        config = parse(text, str(p))
    except ConfigError as e:
        raise ConfigError(([unsafe] if unsafe else []) + e.problems) from None
    problems = ([unsafe] if unsafe else []) + pathtrust.setup_problems(config)
    if problems:
        raise ConfigError(problems)
    return config
