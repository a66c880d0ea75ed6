"""Load saga definitions from a file, a directory of files, or a dotted module name.

Every :class:`~orchestrator.language.definition.SagaDefinition` found at module level is
taken. Import errors and failed load-time checks become one
:class:`DefinitionError` naming the module, so ``sagawire run`` can print one
clear line and exit 2.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

from orchestrator.language.definition import SagaDefinition
from schemas.errors import DefinitionError

__all__ = ["load_sagas", "sagas_in"]


def sagas_in(module: ModuleType) -> list[SagaDefinition]:
    """The saga definitions defined at module level, in definition order."""
    found: dict[int, SagaDefinition] = {}
    for value in vars(module).values():
        if isinstance(value, SagaDefinition):
            found.setdefault(id(value), value)
    return list(found.values())


def _import_file(path: Path) -> ModuleType:
    digest = hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:8]
    name = f"sagawire_sagas_{path.stem}_{digest}"
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


def load_sagas(target: str) -> list[SagaDefinition]:
    """All sagas in ``target``: a ``.py`` file, a directory of them, or a module name."""
    path = Path(target)
    modules: list[ModuleType] = []
    if path.is_dir():
        files = sorted(p for p in path.glob("*.py") if not p.name.startswith("_"))
        modules = [_import_file(p) for p in files]
    elif path.suffix == ".py" or path.exists():
        if not path.exists():
            raise DefinitionError(f"saga file {target} does not exist")
        modules = [_import_file(path)]
    else:
        modules = [_import_dotted(target)]
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
