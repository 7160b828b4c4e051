"""Fixtures of the systemd suite: the package, built once per run."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.systemd.container import build_package


@pytest.fixture(scope="session")
def deb() -> Path:
    """dist/updaterd_VERSION_ARCH.deb, made by the README's first line on this host."""
    return build_package()
