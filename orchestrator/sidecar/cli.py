"""The sidecar's command: ``sagawire run``.

(The saga authors' commands, ``validate``, ``graph``, ``schemas`` and ``inspect``, are in
:mod:`orchestrator.sidecar.contract_cli`; the yardsticks', ``demo``, ``bench`` and
``simulate``, in :mod:`orchestrator.tooling.cli`; :mod:`orchestrator.cli` puts them on one
command line.)

Every failure a user can cause — a saga module that does not import or fails its
checks, an unknown URL scheme, an unreachable store or broker, a busy port — is
one line on stderr naming the culprit (``sagawire: error: ...``) and exit code 2.
The traceback is shown only with ``--debug``: an operator reading a crash-looping
pod's log needs the cause, not forty frames of asyncio. Heavy imports (uvicorn,
the engine) happen inside the commands so ``sagawire validate`` stays quick.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import traceback
from collections.abc import Iterator
from typing import Annotated, Any, NoReturn

import typer

from orchestrator.sidecar.config import CONFIG_ENV, env_var, load_settings
from orchestrator.sidecar.logs import configure_logging, redact_text
from orchestrator.sidecar.settings import Settings, version
from schemas.errors import SagawireError

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


def _print_version(wanted: bool) -> None:
    if wanted:
        typer.echo(f"sagawire {version()}")
        raise typer.Exit(0)


@app.callback()
def _main(
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            "-V",
            is_eager=True,
            callback=_print_version,
            help="Print the version and exit.",
        ),
    ] = False,
) -> None:
    """Options before the command (``sagawire --version``)."""


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


def _option(name: str, metavar: str, text: str) -> Any:
    """``--NAME``, read by :func:`~orchestrator.sidecar.config.load_settings` (not by
    Click: Click would read the variable itself, and refuse a bad value in its own
    words, without the setting's source); None when not given."""
    if name == "http":
        default = "127.0.0.1:8080"
    else:
        default = Settings.model_fields[name].default
        default = "off" if default is None else default
    return typer.Option(
        f"--{name.replace('_', '-')}",
        metavar=metavar,
        show_default=False,
        help=f"{text} (env {env_var(name)}; default {default})",
    )


@app.command()
def run(
    sagas: Annotated[
        str | None, _option("sagas", "PATH", "Saga file, directory of files, or module name.")
    ] = None,
    broker: Annotated[
        str | None,
        _option("broker", "URL", "Broker URL: memory://, kafka://, nats://, amqp://."),
    ] = None,
    store: Annotated[
        str | None,
        _option("store", "URL", "Store URL: sqlite:///file.db, postgresql://, memory://."),
    ] = None,
    http: Annotated[
        str | None, _option("http", "HOST:PORT", "Address of the health/metrics/events API.")
    ] = None,
    group: Annotated[
        str | None, _option("group", "NAME", "Consumer group shared by replicas.")
    ] = None,
    log_level: Annotated[
        str | None, _option("log_level", "LEVEL", "debug, info, warning, error, critical.")
    ] = None,
    max_message_bytes: Annotated[
        str | None,
        _option(
            "max_message_bytes",
            "BYTES",
            "Largest message taken; larger ones are dead letters (and 413 over HTTP).",
        ),
    ] = None,
    max_attribute_bytes: Annotated[
        str | None,
        _option(
            "max_attribute_bytes",
            "BYTES",
            "Largest CloudEvents attribute (id, type, correlationid...); larger: dead letter.",
        ),
    ] = None,
    content_mode: Annotated[
        str | None,
        _option(
            "content_mode",
            "MODE",
            "How commands and outcome events are written: structured (the CloudEvent"
            " as the body) or binary (data as the body, attributes as ce_/ce-/cloudEvents_"
            " headers). Both modes, and plain JSON events, are read either way.",
        ),
    ] = None,
    catch_up: Annotated[
        str | None,
        _option(
            "catch_up",
            "SECONDS",
            "Seconds timers wait at start for the consumer to read what was published"
            " while the sidecar was down (its broker ready that long, nothing left to read;"
            " 30 s at most), so no deadline is judged on a backlog. 0: at once.",
        ),
    ] = None,
    max_request_bytes: Annotated[
        str | None, _option("max_request_bytes", "BYTES", "Largest HTTP request body.")
    ] = None,
    deadletter_retention: Annotated[
        str | None,
        _option("deadletter_retention", "SECONDS", "How long dead letters are kept."),
    ] = None,
    stuck_after: Annotated[
        str | None,
        _option(
            "stuck_after", "SECONDS", "An instance this long in one state is stuck; off: never."
        ),
    ] = None,
    cache_size: Annotated[
        str | None,
        _option(
            "cache_size",
            "N",
            "Running instances kept in memory between their events. 0 with several"
            " replicas on NATS or RabbitMQ: another replica may have moved any of them,"
            " and a stale copy costs a version conflict.",
        ),
    ] = None,
    partitions: Annotated[
        str | None,
        _option(
            "partitions",
            "N",
            "NATS and RabbitMQ: split instances into N partitions, each read by one"
            " replica at a time, so replicas add throughput instead of conflicting"
            " (README: Running several sidecars). 0: replicas compete for messages.",
        ),
    ] = None,
    replica: Annotated[
        str | None,
        _option("replica", "NAME", "This replica's name in the partition leases."),
    ] = None,
    lease_ttl: Annotated[
        str | None,
        _option(
            "lease_ttl",
            "SECONDS",
            "How long a killed replica's partitions wait before the others take them.",
        ),
    ] = None,
    otel: Annotated[
        bool | None,
        typer.Option(
            "--otel/--no-otel",
            show_default=False,
            help="OpenTelemetry spans, with the otel extra installed. (env SAGAWIRE_OTEL;"
            " default off)",
        ),
    ] = None,
    config: Annotated[
        str | None,
        typer.Option(
            metavar="FILE",
            help='TOML file of settings (the names above, e.g. broker = "nats://...");'
            " flags and SAGAWIRE_* variables override it. Tokens (admin_token,"
            " read_token) only here or in SAGAWIRE_ADMIN_TOKEN / SAGAWIRE_READ_TOKEN."
            f" (env {CONFIG_ENV})",
        ),
    ] = None,
    debug: DebugOpt = False,
) -> None:
    """Run the sidecar until SIGTERM or SIGINT."""
    flags = {
        "sagas": sagas,
        "broker": broker,
        "store": store,
        "http": http,
        "group": group,
        "log_level": log_level,
        "max_message_bytes": max_message_bytes,
        "max_attribute_bytes": max_attribute_bytes,
        "content_mode": content_mode,
        "catch_up": catch_up,
        "max_request_bytes": max_request_bytes,
        "deadletter_retention": deadletter_retention,
        "stuck_after": stuck_after,
        "otel": otel,
        "cache_size": cache_size,
        "partitions": partitions,
        "replica": replica,
        "lease_ttl": lease_ttl,
    }
    with reporting(debug):
        settings = load_settings(flags, config)
        configure_logging("debug" if debug else settings.log_level)
        from orchestrator.sidecar.service import Sidecar

        try:
            code = asyncio.run(Sidecar(settings).run())
        except KeyboardInterrupt:  # before our handlers were installed
            code = 130
    raise typer.Exit(code)
