"""The engine's own CPU per delivery, without a broker: a captured stream replayed.

    .venv/bin/python scripts/replay_pipeline.py [--sagas N] [--store URL] [--runs R] [--stages]

Captures the deliveries of an in-memory bench run (N order sagas plus the warm-up, the
services inline), then hands the same batches, in the same order, to a fresh engine's
pipeline R times, with a transport that does nothing and the given store (a ``sqlite:///``
file is emptied first). Prints CPU microseconds per delivery (best and median of R): what
a broker's client costs is left out, which is what a bench on a real broker cannot do.
``--stages`` also times the stages (``time.perf_counter`` around each, ~0.7 us per timed
call included) and prints the split of the best replay. docs/performance.md quotes it.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import functools
import io
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from adapters.base import Delivery, OutgoingMessage
from orchestrator.engine import Engine, EngineConfig, committing, deciding, intake
from orchestrator.language.loader import load_sagas
from orchestrator.sidecar.logs import configure_logging
from orchestrator.store import open_store
from orchestrator.tooling.bench import fresh_sqlite, run_bench

Captured = list[list[tuple[str, bytes, dict[str, str], str | None]]]


class NullTransport:
    """What the engine calls after a commit, doing nothing: the replay times the engine."""

    async def publish(self, messages: Sequence[OutgoingMessage]) -> None:
        return None

    async def ack(self, deliveries: Sequence[Delivery]) -> None:
        return None

    async def nack(self, deliveries: Sequence[Delivery], delay: float | None = None) -> None:
        return None

    async def dead_letter(self, delivery: Delivery, reason: str) -> None:
        return None


async def capture(sagas: int) -> Captured:
    """The batches an in-memory bench run's engine parsed, as (destination, body,
    headers, key). Taken at ``Intake.parse``, the first thing a batch meets."""
    batches: Captured = []
    parse = intake.Intake.parse

    def recording(self: intake.Intake, deliveries: list[Delivery]) -> Any:
        batches.append([(d.destination, d.body, dict(d.headers), d.key) for d in deliveries])
        return parse(self, deliveries)

    intake.Intake.parse = recording  # type: ignore[method-assign]
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # the bench's own JSON line
            await run_bench(
                "memory://replay-capture", "memory://", sagas, 512, participants="inline"
            )
    finally:
        intake.Intake.parse = parse  # type: ignore[method-assign]
    return batches


async def replay(batches: Captured, store_url: str) -> tuple[float, int]:
    """CPU microseconds per delivery for one pass of ``batches`` through a fresh engine,
    and the transitions it made (every delivery of a clean capture is one)."""
    fresh_sqlite(store_url)
    store = open_store(store_url)
    await store.open()
    engine = Engine(
        load_sagas("sagas.order"), store, NullTransport(), config=EngineConfig(max_batch=256)
    )
    work = [[Delivery(dst, body, headers, key) for dst, body, headers, key in b] for b in batches]
    count = sum(len(b) for b in work)
    started = time.process_time()
    step = engine.pipeline.step
    for deliveries in work:
        await step(deliveries)
    await engine.pipeline.drain()
    spent = time.process_time() - started
    await store.close()
    return spent / count * 1e6, engine.stats.transitions


STAGES: list[tuple[Any, str, str]] = [
    (deciding, "decide", "decide"),
    (deciding, "unit_for", "build the unit of work"),
    (intake.Intake, "parse", "parse"),
    (intake, "decode", "  of which decode"),
    (committing.Committer, "commit", "commit"),
]


def time_stages(totals: collections.Counter[str]) -> None:
    """Wrap each stage in :data:`STAGES` so that its wall time adds up in ``totals``."""
    for owner, name, label in STAGES:
        fn = getattr(owner, name)
        if asyncio.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def timed_async(*a: Any, _fn: Any = fn, _label: str = label, **k: Any) -> Any:
                began = time.perf_counter()
                try:
                    return await _fn(*a, **k)
                finally:
                    totals[_label] += time.perf_counter() - began

            setattr(owner, name, timed_async)
        else:

            @functools.wraps(fn)
            def timed(*a: Any, _fn: Callable[..., Any] = fn, _label: str = label, **k: Any) -> Any:
                began = time.perf_counter()
                try:
                    return _fn(*a, **k)
                finally:
                    totals[_label] += time.perf_counter() - began

            setattr(owner, name, timed)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sagas", type=int, default=3000)
    parser.add_argument("--store", default="memory://")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--stages", action="store_true")
    args = parser.parse_args()
    configure_logging("warning", json=True)
    batches = await capture(args.sagas)  # also applies the bench's collector settings
    count = sum(len(b) for b in batches)
    totals: collections.Counter[str] = collections.Counter()
    if args.stages:
        time_stages(totals)
    results: list[tuple[float, dict[str, float]]] = []
    transitions = 0
    for _ in range(args.runs):
        totals.clear()
        us, transitions = await replay(batches, args.store)
        results.append((us, dict(totals)))
    best, split = min(results, key=lambda r: r[0])
    median = statistics.median(r[0] for r in results)
    print(
        f"{count} deliveries ({transitions} transitions), store {args.store}:"
        f" {best:.1f} us CPU per delivery (best of"
        f" {args.runs}), median {median:.1f}"
    )
    for _, _, label in STAGES if split else ():
        print(f"  {label:24s} {split.get(label, 0.0) / count * 1e6:6.1f} us per delivery")


if __name__ == "__main__":
    asyncio.run(main())
