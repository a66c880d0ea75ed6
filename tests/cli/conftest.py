"""Fixtures the CLI and service tests share (``client`` serves the ``sidecar`` fixture of
the module that asks for it)."""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
import structlog
from typer.testing import CliRunner

from orchestrator.sidecar.http import build_app
from orchestrator.sidecar.service import Sidecar


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


@pytest.fixture
async def client(sidecar: Sidecar) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=build_app(sidecar))
    async with httpx.AsyncClient(transport=transport, base_url="http://sidecar") as c:
        yield c
