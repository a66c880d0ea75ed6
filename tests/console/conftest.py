"""Fixtures of the console's browser tests.

``console`` (once for the package): a real sidecar with a few dozen orders already
through it, every ending represented (:mod:`tests.console.rig`). ``chromium`` (once):
Debian's Chromium under Playwright; missing, it skips the tests on a laptop and fails
them under ``CI=true``. Per test: ``page`` (a fresh context at 1280x800, with its
:class:`~tests.console.browser.PageLog` as ``page_log``) and ``shot``, which saves a
full-page screenshot; one more is always taken at teardown (``teardown`` or, when the
test failed, ``failed``).

Browser tests are plain ``def`` tests marked ``browser``: Playwright's sync API runs
its own event loop and refuses to run inside one.
"""

from __future__ import annotations

import os
import time
from collections.abc import Generator, Iterator
from pathlib import Path

import pytest

from tests.console.rig import ConsoleSidecar
from tests.support.services import missing

try:
    from playwright.sync_api import Browser, Page, sync_playwright
    from playwright.sync_api import Error as PlaywrightError

    from tests.console.browser import (
        ACTION_TIMEOUT_MS,
        ARTIFACTS,
        CHROMIUM_ENV,
        VIEWPORT,
        PageLog,
        Screenshots,
        chromium_path,
        launch,
        slug,
    )
except ImportError as exc:  # no dev dependencies: the tests say so (and fail under CI)
    PLAYWRIGHT_MISSING: str | None = f"playwright is not installed ({exc}): pip install -e '.[dev]'"
else:
    PLAYWRIGHT_MISSING = None

PRELOADED = 40
"""Orders placed at start: with the rig's seed, every ending appears among them."""
SETTLE_TIMEOUT = 60.0


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A test that opens the browser is a browser test: marked, so ``-m 'not browser'``
    runs the rest of the suite on a machine without Chromium and says nothing skipped."""
    for item in items:
        if "chromium" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.browser)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Keep each phase's report on the item, so ``page``'s teardown knows a failure."""
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report


# -- the sidecar ------------------------------------------------------------------------


@pytest.fixture(scope="package")
def console(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ConsoleSidecar]:
    """The sidecar the console talks to, with :data:`PRELOADED` orders settled: each
    completed, compensated, compensation_failed, or running (waiting at shipping)."""
    rig = ConsoleSidecar(tmp_path_factory.mktemp("console"))
    rig.start()
    try:
        rig.place_orders(PRELOADED)
        rig.wait_until("the preloaded orders settle", lambda: _settled(rig), SETTLE_TIMEOUT)
        yield rig
    finally:
        rig.stop()


def _settled(rig: ConsoleSidecar) -> bool:
    """Every ending is there and no order is in a quick step any more."""
    counts = rig.statuses("order")
    endings = ("completed", "compensated", "compensation_failed", "shipping/running")
    return all(counts.get(k, 0) > 0 for k in endings) and counts.get("running", 0) == counts.get(
        "shipping/running", 0
    )


# -- the browser ------------------------------------------------------------------------


@pytest.fixture(scope="package")
def chromium() -> Iterator[Browser]:
    """Headless Debian Chromium, shared by the package's tests (each gets its own
    context: no cookie, storage or token leaks from one test to the next)."""
    if PLAYWRIGHT_MISSING is not None:
        missing(PLAYWRIGHT_MISSING)
    chosen = os.environ.get(CHROMIUM_ENV)
    if chosen and not Path(chosen).is_file():
        missing(f"${CHROMIUM_ENV} is {chosen!r}, which is no file")
    executable = chromium_path()
    if executable is None:
        missing(
            f"no Chromium at /usr/bin/chromium, on PATH or in ${CHROMIUM_ENV}; install it with:"
            " apt-get install -y --no-install-recommends chromium (.ci/run does)"
        )
    with sync_playwright() as playwright:
        started = time.monotonic()
        browser = launch(playwright, executable)
        print(  # shown with -s: the figure docs/testing.md quotes
            f"\nchromium {browser.version} ({executable}) started in"
            f" {time.monotonic() - started:.2f}s"
        )
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def page_log(console: ConsoleSidecar) -> PageLog:
    """What went wrong in ``page`` (requests off the sidecar, uncaught JS errors)."""
    return PageLog(origin=console.base_url)


@pytest.fixture
def _browsing(
    request: pytest.FixtureRequest, chromium: Browser, page_log: PageLog
) -> Iterator[tuple[Page, Screenshots]]:
    """One test's page and its screenshots; the teardown screenshot and checks."""
    context = chromium.new_context(viewport=VIEWPORT)
    context.set_default_timeout(ACTION_TIMEOUT_MS)
    page = context.new_page()
    page_log.attach(page)
    shots = Screenshots(page, ARTIFACTS / slug(request.node.name))
    try:
        yield page, shots
    finally:
        call = getattr(request.node, "rep_call", None)
        failed = call is not None and call.failed
        if failed:  # shown under the failure with the captured output
            print(f"screenshots: {shots.directory}")
            if page_log.console:
                print("the browser's console said:\n  " + "\n  ".join(page_log.console))
        try:
            shots("failed" if failed else "teardown")
        except PlaywrightError as exc:  # a crashed page must not hide the test's own error
            print(f"no teardown screenshot: {exc}")
        finally:
            context.close()
    problems = page_log.problems()
    if problems:
        pytest.fail("the page misbehaved:\n  " + "\n  ".join(problems), pytrace=False)


@pytest.fixture
def page(_browsing: tuple[Page, Screenshots]) -> Page:
    """A new page at 1280x800 in a fresh context (no storage shared between tests).
    Requests off the sidecar are aborted; if any were made, or JavaScript threw
    uncaught, the test fails at teardown (a test expecting it clears ``page_log``)."""
    return _browsing[0]


@pytest.fixture
def shot(_browsing: tuple[Page, Screenshots]) -> Screenshots:
    """``shot("label")`` saves ``test-artifacts/screenshots/<test>/<nn>-<label>.png``."""
    return _browsing[1]
