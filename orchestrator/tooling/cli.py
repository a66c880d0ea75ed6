"""The yardsticks' commands: ``sagawire demo``, ``bench`` and ``simulate``.

Registered on the sidecar's command line by :mod:`orchestrator.cli`; each reports a
failure the way every sagawire command does (one line, exit code 2).
"""

from __future__ import annotations

import asyncio
import signal
import sys
from typing import Annotated

import orjson
import typer

from orchestrator.sidecar.cli import DebugOpt, reporting
from orchestrator.sidecar.logs import configure_logging, redact_text

__all__ = ["register"]


def register(app: typer.Typer) -> None:
    """Add the demo, simulate and bench commands to ``app``."""
    app.command()(demo)
    app.command()(simulate)
    app.command()(bench)


def demo(
    orders: Annotated[int, typer.Option(min=1, help="Orders to place.")] = 200,
    seed: Annotated[int, typer.Option(help="Seed of the simulated participants.")] = 1,
    store: Annotated[
        str, typer.Option(help="Store URL (the demo starts it afresh).")
    ] = "sqlite:///sagawire-demo.db",
    broker: Annotated[str, typer.Option(help="Broker URL.")] = "memory://",
    debug: DebugOpt = False,
) -> None:
    """Run the order saga against simulated participants and show what happened."""
    from rich.console import Console

    from orchestrator.tooling.demo import run_demo

    with reporting(debug):
        configure_logging("debug" if debug else "warning")
        code = asyncio.run(run_demo(orders, seed, store, broker, Console()))
    raise typer.Exit(code)


def simulate(
    broker: Annotated[
        str, typer.Option(envvar="SAGAWIRE_BROKER", help="Broker URL (not memory://).")
    ] = "nats://127.0.0.1:4222",
    seed: Annotated[int, typer.Option(help="Seed of the services' fates.")] = 1,
    fast: Annotated[
        bool, typer.Option("--fast", help="Answer every command at once, successfully.")
    ] = False,
    debug: DebugOpt = False,
) -> None:
    """Run simulated inventory, payment and shipping services for the order saga on a
    broker, until SIGTERM or SIGINT: something for ``sagawire run`` to talk to."""
    from orchestrator.tooling.participants import BENCH, Behaviour, Participants, simulate

    def ready(services: Participants) -> None:
        # One JSON line on stdout once their queues exist: what a parent process waits for.
        line = {"simulating": list(services.command_types), "broker": redact_text(broker)}
        sys.stdout.write(orjson.dumps(line).decode() + "\n")
        sys.stdout.flush()

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        behaviour = BENCH if fast else Behaviour()
        await simulate(broker, stop, seed=seed, behaviour=behaviour, on_ready=ready)

    with reporting(debug):
        configure_logging("debug" if debug else "warning")
        asyncio.run(main())


def bench(
    broker: Annotated[str, typer.Option(help="Broker URL.")] = "memory://",
    store: Annotated[str, typer.Option(help="Store URL.")] = "sqlite:///sagawire-bench.db",
    sagas: Annotated[int, typer.Option(min=1, help="Saga instances to run.")] = 2000,
    concurrency: Annotated[int, typer.Option(min=1, help="Instances in flight.")] = 256,
    seed: Annotated[int, typer.Option(help="Seed of the simulated participants.")] = 1,
    participants: Annotated[
        str,
        typer.Option(
            help="Where the simulated services run: 'process' (a `sagawire simulate` child,"
            " as services run in production; real brokers only), 'inline' (this process)"
            " or 'auto' (the default: 'process' on a real broker, 'inline' on memory://)."
        ),
    ] = "auto",
    ring: Annotated[
        bool,
        typer.Option(
            help="Also run the same message flow with a stub in the engine's place, and"
            " report ring_per_s and ratio_to_ring (how much of that flow the engine keeps)."
        ),
    ] = False,
    debug: DebugOpt = False,
) -> None:
    """Measure sagas per second and latency on a broker and store; print one JSON line."""
    from orchestrator.tooling.bench import run_bench

    with reporting(debug):
        configure_logging("debug" if debug else "warning")
        asyncio.run(
            run_bench(broker, store, sagas, concurrency, seed, participants=participants, ring=ring)
        )
