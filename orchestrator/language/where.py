"""Where a saga module declares things: the line of a saga, an event, a command.

A frozen definition does not remember the lines it was declared on, and the validator
should point at the ``Event(...)`` with the typo, not only at the saga. The module's
source is parsed (never run again) and its calls indexed by the name of the function
called and the string given first: ``StepSaga("order", ...)``, ``Event("order.placed",
...)``, ``Send("inventory.reserve", ...)`` or ``.send("x.do", ...)``, and each call's
``correlate="..."``. A name built at run time (an f-string) is not found; the caller
then falls back to the saga's line.
"""

from __future__ import annotations

import ast
import functools
from dataclasses import dataclass
from pathlib import Path

__all__ = ["SourceIndex", "index_of"]

SAGA_CALLS = frozenset({"StepSaga", "StateMachine"})


@dataclass(frozen=True, slots=True)
class _Call:
    func: str
    first: str | None
    correlate: str | None
    line: int
    end: int
    correlate_line: int


class SourceIndex:
    """The calls of one module's source, searchable by what they declare."""

    def __init__(self, source: str) -> None:
        self._calls: list[_Call] = []
        try:
            tree = ast.parse(source)
        except SyntaxError:
            return
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", "")
            first = _text(node.args[0]) if node.args else None
            given = next((k.value for k in node.keywords if k.arg == "correlate"), None)
            correlate = None if given is None else _text(given)
            self._calls.append(
                _Call(
                    name,
                    first,
                    correlate,
                    node.lineno,
                    node.end_lineno or node.lineno,
                    node.lineno if given is None else given.lineno,
                )
            )
        self._calls.sort(key=lambda c: c.line)

    def saga(self, name: str) -> int | None:
        """The line of ``StepSaga(name, ...)`` or ``StateMachine(name, ...)``."""
        return self._find(SAGA_CALLS, name, None)

    def event(self, type: str, saga: str | None = None) -> int | None:
        """The line of ``Event(type, ...)``, inside the saga's call if it is there."""
        return self._find({"Event"}, type, saga)

    def send(self, type: str, saga: str | None = None) -> int | None:
        """The line of ``Send(type, ...)`` or ``.send(type, ...)``."""
        return self._find({"Send", "send"}, type, saga)

    def correlate(self, event: str, field: str, saga: str | None = None) -> int | None:
        """The line that says ``correlate=field`` for ``event``: its own ``Event(...)``,
        else the saga's ``correlate=``, else the event's line."""
        for call in self._in(saga):
            if call.func == "Event" and call.first == event and call.correlate == field:
                return call.correlate_line
        for call in self._in(saga):
            if call.func in SAGA_CALLS and call.correlate == field:
                return call.correlate_line
        return self.event(event, saga)

    def _in(self, saga: str | None) -> list[_Call]:
        """The calls within the saga's own call, then all the others."""
        span = next((c for c in self._calls if c.func in SAGA_CALLS and c.first == saga), None)
        if span is None:
            return self._calls
        inside = [c for c in self._calls if span.line <= c.line <= span.end]
        return inside + [c for c in self._calls if c not in inside]

    def _find(self, funcs: frozenset[str] | set[str], first: str, saga: str | None) -> int | None:
        for call in self._in(saga):
            if call.func in funcs and call.first == first:
                return call.line
        return None


def _text(node: ast.expr) -> str | None:
    """The string a literal argument is, else None."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    return None


@functools.lru_cache(maxsize=64)
def index_of(path: str) -> SourceIndex:
    """The index of the module at ``path`` (empty if it cannot be read)."""
    try:
        return SourceIndex(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError):
        return SourceIndex("")
