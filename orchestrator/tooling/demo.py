"""``sagawire demo``: the order saga against simulated services, with live progress.

The order saga's steps time out after 30 s, so a demo in real time would take
minutes. It runs instead on *saga time*: a :class:`SimClock` that stands still
while anything is being handled and jumps to the next moment something is due
(a reply a simulated service is holding back, or a saga timer) once every party
is waiting on time alone. That makes the demo fast (200 orders take about a
second of wall time) and deterministic: with the services' fates a
function of the seed (:mod:`orchestrator.tooling.participants`) and time moving only
when the system is idle, the same seed gives the same outcome and the same
latencies on every run, on every broker and store.

"Idle" is counted, not guessed: every transport here is wrapped in
:class:`_Counted`, which tallies messages published to a destination someone in
the demo consumes and the deliveries acked. When the only unacked messages are
commands whose delayed replies sleep on the clock, nothing can happen before
time moves.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import urlsplit

import rich.console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from adapters import open_transport
from adapters.base import (
    Delivery,
    OutgoingMessage,
    Readiness,
    Topology,
    Transport,
)
from adapters.memory import MemoryBroker
from orchestrator.engine import Engine, EngineConfig
from orchestrator.engine.model import Decision, Instance
from orchestrator.language.loader import load_sagas
from orchestrator.language.status import Status
from orchestrator.store import open_store
from orchestrator.tooling.bench import fresh_sqlite, percentile, stop_engine
from orchestrator.tooling.participants import Behaviour, order_placed, start_participants

__all__ = ["DEMO", "DemoResult", "SimClock", "run_demo", "simulate"]

DEMO = Behaviour(refuse=0.06, silent=0.05, undo_silent=0.45, delay=(0.02, 0.4))
"""The demo's services: about one step in sixteen refused, one command in twenty unanswered,
nearly one compensation attempt in two unanswered (twice running: compensation_failed)."""

START = 1_767_225_600.0  # 2026-01-01T00:00:00Z: saga time starts here on every run
FINAL = (Status.COMPLETED, Status.COMPENSATED, Status.COMPENSATION_FAILED)
_STALL_SECONDS = 30.0  # wall time without any progress before the demo gives up


class SimClock:
    """Saga time for the demo: stands still until :meth:`advance_to` moves it.

    :meth:`after` is the simulated services' ``sleep``: it registers the wake-up at
    once and counts the waiter in :attr:`waiting` until it is woken. The engine
    only reads :meth:`now`.
    """

    def __init__(self, start: float, changed: asyncio.Event) -> None:
        self._now = start
        self._changed = changed
        self._waiters: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()
        self.waiting = 0

    def now(self) -> float:
        return self._now

    async def sleep(self, seconds: float) -> None:
        await self.after(seconds)

    def after(self, seconds: float) -> asyncio.Future[None]:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiters, (self._now + max(0.0, seconds), next(self._seq), fut))
        self.waiting += 1
        self._changed.set()
        return fut

    def next_due(self) -> float | None:
        return self._waiters[0][0] if self._waiters else None

    def advance_to(self, when: float) -> None:
        """Move to ``when`` (never backwards) and wake every waiter due by then."""
        self._now = max(self._now, when)
        while self._waiters and self._waiters[0][0] <= self._now:
            _, _, fut = heapq.heappop(self._waiters)
            self.waiting -= 1
            if not fut.done():
                fut.set_result(None)


class _Flight:
    """Messages in flight between the demo's parties: published to a watched
    destination and not yet acked."""

    def __init__(self, changed: asyncio.Event) -> None:
        self.changed = changed
        self.watched: frozenset[str] = frozenset()
        self.sent = 0
        self.acked = 0

    @property
    def unacked(self) -> int:
        return self.sent - self.acked

    def wrap(self, transport: Transport) -> Transport:
        return _Counted(transport, self)


class _Counted:
    """A transport that reports what passes through it to a :class:`_Flight`."""

    def __init__(self, inner: Transport, flight: _Flight) -> None:
        self.inner = inner
        self.flight = flight

    async def start(self) -> None:
        await self.inner.start()

    async def close(self) -> None:
        await self.inner.close()

    async def declare(self, topology: Topology) -> None:
        await self.inner.declare(topology)

    def consume(self, topology: Topology, *, max_batch: int = 256) -> AsyncIterator[list[Delivery]]:
        return self.inner.consume(topology, max_batch=max_batch)

    async def publish(self, messages: Sequence[OutgoingMessage]) -> None:
        # Counted before the broker has it, so it can never be acked before it is counted.
        watched = self.flight.watched
        self.flight.sent += sum(1 for m in messages if m.destination in watched)
        await self.inner.publish(messages)

    async def ack(self, deliveries: Sequence[Delivery]) -> None:
        await self.inner.ack(deliveries)
        self.flight.acked += len(deliveries)
        self.flight.changed.set()

    async def nack(self, deliveries: Sequence[Delivery], *, delay: float = 0.0) -> None:
        await self.inner.nack(deliveries, delay=delay)

    async def dead_letter(self, delivery: Delivery, reason: str) -> None:
        await self.inner.dead_letter(delivery, reason)

    @property
    def readiness(self) -> Readiness:
        return self.inner.readiness


class _Tally:
    """The engine observer: transitions, final statuses and their saga-time latencies."""

    def __init__(self, progress: Progress, task: TaskID, clock: SimClock) -> None:
        self.progress = progress
        self.task = task
        self.clock = clock
        self.transitions = 0
        self.latencies: dict[Status, list[float]] = {s: [] for s in FINAL}
        self.finished = 0

    def __call__(self, instance: Instance, decision: Decision) -> None:
        self.transitions += 1
        if not instance.status.final:
            return
        self.latencies.setdefault(instance.status, []).append(
            instance.updated_at - instance.created_at
        )
        self.finished += 1
        counts = " · ".join(f"{s.value} {len(v)}" for s, v in self.latencies.items())
        self.progress.update(
            self.task,
            completed=self.finished,
            detail=f"{counts} · saga time {self.clock.now() - START:.1f}s",
        )


def _order(i: int, seed: int) -> OutgoingMessage:
    order_id = f"order-{i:05d}"
    return order_placed(
        order_id,
        source="sim/shop",
        message_id=f"{order_id}/placed/{seed}",
        customer_id=f"customer-{i % 97:02d}",
        items=[
            {"sku": f"sku-{(i * 7 + j) % 50:03d}", "qty": 1 + (i + j) % 3} for j in range(1 + i % 3)
        ],
        amount_cents=500 + (i * 7919 + seed) % 20_000,
        time=datetime.fromtimestamp(START, UTC),
    )


async def _until_idle(flight: _Flight, clock: SimClock, engine_task: asyncio.Task[None]) -> None:
    """Wait until nothing can happen before saga time moves."""
    stalled = time.monotonic() + _STALL_SECONDS
    while flight.unacked != clock.waiting:
        if engine_task.done():
            engine_task.result()  # re-raise what stopped the engine
            raise RuntimeError("the engine stopped before the demo finished")
        if time.monotonic() > stalled:
            raise RuntimeError(
                f"demo stalled: {flight.unacked} message(s) unacked for"
                f" {_STALL_SECONDS:g}s; is the broker delivering?"
            )
        flight.changed.clear()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(0.05):
                await flight.changed.wait()


@dataclass(frozen=True)
class DemoResult:
    """What a demo run did. ``counts`` are read back from the store at the end."""

    orders: int
    seed: int
    counts: dict[str, int]
    latencies: dict[Status, list[float]]  # saga-time seconds, per final status
    transitions: int
    timers_fired: int
    wall_seconds: float


async def run_demo(
    orders: int, seed: int, store_url: str, broker_url: str, console: rich.console.Console
) -> int:
    """Run ``orders`` order sagas against simulated services; print a summary; return 0."""
    result = await simulate(orders, seed, store_url, broker_url, console)
    console.print(_summary(result))
    return 0


async def simulate(
    orders: int, seed: int, store_url: str, broker_url: str, console: rich.console.Console
) -> DemoResult:
    """The demo without its summary table: run the sagas to their end, with live progress."""
    sagas = load_sagas("sagas.order")
    fresh_sqlite(store_url)
    memory = urlsplit(broker_url).scheme == "memory"
    if memory:  # a fresh in-process broker: nothing left from an earlier run in this process
        MemoryBroker.forget(urlsplit(broker_url).netloc + urlsplit(broker_url).path)
    changed = asyncio.Event()
    clock = SimClock(START, changed)
    flight = _Flight(changed)
    store = open_store(store_url)
    await store.open()
    wall = time.perf_counter()
    progress = Progress(
        TextColumn("[bold]orders"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[detail]}"),
        TimeElapsedColumn(),
        console=console,
    )
    tally = _Tally(progress, progress.add_task("orders", total=orders, detail=""), clock)
    participants = await start_participants(
        broker_url, seed=seed, behaviour=DEMO, sleep=clock.after, wrap=flight.wrap
    )
    transport = flight.wrap(open_transport(broker_url))
    stopping = asyncio.Event()
    try:
        await transport.start()
        engine = Engine(
            sagas, store, transport, clock=clock, config=EngineConfig(group="sagawire-demo")
        )
        flight.watched = frozenset((*engine.topology.consumes, *participants.command_types))
        engine.observers.append(tally)
        await engine.prepare()
        engine_task = asyncio.ensure_future(engine.run(stopping))
        with progress:
            for start in range(0, orders, 256):
                await transport.publish(
                    [_order(i, seed) for i in range(start, min(orders, start + 256))]
                )
            while tally.finished < orders:
                await _until_idle(flight, clock, engine_task)
                if tally.finished >= orders:
                    break
                due = [t for t in (clock.next_due(), await store.next_timer_due()) if t is not None]
                if not due:
                    console.print("[red]nothing left to wait for, yet some orders are unfinished")
                    break
                clock.advance_to(min(due))
                while await engine.fire_due():
                    pass
        await stop_engine(engine_task, stopping, transport)
        return DemoResult(
            orders,
            seed,
            await store.counts(),
            tally.latencies,
            tally.transitions,
            engine.stats.timers_fired,
            time.perf_counter() - wall,
        )
    finally:
        stopping.set()
        await participants.close()
        await transport.close()
        await store.close()
        if memory:
            MemoryBroker.forget(urlsplit(broker_url).netloc + urlsplit(broker_url).path)


def _seconds(values: Sequence[float], q: float) -> str:
    return f"{percentile(values, q):.2f} s" if values else "-"


def _summary(r: DemoResult) -> Table:
    orders = r.orders
    table = Table(
        title=f"sagawire demo: {orders} orders, seed {r.seed}",
        caption=f"latency from order.placed to the final status, in saga time"
        f" (a virtual clock: 30 s step timeouts cost no wall time)\n"
        f"{r.transitions} transitions, {r.timers_fired} timers fired,"
        f" {r.wall_seconds:.2f} s wall time",
    )
    table.add_column("outcome")
    for name in ("orders", "share", "p50", "p90", "p99", "max"):
        table.add_column(name, justify="right")
    style = {
        Status.COMPLETED: "green",
        Status.COMPENSATED: "yellow",
        Status.COMPENSATION_FAILED: "red",
    }
    everything: list[float] = []
    for status, values in r.latencies.items():
        everything += values
        table.add_row(
            f"[{style.get(status, 'white')}]{status.value}",
            str(len(values)),
            f"{100 * len(values) / max(1, orders):.1f}%",
            *(_seconds(values, q) for q in (50, 90, 99, 100)),
        )
    unfinished = orders - sum(len(v) for v in r.latencies.values())
    if unfinished:
        table.add_row(
            "[magenta]unfinished",
            str(unfinished),
            f"{100 * unfinished / max(1, orders):.1f}%",
            "-",
            "-",
            "-",
            "-",
        )
    table.add_section()
    table.add_row(
        "[bold]all", str(orders), "100%", *(_seconds(everything, q) for q in (50, 90, 99, 100))
    )
    return table
