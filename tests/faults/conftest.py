"""The fault suite's session summary: every figure the tests reported, in one place."""

from __future__ import annotations

import pytest

from tests.faults.mode import MODE
from tests.faults.report import FIGURES


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if FIGURES:
        terminalreporter.section(f"fault figures ({MODE})")
        for line in FIGURES:
            terminalreporter.write_line(line)
