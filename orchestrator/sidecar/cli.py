"""The sidecar's commands: ``sagawire run``, ``check``, ``graph``, ``schema``.

(The yardsticks' commands, ``demo``, ``bench`` and ``simulate``, are in
:mod:`orchestrator.tooling.cli`; :mod:`orchestrator.cli` puts both on one command line.)

Every failure a user can cause — a saga module that does not import or fails its
checks, an unknown URL scheme, an unreachable store or broker, a busy port — is
one line on stderr naming the culprit (``sagawire: error: ...``) and exit code 2.
The traceback is shown only with ``--debug``: an operator reading a crash-looping
pod's log needs the cause, not forty frames of asyncio. Heavy imports (uvicorn,
the engine) happen inside the commands so ``sagawire schema`` stays quick.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import traceback
from collections.abc import Iterator
from typing import TYPE_CHECKING, Annotated, NoReturn

import orjson
import typer

from orchestrator.sidecar.logs import configure_logging, redact_text
from orchestrator.sidecar.settings import Settings, parse_listen
from schemas.errors import ConfigError, SagawireError
from schemas.limits import DEFAULT_LIMITS, Limits

if TYPE_CHECKING:
    from orchestrator.language.definition import SagaDefinition

__all__ = ["EXIT_USAGE", "DebugOpt", "SagasOpt", "app", "reporting"]

EXIT_USAGE = 2
"""Exit code for anything the user can fix: configuration, definitions, reachability."""

app = typer.Typer(
    name="sagawire",
    help="Saga orchestrator sidecar: consumes CloudEvents, advances sagas, emits commands.",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)

SagasOpt = Annotated[
    str,
    typer.Option(
        "--sagas", envvar="SAGAWIRE_SAGAS", help="Saga file, directory of files, or module name."
    ),
]
DebugOpt = Annotated[bool, typer.Option("--debug", help="Show tracebacks on errors.")]


def _fail(exc: BaseException, debug: bool) -> NoReturn:
    if debug:
        traceback.print_exception(exc, file=sys.stderr)
    sys.stderr.write(f"sagawire: error: {redact_text(str(exc))}\n")
    sys.stderr.flush()
    raise typer.Exit(EXIT_USAGE)


@contextlib.contextmanager
def reporting(debug: bool) -> Iterator[None]:
    """Turn a SagawireError into one stderr line and exit code 2."""
    try:
        yield
    except SagawireError as exc:
        _fail(exc, debug)


def _load(target: str) -> list[SagaDefinition]:
    from orchestrator.language.loader import load_sagas

    return load_sagas(target)


@app.command()
def run(
    sagas: SagasOpt = "./sagas",
    broker: Annotated[
        str,
        typer.Option(
            envvar="SAGAWIRE_BROKER", help="Broker URL: memory://, kafka://, nats://, amqp://"
        ),
    ] = "memory://",
    store: Annotated[
        str,
        typer.Option(
            envvar="SAGAWIRE_STORE", help="Store URL: sqlite:///file.db, postgresql://, memory://"
        ),
    ] = "sqlite:///sagawire.db",
    http: Annotated[
        str,
        typer.Option(envvar="SAGAWIRE_HTTP", help="HOST:PORT of the health/metrics/events API."),
    ] = "127.0.0.1:8080",
    group: Annotated[
        str, typer.Option(envvar="SAGAWIRE_GROUP", help="Consumer group shared by replicas.")
    ] = "sagawire",
    log_level: Annotated[
        str, typer.Option(envvar="SAGAWIRE_LOG_LEVEL", help="debug, info, warning, error.")
    ] = "info",
    max_message_bytes: Annotated[
        int,
        typer.Option(
            envvar="SAGAWIRE_MAX_MESSAGE_BYTES",
            help="Largest message taken; larger ones are dead letters (and 413 over HTTP).",
        ),
    ] = DEFAULT_LIMITS.max_message_bytes,
    max_attribute_bytes: Annotated[
        int,
        typer.Option(
            envvar="SAGAWIRE_MAX_ATTRIBUTE_BYTES",
            help="Largest CloudEvents attribute (id, type, correlationid...); larger: dead letter.",
        ),
    ] = DEFAULT_LIMITS.max_attribute_bytes,
    content_mode: Annotated[
        str,
        typer.Option(
            envvar="SAGAWIRE_CONTENT_MODE",
            help="How commands and outcome events are written: structured (the CloudEvent"
            " as the body) or binary (data as the body, attributes as ce_/ce-/cloudEvents_"
            " headers). Both modes, and plain JSON events, are read either way.",
        ),
    ] = "structured",
    catch_up: Annotated[
        float,
        typer.Option(
            envvar="SAGAWIRE_CATCH_UP",
            min=0.0,
            help="Seconds timers wait at start for the consumer to read what was published"
            " while the sidecar was down (its broker ready that long, nothing left to read;"
            " 30 s at most), so no deadline is judged on a backlog. 0: at once.",
        ),
    ] = 5.0,
    debug: DebugOpt = False,
) -> None:
    """Run the sidecar until SIGTERM or SIGINT."""
    with reporting(debug):
        configure_logging("debug" if debug else log_level)
        from orchestrator.sidecar.service import Sidecar

        host, port = parse_listen(http)
        try:
            limits = Limits(max_message_bytes, max_attribute_bytes)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        if content_mode not in ("structured", "binary"):
            raise ConfigError(
                f"--content-mode {content_mode!r} is not one of: structured, binary"
                " (SAGAWIRE_CONTENT_MODE)"
            )
        settings = Settings(
            sagas=sagas,
            broker=broker,
            store=store,
            host=host,
            port=port,
            group=group,
            limits=limits,
            content_mode=content_mode,
            catch_up=catch_up,
        )
        try:
            code = asyncio.run(Sidecar(settings).run())
        except KeyboardInterrupt:  # before our handlers were installed
            code = 130
    raise typer.Exit(code)


@app.command()
def check(sagas: SagasOpt = "./sagas", debug: DebugOpt = False) -> None:
    """Load the sagas, run their checks, and print what they consume and send."""
    from rich.console import Console
    from rich.table import Table

    with reporting(debug):
        loaded = _load(sagas)
    table = Table(title=f"sagas in {sagas}")
    for column in ("saga", "kind", "states", "final", "transitions", "consumes", "sends"):
        table.add_column(column, justify="left" if column in ("saga", "kind") else "right")
    for s in loaded:
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
    console = Console()
    console.print(table)
    console.print(f"ok: {len(loaded)} saga(s) passed their checks (details: sagawire graph)")


@app.command()
def graph(
    sagas: SagasOpt = "./sagas",
    saga: Annotated[str | None, typer.Option(help="Only this saga.")] = None,
    debug: DebugOpt = False,
) -> None:
    """Print each saga as a Mermaid state diagram."""
    with reporting(debug):
        loaded = _load(sagas)
        if saga is not None:
            loaded = [s for s in loaded if s.name == saga]
            if not loaded:
                names = ", ".join(s.name for s in _load(sagas))
                raise ConfigError(f"no saga named {saga!r} in {sagas}; loaded: {names}")
    blocks = [f"%% saga {s.name}\n{s.to_mermaid()}" for s in loaded]
    typer.echo("\n\n".join(blocks))


@app.command()
def schema() -> None:
    """Print the JSON Schema of the CloudEvent envelope participants send."""
    from schemas.codec import envelope_json_schema

    typer.echo(orjson.dumps(envelope_json_schema(), option=orjson.OPT_INDENT_2).decode())
