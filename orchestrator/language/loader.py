"""Load saga definitions from a file, a directory of files, or a dotted module name.

Every :class:`~orchestrator.language.definition.SagaDefinition` found at module level is
taken. Two modes:

* :func:`load_sagas` (the sidecar, the harness, the graph): import errors and failed
  load-time checks become one :class:`DefinitionError` naming the module, so
  ``sagawire run`` can print one clear line and exit 2.
* :func:`collect_sagas` (``sagawire validate``): every problem of every module of
  every target, each a :class:`~orchestrator.language.problems.Problem` with its file
  and line, and the sagas that passed. A module whose sagas fail their checks is
  never left in ``sys.modules``, so a later :func:`load_sagas` of it fails as it should.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import re
import sys
import traceback
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

from orchestrator.language.definition import SagaDefinition
from orchestrator.language.problems import Collector, Problem, collecting
from schemas.errors import DefinitionError

__all__ = ["Declared", "LoadReport", "collect_sagas", "load_sagas", "sagas_in"]


def sagas_in(module: ModuleType) -> list[SagaDefinition]:
    """The saga definitions defined at module level, in definition order."""
    found: dict[int, SagaDefinition] = {}
    for value in vars(module).values():
        if isinstance(value, SagaDefinition):
            found.setdefault(id(value), value)
    return list(found.values())


def _module_name(path: Path) -> str:
    digest = hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:8]
    return f"sagawire_sagas_{path.stem}_{digest}"


def _import_file(path: Path) -> ModuleType:
    name = _module_name(path)
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise DefinitionError(f"cannot import saga file {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except DefinitionError:
        sys.modules.pop(name, None)
        raise
    except Exception as exc:
        sys.modules.pop(name, None)
        raise DefinitionError(
            f"saga module {path} failed to import: {type(exc).__name__}: {_one_line(exc)}"
        ) from exc
    return module


def _import_dotted(name: str) -> ModuleType:
    try:
        return importlib.import_module(name)
    except DefinitionError:
        raise
    except ModuleNotFoundError as exc:
        if exc.name and name.startswith(exc.name):
            raise DefinitionError(f"no saga file, directory or module named {name!r}") from exc
        raise DefinitionError(f"saga module {name} failed to import: {exc}") from exc
    except Exception as exc:
        raise DefinitionError(
            f"saga module {name} failed to import: {type(exc).__name__}: {_one_line(exc)}"
        ) from exc


def _files(target: str) -> list[Path] | None:
    """The saga files ``target`` names (None: it is a dotted module name)."""
    path = Path(target)
    if path.is_dir():
        return sorted(p for p in path.glob("*.py") if not p.name.startswith("_"))
    if path.suffix == ".py" or path.exists():
        if not path.exists():
            raise DefinitionError(f"saga file {target} does not exist")
        return [path]
    return None


def load_sagas(target: str) -> list[SagaDefinition]:
    """All sagas in ``target``: a ``.py`` file, a directory of them, or a module name."""
    files = _files(target)
    modules = [_import_dotted(target)] if files is None else [_import_file(p) for p in files]
    sagas = [s for m in modules for s in sagas_in(m)]
    if not sagas:
        raise DefinitionError(f"no saga definitions found in {target}")
    names = [s.name for s in sagas]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise DefinitionError(f"saga name(s) {', '.join(dup)} defined more than once in {target}")
    return sagas


def _one_line(exc: BaseException) -> str:
    """``exc``'s message on one line (pydantic's span several): the CLI's error is one
    line, and a log line one record."""
    return " ".join(str(exc).split())


# -- collecting mode (``sagawire validate``) -------------------------------------------


@dataclass(frozen=True, slots=True)
class Declared:
    """A saga found in a module, where it was declared, and whether it passed."""

    saga: SagaDefinition
    file: str
    line: int | None
    ok: bool


@dataclass(slots=True)
class LoadReport:
    """What :func:`collect_sagas` found: every saga declared (``declared``, those that
    failed their checks included) and every problem, in the order met."""

    declared: list[Declared] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)

    @property
    def sagas(self) -> list[SagaDefinition]:
        """The sagas that passed their load-time checks."""
        return [d.saga for d in self.declared if d.ok]


def collect_sagas(targets: Sequence[str]) -> LoadReport:
    """Load every module of every target, going on past failures (see the module docs)."""
    report = LoadReport()
    for target in targets:
        before = (len(report.declared), len(report.problems))
        try:
            files = _files(target)
        except DefinitionError as exc:
            report.problems.append(Problem("error", str(exc), target))
            continue
        if files is None:
            _collect_dotted(target, report)
        else:
            for path in files:
                _collect_file(path, report)
        if (len(report.declared), len(report.problems)) == before:
            report.problems.append(Problem("error", "no saga definitions found", target))
    seen: dict[str, Declared] = {}
    for d in report.declared:
        first = seen.setdefault(d.saga.name, d)
        if first is not d:
            report.problems.append(
                Problem(
                    "error",
                    f"the saga name is already taken by {first.file}:{first.line}; saga"
                    " names must be unique among the sagas a sidecar runs",
                    d.file,
                    d.line,
                    d.saga.name,
                )
            )
    return report


def _collect_file(path: Path, report: LoadReport) -> None:
    name = _module_name(path)
    module = sys.modules.get(name)
    if module is not None:  # loaded (and checked) before, by either mode
        _take(module, str(path), None, report)
        return
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        report.problems.append(Problem("error", "cannot be imported as Python", str(path)))
        return
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    with collecting(path) as collector:
        try:
            spec.loader.exec_module(module)
        except Exception as exc:
            sys.modules.pop(name, None)
            report.problems.extend(_import_problems(exc, path))
            return
    if collector.failed:
        sys.modules.pop(name, None)
    _take(module, str(path), collector, report)


def _collect_dotted(name: str, report: LoadReport) -> None:
    module = sys.modules.get(name)
    if module is not None:
        _take(module, getattr(module, "__file__", None) or name, None, report)
        return
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.origin or not spec.has_location:
        report.problems.append(
            Problem("error", f"no saga file, directory or module named {name!r}", name)
        )
        return
    path = Path(spec.origin)
    with collecting(path) as collector:
        try:
            module = importlib.import_module(name)
        except Exception as exc:
            sys.modules.pop(name, None)
            report.problems.extend(_import_problems(exc, path))
            return
    if collector.failed:
        sys.modules.pop(name, None)
    _take(module, str(path), collector, report)


def _take(module: ModuleType, file: str, collector: Collector | None, report: LoadReport) -> None:
    for saga in sagas_in(module):
        line = collector.lines.get(id(saga)) if collector else None
        ok = collector is None or id(saga) not in collector.failed
        report.declared.append(Declared(saga, file, line, ok))
    if collector is not None:
        report.problems.extend(collector.problems)


_SAGA_PROBLEMS = re.compile(
    r"saga '(?P<saga>[^']+)'(?:: (?P<one>.*)| has \d+ problems:\n(?P<many>.*))", re.S
)
"""What :func:`~orchestrator.language.checks.raise_problems` writes: one problem, or a list."""


def _import_problems(exc: BaseException, path: Path) -> list[Problem]:
    """The problems an exception raised while importing ``path`` stands for, each at
    the line of ``path`` where it was raised (a syntax error: where it is)."""
    file = str(path)
    if isinstance(exc, SyntaxError) and exc.filename and Path(exc.filename) == path:
        text = f"SyntaxError: {exc.msg}"
        return [Problem("error", text, file, exc.lineno)]
    line = None
    for frame in traceback.extract_tb(exc.__traceback__):
        if Path(frame.filename).resolve() == path.resolve():
            line = frame.lineno
    if isinstance(exc, SyntaxError):  # in a module it imports
        where = f"{exc.filename}:{exc.lineno}"
        return [Problem("error", f"failed to import: SyntaxError: {exc.msg} ({where})", file, line)]
    if not isinstance(exc, DefinitionError):
        text = f"failed to import: {type(exc).__name__}: {_one_line(exc)}"
        return [Problem("error", text, file, line)]
    found = _SAGA_PROBLEMS.fullmatch(str(exc))
    if found is None:
        return [Problem("error", _one_line(exc), file, line)]
    saga = found["saga"]
    if found["one"] is not None:
        return [Problem("error", found["one"], file, line, saga)]
    items = [p.removeprefix("  - ") for p in found["many"].splitlines() if p.strip()]
    return [Problem("error", p, file, line, saga) for p in items]
