"""``sagawire bench``: order sagas per second on a given broker and store, with a yardstick.

A throughput figure alone says little: on a slow broker every program is slow.
So the same run also relays as many messages as the engine consumed through the
same transport URL — consume, publish each to another destination, ack, in
batches of the same size, with no engine — and reports ``ratio``, the engine's
transitions per second over that relay's messages per second
(:mod:`orchestrator.bench_relay`): how much of what the broker allows the engine keeps.

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
import tempfile
import time
import uuid
from array import array
from collections.abc import Sequence
from pathlib import Path
from typing import IO, NotRequired, TypedDict
from urllib.parse import urlsplit

import orjson

from adapters import open_transport
from adapters._util import redact_url
from adapters.base import OutgoingMessage, Transport
from adapters.memory import MemoryBroker
from orchestrator.bench_relay import relay_rate
from orchestrator.bench_ring import ring_rate, ring_url
from orchestrator.engine import Engine, EngineConfig
from orchestrator.gc_tuning import gc_settings, tune_gc
from orchestrator.loader import load_sagas
from orchestrator.model import Decision, Instance
from orchestrator.participants import BENCH, Participants, order_placed, start_participants
from orchestrator.store import open_store
from schemas.errors import ConfigError

__all__ = [
    "BenchResult",
    "fresh_sqlite",
    "percentile",
    "run_bench",
    "stop_engine",
    "warmup_sagas",
]

PARTICIPANTS = ("inline", "process")
TRANSITIONS_PER_SAGA = 4
MAX_BATCH = 256  # the engine's batch size and the relay's
_STALL_SECONDS = 60.0


class BenchResult(TypedDict):
    broker: str
    store: str
    participants: str  # "inline" or "process"
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
    ring_per_s: NotRequired[float]  # with --ring: the same flow, a stub for the engine
    ratio_to_ring: NotRequired[float]


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


class _Feeder:
    """Keeps at most ``limit`` sagas in flight and times each from start to completion.

    Used as the engine observer: it sees every committed transition."""

    def __init__(self, transport: Transport, total: int, limit: int, run: str) -> None:
        self.transport = transport
        self.total = total
        self.limit = limit
        self.run = run
        self.placed = 0
        self.finished = 0
        self.transitions = 0
        self.started: dict[str, float] = {}
        self.latencies = array("d")
        self.room = asyncio.Event()

    def __call__(self, instance: Instance, decision: Decision) -> None:
        self.transitions += 1
        if instance.status.final:
            began = self.started.pop(instance.correlation_id, None)
            if began is not None:
                self.latencies.append(time.perf_counter() - began)
                self.finished += 1
                self.room.set()

    async def feed(self) -> None:
        """Publish ``order.placed`` events, in batches, whenever there is room."""
        while self.placed < self.total:
            room = min(self.limit - (self.placed - self.finished), self.total - self.placed)
            if room <= 0:
                await self._progress()
                continue
            for lo in range(0, room, MAX_BATCH):
                batch = [self._order(self.placed + i) for i in range(min(MAX_BATCH, room - lo))]
                now = time.perf_counter()
                for m in batch:
                    self.started[m.key or ""] = now
                await self.transport.publish(batch)
                self.placed += len(batch)

    async def done(self) -> None:
        """Return once every saga finished."""
        while self.finished < self.total:
            await self._progress()

    def _order(self, i: int) -> OutgoingMessage:
        return order_placed(f"{self.run}-{i}", source="sagawire/bench")

    async def _progress(self) -> None:
        """Wait for a saga to finish; fail if none does for a long while."""
        before = self.finished
        self.room.clear()
        try:
            async with asyncio.timeout(_STALL_SECONDS):
                await self.room.wait()
        except TimeoutError:
            if self.finished == before:
                raise RuntimeError(
                    f"bench stalled: no saga finished in {_STALL_SECONDS:g}s;"
                    f" {self.placed - self.finished} in flight"
                ) from None


class _ChildServices:
    """The simulated services in a ``sagawire simulate --fast`` child process.

    Its stderr goes to a temporary file, not a pipe: a pipe nobody reads while the
    bench runs would block the child once full."""

    def __init__(self, process: asyncio.subprocess.Process, stderr: IO[bytes]) -> None:
        self.process = process
        self.stderr = stderr

    @classmethod
    async def start(cls, broker_url: str, seed: int) -> _ChildServices:
        stderr = tempfile.TemporaryFile()  # noqa: SIM115 (closed by close())
        process = await asyncio.create_subprocess_exec(
            *(sys.executable, "-m", "orchestrator.cli", "simulate", "--fast"),
            *("--broker", broker_url, "--seed", str(seed)),
            stdout=asyncio.subprocess.PIPE,
            stderr=stderr,
        )
        child = cls(process, stderr)
        assert process.stdout is not None
        try:
            async with asyncio.timeout(_STALL_SECONDS):
                line = await process.stdout.readline()  # its queues exist once it prints
        except TimeoutError:
            line = b""
        if not line.startswith(b"{"):
            await child.close()
            stderr.seek(0)
            error = stderr.read().decode(errors="replace").strip()
            stderr.close()
            raise RuntimeError(f"simulated services did not start: {error or 'no output'}")
        return child

    async def close(self) -> None:
        if self.process.returncode is None:
            self.process.terminate()
            try:
                async with asyncio.timeout(10):
                    await self.process.wait()
            except TimeoutError:
                self.process.kill()
                await self.process.wait()
        self.stderr.close()


async def _start_services(
    broker_url: str, seed: int, participants: str
) -> Participants | _ChildServices:
    """The simulated services, in this process or in a child (``participants``)."""
    if participants == "process":
        return await _ChildServices.start(broker_url, seed)
    return await start_participants(broker_url, seed=seed, behaviour=BENCH, max_batch=MAX_BATCH)


async def _drive(feeder: _Feeder, running: asyncio.Future[None]) -> None:
    """Feed ``feeder``'s sagas and wait until all finished; fail if the engine stops."""
    feeding = asyncio.ensure_future(feeder.feed())
    waiting = asyncio.ensure_future(feeder.done())
    pending: set[asyncio.Future[None]] = {running, waiting, feeding}
    try:
        while waiting in pending:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                task.result()  # re-raise a failure of the engine or the feeder
            if running in done:
                raise RuntimeError("the engine stopped before the bench finished")
    finally:
        for task in (feeding, waiting):
            task.cancel()


async def _engine_run(
    broker_url: str,
    store_url: str,
    sagas: int,
    concurrency: int,
    seed: int,
    participants: str,
    warmup: int = 0,
) -> tuple[float, float, _Feeder]:
    """Run ``warmup`` sagas untimed, then the ``sagas`` measured; return the elapsed wall
    and CPU time of the measured ones and their feeder's tallies.

    Why a warm-up: one-off costs at start (a Kafka consumer group join takes about a
    second) are not throughput; the relay is measured after the same kind of warm-up."""
    fresh_sqlite(store_url)
    store = open_store(store_url)
    await store.open()
    services = await _start_services(broker_url, seed, participants)
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
        await engine.prepare()
        gc.freeze()  # the engine's start-up objects, as ``sagawire run`` freezes its own
        running = asyncio.ensure_future(engine.run(stopping))
        if warmup:
            warm = _Feeder(transport, warmup, concurrency, f"{run}w")
            engine.observers.append(warm)
            await _drive(warm, running)
            engine.observers.remove(warm)  # all its sagas finished: none of theirs is left
        feeder = _Feeder(transport, sagas, concurrency, run)
        engine.observers.append(feeder)
        began, cpu = time.perf_counter(), time.process_time()
        await _drive(feeder, running)
        elapsed, cpu = time.perf_counter() - began, time.process_time() - cpu
        await stop_engine(running, stopping, transport)
        return elapsed, cpu, feeder
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
    participants: str = "inline",
    ring: bool = False,
) -> BenchResult:
    """Run the bench, print its one JSON line, and return the figures.

    ``participants``: ``inline`` runs the simulated services in this process (the
    default: everything the bench measures happens here), ``process`` in a
    ``sagawire simulate`` child, as services run beside a sidecar in production; then
    this process's CPU is the engine's and the feeder's alone.

    ``ring``: also run the same flow with a stub in the engine's place
    (:mod:`orchestrator.bench_ring`) and report ``ring_per_s`` and ``ratio_to_ring``."""
    if participants not in PARTICIPANTS:
        raise ConfigError(
            f"--participants {participants!r}: expected one of {', '.join(PARTICIPANTS)}"
        )
    if participants == "process" and urlsplit(broker_url).scheme == "memory":
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
        elapsed, cpu, feeder = await _engine_run(
            broker_url, store_url, sagas, concurrency, seed, participants, warmup
        )
        relays.append(await relay_rate(broker_url, messages, concurrency, MAX_BATCH, warm_messages))
        peak = _peak_rss_mb()  # before the ring, whose own messages are not the engine's memory
        ring_per_s = None
        if ring:
            private = ring_url(broker_url)
            try:
                ring_per_s = await ring_rate(
                    private,
                    sagas,
                    concurrency,
                    MAX_BATCH,
                    lambda: _start_services(private, seed, participants),
                    warmup,
                )
            finally:
                _forget_memory_broker(private)
    finally:
        _forget_memory_broker(broker_url)
    tps = feeder.transitions / elapsed
    relay_per_s = sum(relays) / len(relays)
    result: BenchResult = {
        "broker": redact_url(broker_url),
        "store": redact_url(store_url),
        "participants": participants,
        "sagas": sagas,
        "warmup_sagas": warmup,
        "concurrency": concurrency,
        "transitions_per_s": round(tps, 1),
        "sagas_per_s": round(feeder.finished / elapsed, 1),
        "p50_ms": round(percentile(feeder.latencies, 50) * 1000, 2),
        "p99_ms": round(percentile(feeder.latencies, 99) * 1000, 2),
        "peak_rss_mb": round(peak, 1),
        "rss_growth_mb": round(peak - rss_start, 1),
        "baseline_relay_per_s": round(relay_per_s, 1),
        "baseline_relay_runs": [round(r, 1) for r in relays],
        "ratio": float(f"{tps / relay_per_s:.4g}"),
        "elapsed_s": round(elapsed, 2),
        "cpu_s": round(cpu, 2),
    }
    if ring_per_s is not None:
        result["ring_per_s"] = round(ring_per_s, 1)
        result["ratio_to_ring"] = float(f"{tps / ring_per_s:.4g}")
    print(orjson.dumps(result).decode(), flush=True)
    return result
