"""Docs are tests: every Python block of the README runs, in order, in one namespace;
every shipped saga module loads and passes its checks."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from orchestrator.language.loader import load_sagas

ROOT = Path(__file__).resolve().parent.parent
BLOCK = re.compile(r"```python\n(.*?)```", re.DOTALL)


def test_readme_python_blocks_run() -> None:
    text = (ROOT / "README.md").read_text()
    blocks = BLOCK.findall(text)
    assert len(blocks) >= 2, "the README lost its examples"
    namespace: dict[str, object] = {"__name__": "readme"}
    for i, code in enumerate(blocks):
        try:
            exec(compile(code, f"README.md block {i + 1}", "exec"), namespace)
        except Exception as exc:  # pragma: no cover - the message is the point
            pytest.fail(f"README block {i + 1} failed: {type(exc).__name__}: {exc}")


def test_readme_starts_with_the_two_commands() -> None:
    text = (ROOT / "README.md").read_text()
    first_block = re.search(r"```sh\n(.*?)```", text, re.DOTALL)
    assert first_block is not None
    commands = [ln.split("#")[0].strip() for ln in first_block.group(1).splitlines()]
    assert [c for c in commands if c] == ["make demo", "make test"]
    ci = (ROOT / ".ci" / "run").read_text()
    assert "make test" in ci


@pytest.mark.parametrize("module", sorted(p.name for p in (ROOT / "sagas").glob("[!_]*.py")))
def test_shipped_saga_modules_load(module: str) -> None:
    sagas = load_sagas(str(ROOT / "sagas" / module))
    assert sagas and all(s.states for s in sagas)


def test_the_sagas_directory_loads_as_a_whole() -> None:
    names = {s.name for s in load_sagas(str(ROOT / "sagas"))}
    assert {"order", "trip"} <= names
