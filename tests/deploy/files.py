"""Readers of the deployment files: the Dockerfile, .dockerignore, compose and manifests.

No Docker engine runs on our machines, so the deployment tests read these files the
way Docker would (instructions and their continuations, exec-form JSON arrays,
.dockerignore's last-match-wins patterns) and check what the engine would do with them.
Small on purpose: only the parts of the formats these files use.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
COMPOSE = ROOT / "docker-compose.yml"
K8S = ROOT / "deploy" / "k8s"
SCRIPT = Path(sys.executable).parent / "sagawire"
SAGAWIRE = [str(SCRIPT)] if SCRIPT.exists() else [sys.executable, "-m", "orchestrator.cli"]


@dataclass(frozen=True)
class Instruction:
    keyword: str  # upper case: FROM, RUN, COPY...
    value: str  # the rest, continuations joined
    line: int


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]

    def last(self, keyword: str) -> Instruction | None:
        found = self.all(keyword)
        return found[-1] if found else None


def instructions(text: str) -> list[Instruction]:
    """The instructions of a Dockerfile: comment lines dropped (also inside a
    continuation, as Docker does), ``\\``-continued lines joined."""
    out: list[Instruction] = []
    pending: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), 1):
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if not pending:
            start = number
        if stripped.endswith("\\"):
            pending.append(stripped[:-1].strip())
            continue
        pending.append(stripped)
        joined = " ".join(pending)
        pending = []
        keyword, _, value = joined.partition(" ")
        out.append(Instruction(keyword.upper(), value.strip(), start))
    if pending:
        raise ValueError(f"Dockerfile ends inside a continued line (from line {start})")
    return out


def stages(text: str) -> list[Stage]:
    """The build stages, each with the instructions after its FROM."""
    result: list[Stage] = []
    for ins in instructions(text):
        if ins.keyword == "FROM":
            words = [w for w in ins.value.split() if not w.startswith("--")]
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            result.append(Stage(words[0], name))
        elif not result:
            if ins.keyword != "ARG":
                raise ValueError(f"line {ins.line}: {ins.keyword} before the first FROM")
        else:
            result[-1].instructions.append(ins)
    return result


def exec_form(value: str) -> list[str] | None:
    """A JSON-array (exec form) argument list, or None for the shell form."""
    if not value.startswith("["):
        return None
    parsed = json.loads(value)
    if not isinstance(parsed, list) or not all(isinstance(x, str) for x in parsed):
        raise ValueError(f"not a JSON array of strings: {value}")
    return parsed


def healthcheck(value: str) -> tuple[dict[str, str], list[str]]:
    """``HEALTHCHECK --opt=v ... CMD <command>`` -> (options, exec-form command)."""
    options, sep, command = value.partition(" CMD ")
    if not sep:
        raise ValueError(f"HEALTHCHECK without CMD: {value}")
    opts = dict(o.removeprefix("--").split("=", 1) for o in options.split())
    argv = exec_form(command.strip())
    return opts, argv if argv is not None else ["/bin/sh", "-c", command.strip()]


def copies(stage: Stage) -> list[tuple[list[str], str, dict[str, str]]]:
    """Each COPY of a stage as (sources, destination, flags)."""
    out = []
    for ins in stage.all("COPY"):
        words = shlex.split(ins.value)
        flags = dict(w.removeprefix("--").split("=", 1) for w in words if w.startswith("--"))
        paths = [w for w in words if not w.startswith("--")]
        out.append((paths[:-1], paths[-1], flags))
    return out


# -- .dockerignore ----------------------------------------------------------------------


def _pattern(pattern: str) -> re.Pattern[str]:
    out = ""
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out += "(?:.*/)?"
            i += 3
        elif pattern.startswith("**", i):
            out += ".*"
            i += 2
        elif pattern[i] == "*":
            out += "[^/]*"
            i += 1
        elif pattern[i] == "?":
            out += "[^/]"
            i += 1
        else:
            out += re.escape(pattern[i])
            i += 1
    return re.compile(out + r"\Z")


def ignored(path: str, rules: list[tuple[bool, re.Pattern[str]]]) -> bool:
    """Whether Docker leaves ``path`` (relative, ``/``-separated) out of the build
    context: the last rule matching the path or one of its parent directories wins."""
    parts = path.split("/")
    prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    verdict = False
    for negated, rx in rules:
        if any(rx.match(p) for p in prefixes):
            verdict = not negated
    return verdict


def dockerignore_rules(text: str) -> list[tuple[bool, re.Pattern[str]]]:
    rules = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        body = line.removeprefix("!").strip().strip("/")
        rules.append((negated, _pattern(body)))
    return rules


# -- compose and manifests --------------------------------------------------------------


def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return data


def manifests() -> list[tuple[Path, dict[str, Any]]]:
    """Every Kubernetes object under deploy/k8s, with its file."""
    out = []
    for path in sorted(K8S.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                out.append((path, doc))
    return out


@dataclass(frozen=True)
class Verb:
    """What ``sagawire VERB --help`` says: whether the verb exists, and the ``SAGAWIRE_*``
    variables its help names (the documented settings, however the CLI reads them)."""

    name: str
    exists: bool
    settings: frozenset[str]
    output: str


@cache
def verb(name: str) -> Verb:
    """``sagawire NAME --help`` in this venv, as a container would run it."""
    env = {**os.environ, "COLUMNS": "400", "NO_COLOR": "1", "TERM": "dumb"}
    ran = subprocess.run(
        [*SAGAWIRE, name, "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=env,
    )
    text = ran.stdout + ran.stderr
    return Verb(
        name, ran.returncode == 0, frozenset(re.findall(r"SAGAWIRE_[A-Z0-9_]+", text)), text
    )


def load_check_verb() -> str:
    """The verb that loads saga modules and runs their checks: ``validate`` (issue 17),
    ``check`` before it."""
    return "validate" if verb("validate").exists else "check"
