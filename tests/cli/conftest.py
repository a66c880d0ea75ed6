"""Fixtures the CLI and service tests share."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator

import pytest
import structlog
from typer.testing import CliRunner


@pytest.fixture
def runner(monkeypatch: pytest.MonkeyPatch) -> Iterator[CliRunner]:
    """A runner that puts logging back as it found it (commands configure it)."""
    for name in list(os.environ):
        if name.startswith("SAGAWIRE_"):
            monkeypatch.delenv(name)
    saved = structlog.get_config()
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield CliRunner()
    structlog.configure(**saved)
    root.handlers[:] = handlers
    root.setLevel(level)
