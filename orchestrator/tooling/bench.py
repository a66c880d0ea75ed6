"""``sagawire bench``: order sagas per second on a given broker and store, with a yardstick.

A throughput figure alone says little: on a slow broker every program is slow.
So the same run also relays as many messages as the engine consumed through the
same transport URL — consume, publish each to another destination, ack, in
batches of the same size, with no engine — and reports ``ratio``, the engine's
transitions per second over that relay's messages per second
(:mod:`orchestrator.tooling.bench_relay`): how much of what the broker allows the engine keeps.

The simulated services answer every command at once (:data:`BENCH`), so every
saga is exactly four transitions (placed, reserved, charged, scheduled). At most
``concurrency`` sagas are in flight; latency is wall time from publishing
``order.placed`` to the commit that completes the saga.
"""

from __future__ import annotations

import asyncio
import gc
import math
import os
import resource
import sys
import time
import uuid
from array import array
from collections.abc import Sequence
from pathlib import Path
from typing import NotRequired, TypedDict
from urllib.parse import urlsplit

import orjson

from adapters import open_transport
from adapters._util import redact_url
from adapters.base import Transport
from adapters.memory import MemoryBroker
from orchestrator.engine import Engine, EngineConfig
from orchestrator.engine.model import Decision, Instance
from orchestrator.language.loader import load_sagas
from orchestrator.sidecar.gc_tuning import gc_settings, tune_gc
from orchestrator.store import open_store
from orchestrator.tooling.bench_lots import Lots, Timed
from orchestrator.tooling.bench_relay import relay_rate
from orchestrator.tooling.bench_ring import ring_rate, ring_url
from orchestrator.tooling.bench_services import start_services
from orchestrator.tooling.participants import order_placed
from schemas.errors import ConfigError

__all__ = [
    "BenchResult",
    "fresh_sqlite",
    "percentile",
    "run_bench",
    "stop_engine",
    "warmup_sagas",
]

PARTICIPANTS = ("auto", "inline", "process")
TRANSITIONS_PER_SAGA = 4
MAX_BATCH = 256  # the engine's batch size and the relay's


class BenchResult(TypedDict):
    broker: str
    store: str
    participants: str  # "inline" or "process" (what "auto" chose)
    sagas: int
    warmup_sagas: int  # run before the clock starts (and as many messages before the relay's)
    concurrency: int
    transitions_per_s: float
    sagas_per_s: float
    p50_ms: float
    p99_ms: float
    peak_rss_mb: float
    rss_growth_mb: float
    baseline_relay_per_s: float
    baseline_relay_runs: list[float]  # before and after the engine run; the mean is above
    ratio: float
    elapsed_s: float  # wall time of the saga run
    cpu_s: float  # CPU time of this process during it (the machine may be shared)
    # Where the CPU went (bench_cpu), in microseconds per unit: this process's, and the
    # whole machine's (broker, services and anything else running included), per
    # transition of the engine and per message of the relays (their mean); the
    # machine's figures are absent where /proc/stat cannot be read.
    cores: int
    cpu_us_per_transition: float
    machine_cpu_us_per_transition: NotRequired[float]
    relay_cpu_us_per_msg: float
    relay_machine_cpu_us_per_msg: NotRequired[float]
    ring_per_s: NotRequired[float]  # with --ring: the same flow, a stub for the engine
    ratio_to_ring: NotRequired[float]
    ring_cpu_us_per_transition: NotRequired[float]  # the stub's process
    ring_machine_cpu_us_per_transition: NotRequired[float]


def warmup_sagas(sagas: int, concurrency: int) -> int:
    """How many sagas run untimed before the measured ones: a tenth of the run, at most
    one window of ``concurrency`` (enough for every consumer to have joined and taken
    messages), at least one."""
    return max(1, min(sagas // 10, concurrency))


def fresh_sqlite(store_url: str) -> None:
    """Delete the file of a ``sqlite:///`` store URL and its ``-wal``/``-shm`` companions,
    so a run starts from an empty store. Other URLs are left alone."""
    parts = urlsplit(store_url)
    path = parts.path[1:]
    if parts.scheme != "sqlite" or not path or path == ":memory:":
        return
    for suffix in ("", "-wal", "-shm", "-journal"):
        Path(path + suffix).unlink(missing_ok=True)


def percentile(values: Sequence[float], q: float) -> float:
    """The nearest-rank ``q``-th percentile (0 < q <= 100) of ``values``."""
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


async def stop_engine(
    running: asyncio.Future[None], stopping: asyncio.Event, transport: Transport, grace: float = 2.0
) -> None:
    """Stop ``Engine.run`` and wait for it; close its transport if it does not return.

    Why the fallback: when ``stopping`` is set while housekeeping holds the engine's
    lock, ``Engine.run`` does not cancel its consumer, which then waits for a next
    batch that an idle broker never sends. Closing the transport ends that wait.
    """
    stopping.set()
    try:
        await asyncio.wait_for(asyncio.shield(running), grace)
    except TimeoutError:
        await transport.close()
        await running


def _us_per(seconds: float, units: int) -> float:
    return round(seconds * 1e6 / max(units, 1), 1)


def _rss_now_mb() -> float:
    """Resident set size now (Linux /proc), falling back to the peak so far."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return _peak_rss_mb()


def _peak_rss_mb() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10  # bytes vs KiB


def _forget_memory_broker(broker_url: str) -> None:
    parts = urlsplit(broker_url)
    if parts.scheme == "memory":
        MemoryBroker.forget(parts.netloc + parts.path)


class _Tally:
    """The engine observer of the bench: it tells ``lots`` when one of the bench's sagas
    finished, counts the timed lot's transitions, and times each timed saga from its
    ``order.placed`` to the commit that finished it."""

    def __init__(self, lots: Lots) -> None:
        self.lots = lots
        self.transitions = 0
        self.started: dict[str, float] = {}
        self.latencies = array("d")

    def __call__(self, instance: Instance, decision: Decision) -> None:
        timed = bool(self.lots.began)  # the warm-up lot finished before the timed one began
        self.transitions += timed
        if instance.status.final:
            began = self.started.pop(instance.correlation_id, None)
            if began is not None:
                if timed:
                    self.latencies.append(time.perf_counter() - began)
                self.lots.done(1)


async def _engine_run(
    broker_url: str,
    store_url: str,
    sagas: int,
    concurrency: int,
    seed: int,
    participants: str,
    warmup: int = 0,
) -> tuple[Lots, _Tally]:
    """Run ``warmup`` sagas untimed, then the ``sagas`` measured; return their lots
    (elapsed wall and CPU time) and tally (transitions, latencies).

    Why a warm-up: one-off costs at start (a Kafka consumer group join takes about a
    second) are not throughput; the relay is measured after the same kind of warm-up."""
    fresh_sqlite(store_url)
    store = open_store(store_url)
    await store.open()
    services = await start_services(broker_url, seed, participants, MAX_BATCH)
    transport = open_transport(broker_url)
    stopping = asyncio.Event()
    try:
        await transport.start()
        engine = Engine(
            load_sagas("sagas.order"),
            store,
            transport,
            config=EngineConfig(group="sagawire-bench", max_batch=MAX_BATCH),
        )
        run = f"b{uuid.uuid4().hex[:8]}"

        async def place(first: int, count: int) -> None:
            orders = [
                order_placed(f"{run}-{n}", source="sagawire/bench")
                for n in range(first, first + count)
            ]
            now = time.perf_counter()
            for m in orders:
                tally.started[m.key or ""] = now
            await transport.publish(orders)

        lots = Lots(warmup, sagas, concurrency, MAX_BATCH, place)
        tally = _Tally(lots)
        engine.observers.append(tally)
        await engine.prepare()
        gc.freeze()  # the engine's start-up objects, as ``sagawire run`` freezes its own
        running = asyncio.ensure_future(engine.run(stopping))

        async def until_complete() -> None:
            """The engine consumes; this returns once every saga finished, or when the
            engine stopped (with its error, if it failed)."""
            complete = asyncio.ensure_future(lots.wait_complete())
            try:
                await asyncio.wait({complete, running}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                complete.cancel()
            if running.done():
                running.result()

        await lots.run(until_complete, "the engine")
        await stop_engine(running, stopping, transport)
        return lots, tally
    finally:
        stopping.set()
        await services.close()
        await transport.close()
        await store.close()


async def run_bench(
    broker_url: str,
    store_url: str,
    sagas: int,
    concurrency: int,
    seed: int = 1,
    *,
    participants: str = "auto",
    ring: bool = False,
) -> BenchResult:
    """Run the bench, print its one JSON line, and return the figures.

    ``participants``: ``process`` runs the simulated services in a ``sagawire
    simulate`` child, as services run beside a sidecar in production: this process's
    CPU is then the engine's and the feeder's alone, which is what the relay's is
    compared with. ``inline`` runs them in this process, so that every hop of the flow
    is counted here: a saga step is two (engine -> service -> engine), each costing
    about a relay's per-message client work. ``auto`` (the default) is ``process`` on
    a real broker and ``inline`` on the in-memory one, which lives in one process.

    ``ring``: also run the same flow with a stub in the engine's place
    (:mod:`orchestrator.tooling.bench_ring`) and report ``ring_per_s`` and ``ratio_to_ring``."""
    if participants not in PARTICIPANTS:
        raise ConfigError(
            f"--participants {participants!r}: expected one of {', '.join(PARTICIPANTS)}"
        )
    in_memory = urlsplit(broker_url).scheme == "memory"
    if participants == "auto":
        participants = "inline" if in_memory else "process"
    if participants == "process" and in_memory:
        raise ConfigError(
            "--participants process needs a real broker: the in-memory broker lives in one process"
        )
    _forget_memory_broker(broker_url)
    # As ``sagawire run`` does, and before the relay: both halves run with the same settings.
    tune_gc(gc_settings())
    rss_start = _rss_now_mb()
    messages = sagas * TRANSITIONS_PER_SAGA
    warmup = warmup_sagas(sagas, concurrency)
    warm_messages = warmup * TRANSITIONS_PER_SAGA
    try:
        # The relay runs before and after the engine, and the ratio uses their mean: a
        # broker's rate drifts within a run (a new stream's first files, a shared
        # machine), and one relay measured only on one side of it skews the ratio.
        relays = [await relay_rate(broker_url, messages, concurrency, MAX_BATCH, warm_messages)]
        lots, tally = await _engine_run(
            broker_url, store_url, sagas, concurrency, seed, participants, warmup
        )
        relays.append(await relay_rate(broker_url, messages, concurrency, MAX_BATCH, warm_messages))
        peak = _peak_rss_mb()  # before the ring, whose own messages are not the engine's memory
        ringed: Timed | None = None
        if ring:
            private = ring_url(broker_url)
            try:
                ringed = await ring_rate(
                    private,
                    sagas,
                    concurrency,
                    MAX_BATCH,
                    lambda: start_services(private, seed, participants, MAX_BATCH),
                    warmup,
                )
            finally:
                _forget_memory_broker(private)
    finally:
        _forget_memory_broker(broker_url)
    elapsed = lots.elapsed
    tps = tally.transitions / elapsed
    relay_per_s = sum(r.per_s for r in relays) / len(relays)
    result: BenchResult = {
        "broker": redact_url(broker_url),
        "store": redact_url(store_url),
        "participants": participants,
        "sagas": sagas,
        "warmup_sagas": warmup,
        "concurrency": concurrency,
        "transitions_per_s": round(tps, 1),
        "sagas_per_s": round(len(tally.latencies) / elapsed, 1),
        "p50_ms": round(percentile(tally.latencies, 50) * 1000, 2),
        "p99_ms": round(percentile(tally.latencies, 99) * 1000, 2),
        "peak_rss_mb": round(peak, 1),
        "rss_growth_mb": round(peak - rss_start, 1),
        "baseline_relay_per_s": round(relay_per_s, 1),
        "baseline_relay_runs": [round(r.per_s, 1) for r in relays],
        "ratio": float(f"{tps / relay_per_s:.4g}"),
        "elapsed_s": round(elapsed, 2),
        "cpu_s": round(lots.cpu.own_s, 2),
        "cores": os.cpu_count() or 1,
        "cpu_us_per_transition": _us_per(lots.cpu.own_s, tally.transitions),
        "relay_cpu_us_per_msg": _us_per(sum(r.cpu.own_s for r in relays), messages * len(relays)),
    }
    if lots.cpu.machine_s is not None:
        result["machine_cpu_us_per_transition"] = _us_per(lots.cpu.machine_s, tally.transitions)
    relay_machine = [r.cpu.machine_s for r in relays if r.cpu.machine_s is not None]
    if len(relay_machine) == len(relays):
        result["relay_machine_cpu_us_per_msg"] = _us_per(sum(relay_machine), messages * len(relays))
    if ringed is not None:
        result["ring_per_s"] = round(ringed.per_s, 1)
        result["ratio_to_ring"] = float(f"{tps / ringed.per_s:.4g}")
        result["ring_cpu_us_per_transition"] = _us_per(ringed.cpu.own_s, ringed.units)
        if ringed.cpu.machine_s is not None:
            result["ring_machine_cpu_us_per_transition"] = _us_per(
                ringed.cpu.machine_s, ringed.units
            )
    print(orjson.dumps(result).decode(), flush=True)
    return result
