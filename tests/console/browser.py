"""Debian's Chromium under Playwright, and what a browser test keeps of its pages.

Playwright drives the system browser (``executable_path``, :func:`chromium_path`); its
own downloaded browsers are never used, so nothing here calls ``playwright install``
and the tests need no network. Playwright starts Chromium with ``--headless`` (the new
headless mode, the one real Chromium has had since 132) and, unless
``chromium_sandbox=True``, ``--no-sandbox``: CI runs as root, where Chromium's sandbox
refuses to start.

Two guards make a page's faults the test's: :class:`PageLog` aborts and records every
request that leaves the sidecar's origin (the console ships its assets and loads
nothing from a CDN, so a request elsewhere is a bug, and on a machine without network
it would only hang) and records uncaught JavaScript errors. :class:`Screenshots`
saves full-page PNGs under ``test-artifacts/screenshots/<test name>/``.
"""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from playwright.sync_api import (
    Browser,
    ConsoleMessage,
    Page,
    Playwright,
    Request,
    Route,
    ViewportSize,
)

__all__ = [
    "ACTION_TIMEOUT_MS",
    "ARTIFACTS",
    "CHROMIUM_ENV",
    "VIEWPORT",
    "PageLog",
    "Screenshots",
    "chromium_path",
    "launch",
    "slug",
]

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts" / "screenshots"
CHROMIUM_ENV = "SAGAWIRE_CHROMIUM"
"""A Chromium other than Debian's ``/usr/bin/chromium`` (its path)."""
SYSTEM_CHROMIUM = ("/usr/bin/chromium", "chromium", "chromium-browser")
VIEWPORT: ViewportSize = {"width": 1280, "height": 800}
LAUNCH_TIMEOUT_MS = 30_000
ACTION_TIMEOUT_MS = 10_000


def chromium_path() -> str | None:
    """The Chromium to drive: ``$SAGAWIRE_CHROMIUM``, else Debian's, else one on PATH."""
    chosen = os.environ.get(CHROMIUM_ENV)
    if chosen:
        return chosen if Path(chosen).is_file() else None
    for name in SYSTEM_CHROMIUM:
        found = shutil.which(name)
        if found:
            return found
    return None


def launch(playwright: Playwright, executable: str) -> Browser:
    """Headless Chromium from ``executable``; Playwright adds ``--headless`` and
    ``--no-sandbox`` itself (see the module's docstring)."""
    return playwright.chromium.launch(
        executable_path=executable,
        headless=True,
        chromium_sandbox=False,
        timeout=LAUNCH_TIMEOUT_MS,
    )


@dataclass
class PageLog:
    """What went wrong in a page, beyond what the test checks: requests to another
    origin than ``origin`` (aborted), uncaught JavaScript errors, and the console's
    errors and warnings. The ``page`` fixture fails the test if ``offsite`` or
    ``errors`` is left non-empty; a test expecting some asserts on them and clears them."""

    origin: str
    offsite: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    console: list[str] = field(default_factory=list)
    """The page's console errors and warnings (a refused fetch, a CSP violation): shown
    when a test fails, never a failure themselves (a test may provoke a 409 on purpose)."""

    def attach(self, page: Page) -> None:
        page.route("**/*", self._route)
        page.on("pageerror", lambda exc: self.errors.append(f"{exc.name}: {exc.message}"))
        page.on("console", self._console)

    def _console(self, message: ConsoleMessage) -> None:
        if message.type in ("error", "warning"):
            self.console.append(f"{message.type}: {message.text}")

    def _route(self, route: Route, request: Request) -> None:
        parts = urlsplit(request.url)
        if parts.scheme in ("data", "blob") or f"{parts.scheme}://{parts.netloc}" == self.origin:
            route.continue_()
            return
        self.offsite.append(request.url)
        route.abort("blockedbyclient")

    def clear(self) -> None:
        self.offsite.clear()
        self.errors.clear()
        self.console.clear()

    def problems(self) -> list[str]:
        return [f"request off the sidecar: {u}" for u in self.offsite] + [
            f"uncaught JavaScript error: {e}" for e in self.errors
        ]


class Screenshots:
    """Full-page screenshots of one test's page, numbered in the order taken:
    ``<directory>/<nn>-<label>.png``. The directory is emptied first, so what is there
    after a run is that run's."""

    def __init__(self, page: Page, directory: Path) -> None:
        self.page = page
        self.directory = directory
        self.taken: list[Path] = []
        shutil.rmtree(directory, ignore_errors=True)
        directory.mkdir(parents=True)

    def __call__(self, label: str) -> Path:
        """Save the page as it is now; the file's path."""
        path = self.directory / f"{len(self.taken) + 1:02d}-{slug(label)}.png"
        self.page.screenshot(path=path, full_page=True)
        self.taken.append(path)
        return path


def slug(text: str) -> str:
    """``text`` as a file name: letters, digits, ``.``, ``_`` and ``-`` (others become ``-``)."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-") or "page"
