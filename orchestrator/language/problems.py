"""What is wrong with a saga module, where: the findings ``sagawire validate`` reports.

Loading a saga raises at the first saga that fails its checks, which is what the
sidecar wants (it must not start with a broken definition). A saga author running the
validator wants the opposite: every problem of every module, each with its file and
line, in one run. :func:`collecting` switches the load-time checks of one module to
that mode: inside it, :func:`~orchestrator.language.checks.check` hands its problems to
the :class:`Collector` instead of raising, so the module goes on to declare its next
saga. Only checks called from the module being collected are taken over: a module it
imports is checked the ordinary way (it is cached in ``sys.modules`` for everyone, and
must never be cached broken).

Severities: an **error** is a saga that will misbehave at run time (what the load-time
checks refuse, or an event that cannot find its instance); a **warning** is something
that is very likely a mistake but could be meant (two names one letter apart, an event
declared and never used). Errors make the validator exit 2; warnings only under
``--strict``.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Literal

__all__ = ["Collector", "Problem", "Severity", "active", "collecting"]

Severity = Literal["error", "warning"]

_LANGUAGE = Path(__file__).resolve().parent
"""The language package: its frames are the DSL at work, not the module declaring."""


@dataclass(frozen=True, slots=True)
class Problem:
    """One finding: what is wrong, in which saga, at which file and line."""

    severity: Severity
    message: str
    file: str = ""
    line: int | None = None
    saga: str | None = None

    @property
    def where(self) -> str:
        """``file:line`` (or what of it is known), the way compilers print it."""
        if not self.file:
            return "<sagas>"
        return f"{self.file}:{self.line}" if self.line else self.file

    def __str__(self) -> str:
        saga = f"saga {self.saga!r}: " if self.saga else ""
        return f"{self.where}: {self.severity}: {saga}{self.message}"


@dataclass(slots=True)
class Collector:
    """The checks' findings for the module at ``path``, by saga, with the line of each
    saga's declaration (what the module was executing when the saga was checked)."""

    path: Path
    problems: list[Problem] = field(default_factory=list)
    failed: set[int] = field(default_factory=set)
    """``id()`` of each definition that failed its checks (it exists, but must not run)."""
    lines: dict[int, int] = field(default_factory=dict)
    """``id()`` of each definition checked here -> the line that declared it."""

    def line_in_module(self) -> int | None:
        """The line that declared the saga being checked, if the module being collected
        declared it: the innermost caller outside the language package is that module
        (None: another module, say one it imports, which must raise as usual)."""
        frame: FrameType | None = sys._getframe(1)
        while frame is not None:
            path = Path(frame.f_code.co_filename).resolve()
            if not path.is_relative_to(_LANGUAGE):
                return frame.f_lineno if path == self.path else None
            frame = frame.f_back
        return None

    def take(self, definition: object, saga: str, found: list[str]) -> bool:
        """Record ``found`` for ``definition`` if the module being collected declared
        it (True); False if another module did, which must then raise as usual."""
        line = self.line_in_module()
        if line is None:
            return False
        self.lines[id(definition)] = line
        if found:
            self.failed.add(id(definition))
            self.problems.extend(
                Problem("error", p, str(self.path), line, saga) for p in dict.fromkeys(found)
            )
        return True


_ACTIVE: ContextVar[Collector | None] = ContextVar("sagawire_collector", default=None)


def active() -> Collector | None:
    """The collector of the module being validated, if any."""
    return _ACTIVE.get()


@contextlib.contextmanager
def collecting(path: Path) -> Iterator[Collector]:
    """Collect, rather than raise, the load-time problems of the module at ``path``."""
    collector = Collector(path.resolve())
    token = _ACTIVE.set(collector)
    try:
        yield collector
    finally:
        _ACTIVE.reset(token)
