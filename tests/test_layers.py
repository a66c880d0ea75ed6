"""The layers of sagawire, checked from the source: who may import whom.

Every module under ``orchestrator/``, ``adapters/``, ``schemas/`` and ``sagas/`` is parsed
with :mod:`ast` (never imported, so a module that does not import still gets checked)
and each of its imports of our own modules becomes an edge. Every import counts:
module-level ones, those under ``if TYPE_CHECKING:`` (a cycle that only the type
checker sees is still two modules that cannot be understood apart) and those inside
functions (a lazy import defers the cost, not the dependency). The rules:

* no import cycles, anywhere;
* the layers point one way (``MAY_IMPORT``): ``schemas`` is the contract and imports
  nothing of ours; ``adapters`` imports only ``schemas``; inside ``orchestrator/``,
  language <- engine <- sidecar <- tooling, with ``store`` beside the language (it
  knows rows, not sagas), and ``client`` (the services' library) beside the engine: it
  knows transports, envelopes and, for durable de-duplication, the stores' URLs and
  errors, never a saga, so a service imports no engine; tooling's simulated services
  use it;
* the composition roots (``orchestrator/__init__.py``, ``cli.py``, ``testing.py``) may
  import anything and are imported by no layer; ``sagas/`` (the shipped examples) import
  only the public DSL and ``schemas``, and nothing imports them;
* the pure core, ``orchestrator/engine/decide.py``, reaches no store, no adapter and no
  clock, not even through the modules it imports.

An import names the most specific of our modules it reaches (``from a.b import c`` is
``a.b.c`` if that is a module, else ``a.b``); the parent packages Python runs on the way
are not edges. Imports by string (``importlib.import_module``) are not seen.
"""

from __future__ import annotations

import ast
import functools
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("orchestrator", "adapters", "schemas", "sagas")

COMPOSITION_ROOTS = frozenset({"orchestrator", "orchestrator.cli", "orchestrator.testing"})
"""They put the layers together (the public DSL, the ``sagawire`` command line, the test
harness): exempt as importers. No layer imports them (``sagas`` excepted, below)."""

SUBPACKAGES = ("language", "engine", "store", "client", "sidecar", "tooling")

MAY_IMPORT: dict[str, frozenset[str]] = {
    "schemas": frozenset({"schemas"}),
    "adapters": frozenset({"adapters", "schemas"}),
    "errors": frozenset({"schemas"}),  # orchestrator/errors.py re-exports schemas.errors
    "language": frozenset({"language", "errors", "schemas"}),
    "store": frozenset({"store", "errors", "schemas"}),
    "engine": frozenset({"engine", "language", "store", "adapters", "errors", "schemas"}),
    "client": frozenset({"client", "store", "adapters", "errors", "schemas"}),
    "sidecar": frozenset(
        {"sidecar", "engine", "language", "store", "adapters", "errors", "schemas"}
    ),
    "tooling": frozenset(
        {
            "tooling",
            "sidecar",
            "engine",
            "client",
            "language",
            "store",
            "adapters",
            "errors",
            "schemas",
        }
    ),
    "sagas": frozenset({"sagas", "language", "schemas"}),
}
"""For each layer, the layers its modules may import."""

ALSO_MAY_IMPORT: dict[str, dict[str, str]] = {
    "store": {
        "adapters._util": "redact_url: a store URL is reported and logged without its password",
    },
    "sagas": {
        "orchestrator": "the public DSL (Event, Send, Step, StepSaga...) as the README shows it",
    },
}
"""Single modules a layer may import outside ``MAY_IMPORT``, each with why."""

PURE_CORE = "orchestrator.engine.decide"
IMPURE = ("orchestrator.store", "adapters", "orchestrator.engine.clock")
"""What the pure core must not reach: I/O (stores, transports) and time."""


@dataclass(frozen=True)
class Import:
    """One import statement of ours: ``importer`` reaches ``target``."""

    importer: str
    target: str
    path: Path
    line: int
    text: str
    how: str  # "" (module level), "under TYPE_CHECKING", "lazy, in f()"

    def __str__(self) -> str:
        where = f"{self.path.relative_to(ROOT)}:{self.line}"
        how = f" [{self.how}]" if self.how else ""
        return f"{where}: {self.importer} imports {self.target} (`{self.text}`){how}"


@functools.cache
def modules() -> dict[str, Path]:
    """Every module of ours by dotted name (a package by its ``__init__.py``)."""
    found: dict[str, Path] = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def _ours(name: str) -> str | None:
    """The most specific module of ours that ``name`` reaches, or None (not ours)."""
    known = modules()
    while name and name not in known:
        name = name.rpartition(".")[0]
    return name or None


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _targets(module: str, path: Path, node: ast.Import | ast.ImportFrom) -> set[str]:
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    else:
        base = node.module or ""
        if node.level:  # relative: resolved against the importer's package
            package = module if path.name == "__init__.py" else module.rpartition(".")[0]
            for _ in range(node.level - 1):
                package = package.rpartition(".")[0]
            base = f"{package}.{base}" if base else package
        names = [f"{base}.{alias.name}" for alias in node.names]
    return {t for t in map(_ours, names) if t is not None and t != module}


def _imports_in(module: str, path: Path) -> Iterator[Import]:
    source = path.read_text(encoding="utf-8")

    def visit(nodes: Iterable[ast.AST], how: str) -> Iterator[Import]:
        for node in nodes:
            if isinstance(node, ast.Import | ast.ImportFrom):
                text = " ".join((ast.get_source_segment(source, node) or "").split())
                for target in sorted(_targets(module, path, node)):
                    yield Import(module, target, path, node.lineno, text, how)
            elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                yield from visit(ast.iter_child_nodes(node), how or f"lazy, in {node.name}()")
            elif isinstance(node, ast.If) and _is_type_checking(node.test):
                yield from visit(node.body, "under TYPE_CHECKING")
                yield from visit(node.orelse, how)
            else:
                yield from visit(ast.iter_child_nodes(node), how)

    yield from visit([ast.parse(source, filename=str(path))], "")


@functools.cache
def imports() -> tuple[Import, ...]:
    """Every import of one of our modules by another, however it is guarded."""
    return tuple(imp for module, path in modules().items() for imp in _imports_in(module, path))


def layer_of(module: str) -> str | None:
    """The layer a module belongs to; "root" for a composition root; None if none."""
    if module in COMPOSITION_ROOTS:
        return "root"
    top, _, rest = module.partition(".")
    if top != "orchestrator":
        return top
    sub = rest.partition(".")[0]
    if sub in SUBPACKAGES:
        return sub
    return "errors" if module == "orchestrator.errors" else None


def _edges() -> dict[str, list[Import]]:
    graph: dict[str, list[Import]] = {m: [] for m in modules()}
    for imp in imports():
        graph[imp.importer].append(imp)
    return graph


def _cycles(graph: dict[str, list[Import]]) -> Iterator[list[str]]:
    """The strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    for start in graph:
        if start in index:
            continue
        work = [(start, iter(graph[start]))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, edges = work[-1]
            for imp in edges:
                if imp.target not in index:
                    index[imp.target] = low[imp.target] = len(index)
                    stack.append(imp.target)
                    on_stack.add(imp.target)
                    work.append((imp.target, iter(graph[imp.target])))
                    break
                if imp.target in on_stack:
                    low[node] = min(low[node], index[imp.target])
            else:
                work.pop()
                if work:
                    parent = work[-1][0]
                    low[parent] = min(low[parent], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        yield sorted(component)


def _path(
    graph: dict[str, list[Import]], start: str, goal: set[str], within: set[str]
) -> list[Import]:
    """The shortest chain of imports from ``start`` to a module in ``goal``, staying in
    ``within``: the imports to read, in order, to see a cycle or a forbidden reach."""
    came: dict[str, Import | None] = {start: None}
    queue = deque([start])
    while queue:
        node = queue.popleft()
        for imp in graph[node]:
            if imp.target in goal:
                chain = [imp]
                step = came[node]
                while step is not None:
                    chain.append(step)
                    step = came[step.importer]
                return chain[::-1]
            if imp.target in within and imp.target not in came:
                came[imp.target] = imp
                queue.append(imp.target)
    return []


# -- the tests ------------------------------------------------------------------------


def test_every_package_and_the_pure_core_are_found() -> None:
    """A rule over no modules passes for nothing: the scan must see what it checks."""
    found = modules()
    for package in PACKAGES:
        assert package in found, f"{package}/__init__.py not found under {ROOT}"
    for sub in SUBPACKAGES:
        assert f"orchestrator.{sub}" in found, f"orchestrator/{sub}/__init__.py not found"
    assert PURE_CORE in found, (
        f"{PURE_CORE} not found: the pure transition moved; point PURE_CORE at it"
    )
    assert imports(), "no imports of our modules found: the scan is broken"


def test_every_orchestrator_module_belongs_to_a_layer() -> None:
    loose = [m for m in modules() if layer_of(m) is None]
    if loose:
        pytest.fail(
            f"modules in no layer: {', '.join(loose)}. Put each in one of orchestrator/"
            f"{{{','.join(SUBPACKAGES)}}}/ (or, if it composes the layers, in COMPOSITION_ROOTS)",
            pytrace=False,
        )


def test_no_import_cycles() -> None:
    graph = _edges()
    problems = []
    for component in _cycles(graph):
        members = set(component)
        chain = _path(graph, component[0], {component[0]}, members)
        lines = "\n    ".join(str(imp) for imp in chain)
        problems.append(f"import cycle among {', '.join(component)}:\n    {lines}")
    if problems:
        pytest.fail(
            "\n".join(problems) + "\nBreak each cycle: move what both sides need into a module"
            " both import, or make one side depend on a Protocol the other implements.",
            pytrace=False,
        )


@pytest.mark.parametrize("layer", sorted(MAY_IMPORT))
def test_layer_imports_only_what_lies_below_it(layer: str) -> None:
    allowed = MAY_IMPORT[layer]
    also = ALSO_MAY_IMPORT.get(layer, {})
    wrong = [
        imp
        for imp in imports()
        if layer_of(imp.importer) == layer
        and layer_of(imp.target) not in allowed
        and imp.target not in also
    ]
    lines = "\n    ".join(f"{imp}, a module of {layer_of(imp.target)!r}" for imp in wrong)
    may = ", ".join(sorted(allowed | also.keys()))
    if wrong:
        pytest.fail(
            f"{layer!r} may import only {may}; it imports more:\n    {lines}", pytrace=False
        )


def test_nothing_imports_the_shipped_sagas() -> None:
    """The engine loads saga modules by path; the examples are no part of the product."""
    wrong = [imp for imp in imports() if imp.target.split(".")[0] == "sagas"]
    wrong = [imp for imp in wrong if layer_of(imp.importer) != "sagas"]
    if wrong:
        lines = "\n    ".join(map(str, wrong))
        pytest.fail(f"the shipped sagas are imported:\n    {lines}", pytrace=False)


def test_the_pure_core_reaches_no_store_adapter_or_clock() -> None:
    """``decide`` does no I/O and reads no clock; nothing it imports, directly or through
    another module, may be a store, an adapter or the clock."""
    graph = _edges()
    impure = {m for m in modules() if any(m == p or m.startswith(p + ".") for p in IMPURE)}
    chain = _path(graph, PURE_CORE, impure, set(modules()) - impure)
    if chain:
        lines = "\n    ".join(str(imp) for imp in chain)
        pytest.fail(
            f"{PURE_CORE} reaches {chain[-1].target}, and must reach none of"
            f" {', '.join(IMPURE)}:\n    {lines}",
            pytrace=False,
        )
