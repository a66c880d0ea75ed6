"""The web console in a real browser: Debian's Chromium, driven by Playwright.

The pieces, in the order a test meets them: :mod:`~tests.console.rig` (a real sidecar
on the memory broker and SQLite, with the simulated services, in a background thread),
:mod:`~tests.console.sagas_console` (the sagas it loads), :mod:`~tests.console.browser`
(Chromium's launch, the page guard, screenshots) and the fixtures in ``conftest.py``.
How to run them and where the screenshots land: ``docs/testing.md``.
"""
