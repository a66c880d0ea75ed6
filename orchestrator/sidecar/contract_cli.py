"""The saga authors' commands: ``validate``, ``graph``, ``schemas`` and ``inspect``.

Registered on the ``sagawire`` command line by :mod:`orchestrator.cli`, beside the
sidecar's ``run``:

* ``sagawire validate PATH...``: every module of every path (file, directory or dotted
  module) is loaded, and every problem of every saga is printed as ``file:line:
  severity: saga 'name': what``: the load-time checks, plus the contract checks of
  :mod:`orchestrator.language.lint`. Errors exit 2; warnings exit 0 unless ``--strict``.
  (``check`` is the old name, kept hidden.)
* ``sagawire graph PATH [--format mermaid|dot] [--saga NAME]``: the sagas as Mermaid or
  Graphviz (:mod:`orchestrator.language.graph`).
* ``sagawire schemas PATH --out DIR [--broker URL]...``: a JSON Schema per message
  payload, the envelope's, and one AsyncAPI 3.0 document
  (:mod:`orchestrator.language.contract`, brokers from :mod:`orchestrator.sidecar.channels`).
* ``sagawire inspect SAGA ID --store URL``: one instance and its history
  (:mod:`orchestrator.sidecar.inspecting`).

Every failure is one ``sagawire: error:`` line and exit code 2, as for ``run``.
"""

from __future__ import annotations

import asyncio
import os
import re
import sys
from pathlib import Path
from typing import Annotated

import orjson
import typer

from orchestrator.sidecar.cli import EXIT_USAGE, DebugOpt, reporting
from schemas.errors import ConfigError

__all__ = ["register"]

PathsArg = Annotated[
    list[str] | None,
    typer.Argument(
        help="Saga files, directories of them, or module names (default: $SAGAWIRE_SAGAS,"
        " else ./sagas).",
        show_default=False,
    ),
]
PathArg = Annotated[
    str | None,
    typer.Argument(
        help="Saga file, directory or module name (default: $SAGAWIRE_SAGAS, else ./sagas).",
        show_default=False,
    ),
]
HiddenSagasOpt = Annotated[
    str | None,
    typer.Option("--sagas", hidden=True, help="The same as PATH (the option's old form)."),
]


def register(app: typer.Typer) -> None:
    """Add the contract commands to ``app``."""
    app.command()(validate)
    app.command("check", hidden=True)(validate)
    app.command()(graph)
    app.command()(schemas)
    app.command("schema", hidden=True)(schema)
    app.command("inspect")(inspect_instance)


def _targets(paths: list[str] | None, sagas: str | None) -> list[str]:
    chosen = [*(paths or []), *([sagas] if sagas else [])]
    return chosen or [os.environ.get("SAGAWIRE_SAGAS") or "./sagas"]


def validate(
    paths: PathsArg = None,
    sagas: HiddenSagasOpt = None,
    strict: Annotated[
        bool, typer.Option("--strict", help="Warnings fail too (exit 2), as errors do.")
    ] = False,
    debug: DebugOpt = False,
) -> None:
    """Load every saga module and report every problem, each with its file and line."""
    from rich.console import Console
    from rich.table import Table

    from orchestrator.language.lint import lint
    from orchestrator.language.loader import collect_sagas

    targets = _targets(paths, sagas)
    with reporting(debug):
        report = collect_sagas(targets)
        problems = report.problems + lint(report.declared)
    problems.sort(key=lambda p: (p.file, p.line or 0))
    for p in problems:
        sys.stderr.write(f"{p}\n")
    errors = sum(p.severity == "error" for p in problems)
    warnings = len(problems) - errors
    passed = report.sagas
    out = Console()
    if passed:
        table = Table(title=f"sagas in {', '.join(targets)}")
        for column in ("saga", "kind", "states", "final", "transitions", "consumes", "sends"):
            table.add_column(column, justify="left" if column in ("saga", "kind") else "right")
        for s in passed:
            rows = sum(len(r) for r in s.transitions.values())
            table.add_row(
                s.name,
                s.kind,
                str(len(s.states)),
                str(len(s.final)),
                str(rows),
                str(len(s.consumes())),
                str(len(s.produces())),
            )
        out.print(table)
    failed = sum(not d.ok for d in report.declared)
    if errors or (strict and warnings):
        sys.stderr.write(
            f"sagawire: {errors} error(s), {warnings} warning(s);"
            f" {len(passed)} saga(s) passed their checks, {failed} failed\n"
        )
        raise typer.Exit(EXIT_USAGE)
    tail = f", {warnings} warning(s)" if warnings else ""
    out.print(
        f"ok: {len(passed)} saga(s) passed their checks{tail} (details: sagawire graph)",
        highlight=False,
    )


def graph(
    path: PathArg = None,
    sagas: HiddenSagasOpt = None,
    format: Annotated[str, typer.Option("--format", "-f", help="mermaid or dot.")] = "mermaid",
    saga: Annotated[str | None, typer.Option(help="Only this saga.")] = None,
    debug: DebugOpt = False,
) -> None:
    """Print each saga as a Mermaid diagram or a Graphviz digraph."""
    from orchestrator.language.graph import FORMATS, to_dot, to_mermaid
    from orchestrator.language.loader import load_sagas

    target = _targets([path] if path else None, sagas)[0]
    with reporting(debug):
        if format not in FORMATS:
            raise ConfigError(f"--format {format!r} is not one of: {', '.join(FORMATS)}")
        loaded = load_sagas(target)
        chosen = [s for s in loaded if saga is None or s.name == saga]
        if not chosen:
            names = ", ".join(s.name for s in loaded)
            raise ConfigError(f"no saga named {saga!r} in {target}; loaded: {names}")
    if format == "dot":
        typer.echo("\n\n".join(to_dot(s) for s in chosen))
    else:
        typer.echo("\n\n".join(f"%% saga {s.name}\n{to_mermaid(s)}" for s in chosen))


def _file_name(type: str) -> str:
    """A message type as a file name (types are dotted words; anything else becomes _)."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", type)


def schemas(
    out: Annotated[
        Path,
        typer.Option(
            "--out", "-o", help="Directory to write the documents to.", show_default=False
        ),
    ],
    broker: Annotated[
        list[str] | None,
        typer.Option(
            "--broker",
            help="Broker URL the document shows (its topic/subject prefix, stream,"
            " exchange); repeat for several. Default: Kafka, NATS and RabbitMQ with their"
            " defaults on localhost.",
            show_default=False,
        ),
    ] = None,
    group: Annotated[str, typer.Option(help="The sidecar's consumer group.")] = "sagawire",
    version: Annotated[str, typer.Option(help="info.version of the AsyncAPI document.")] = "1.0.0",
    path: PathArg = None,
    sagas: HiddenSagasOpt = None,
    debug: DebugOpt = False,
) -> None:
    """Write JSON Schemas of the payloads and the envelope, and an AsyncAPI 3.0 document.

    One schema per event and command payload, and one AsyncAPI document of every
    channel the sagas consume and produce, on each broker."""
    from orchestrator.language.contract import asyncapi, payload_schemas
    from orchestrator.language.loader import load_sagas
    from orchestrator.sidecar.channels import DEFAULT_BROKERS, server_for
    from schemas.codec import envelope_json_schema

    target = _targets([path] if path else None, sagas)[0]
    with reporting(debug):
        loaded = load_sagas(target)
        servers = [server_for(url, group=group) for url in broker or DEFAULT_BROKERS]
        ids = [s.id for s in servers]
        if len(set(ids)) != len(ids):
            raise ConfigError("give at most one --broker of each kind (kafka, nats, amqp)")
        payloads = payload_schemas(loaded)
        document = asyncapi(loaded, servers, version=version)
        if out.exists() and not out.is_dir():
            raise ConfigError(f"--out {out} is a file, not a directory")
        try:
            out.mkdir(parents=True, exist_ok=True)
            written = [_write(out / "envelope.schema.json", envelope_json_schema())]
            written += [
                _write(out / f"{_file_name(t)}.schema.json", schema)
                for t, schema in payloads.items()
            ]
            written.append(_write(out / "asyncapi.json", document))
        except OSError as exc:
            raise ConfigError(f"cannot write to --out {out}: {exc.strerror or exc}") from None
    typer.echo(
        f"wrote {len(written)} files to {out}: asyncapi.json ({len(document['channels'])}"
        f" channels on {', '.join(ids)}), envelope.schema.json and"
        f" {len(payloads)} payload schemas"
    )


def _write(path: Path, document: object) -> Path:
    path.write_bytes(orjson.dumps(document, option=orjson.OPT_INDENT_2) + b"\n")
    return path


def schema() -> None:
    """Print the JSON Schema of the CloudEvent envelope participants send."""
    from schemas.codec import envelope_json_schema

    typer.echo(orjson.dumps(envelope_json_schema(), option=orjson.OPT_INDENT_2).decode())


def inspect_instance(
    saga: Annotated[str, typer.Argument(help="The saga's name.", show_default=False)],
    correlation_id: Annotated[
        str, typer.Argument(help="The instance's correlation id.", show_default=False)
    ],
    store: Annotated[
        str,
        typer.Option(
            envvar="SAGAWIRE_STORE",
            help="The sidecar's store URL: sqlite:///file.db or postgresql://...",
        ),
    ],
    sagas: Annotated[
        str | None,
        typer.Option(
            "--sagas",
            help="Saga file, directory or module: checks the saga exists and its stored"
            " state still loads as its model.",
        ),
    ] = None,
    debug: DebugOpt = False,
) -> None:
    """Show one saga instance: state, status, version, timestamps and history."""
    from rich.console import Console

    from orchestrator.language.loader import load_sagas
    from orchestrator.sidecar.inspecting import read_snapshot, render

    with reporting(debug):
        definition = None
        if sagas is not None:
            loaded = {s.name: s for s in load_sagas(sagas)}
            definition = loaded.get(saga)
            if definition is None:
                raise ConfigError(f"no saga named {saga!r} in {sagas}; loaded: {', '.join(loaded)}")
        snapshot = asyncio.run(read_snapshot(store, saga, correlation_id))
    render(snapshot, Console(), definition)
