"""The engine's own loop (not the harness): consuming, real timers, graceful stop,
recovery of unpublished outbox rows, transient store failures."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest
from pydantic import BaseModel

from adapters.base import Delivery, OutgoingMessage
from adapters.memory import MemoryBroker, MemoryTransport
from orchestrator import Event, Send, Status, Step, StepSaga
from orchestrator.engine import Engine, EngineConfig
from orchestrator.engine.clock import Clock
from orchestrator.store.base import Outcome, UnitOfWork
from orchestrator.store.memory import MemoryStore
from schemas.codec import decode, encode
from schemas.envelope import Envelope
from schemas.errors import StoreError
from tests.support.loop_reports import loop_reports
from tests.support.waiting import wait_until


class Job(BaseModel):
    job_id: str


quick = StepSaga(
    "quick",
    state=Job,
    start=Event("job.started", Job),
    correlate="job_id",
    steps=[Step("work", send=Send("job.work", Job), success=Event("job.worked", Job), timeout=0.3)],
    on_completed=Send("job.done", Job),
    on_compensated=Send("job.abandoned", Job),
)


def event(type: str, job_id: str) -> OutgoingMessage:
    env = Envelope.new(type, {"job_id": job_id}, id=f"{type}-{job_id}", source="test")
    return OutgoingMessage(type, encode(env), env.id, job_id)


@contextlib.asynccontextmanager
async def running(engine: Engine) -> AsyncIterator[asyncio.Event]:
    stopping = asyncio.Event()
    await engine.prepare()
    task = asyncio.ensure_future(engine.run(stopping))
    try:
        yield stopping
    finally:
        stopping.set()
        await asyncio.wait_for(task, 10)


async def quick_engine(
    store: MemoryStore, transport: MemoryTransport, clock: Clock | None = None, **config: Any
) -> Engine:
    """``store`` opened and ``transport`` started, with an engine of the ``quick`` saga
    over them (``config``: :class:`EngineConfig` fields)."""
    await store.open()
    await transport.start()
    return Engine([quick], store, transport, clock=clock, config=EngineConfig(**config))


async def test_consumes_times_out_and_stops_cleanly() -> None:
    broker = MemoryBroker(record=True)
    engine = await quick_engine(MemoryStore(), MemoryTransport(broker), housekeeping_interval=0.05)
    client = MemoryTransport(broker)
    await client.start()
    async with running(engine):
        await client.publish([event("job.started", "a"), event("job.started", "b")])
        await wait_until(lambda: _status(engine, "a", Status.RUNNING))
        await client.publish([event("job.worked", "a")])
        await wait_until(lambda: _status(engine, "a", Status.COMPLETED))
        await wait_until(lambda: _status(engine, "b", Status.COMPENSATED))  # the real timer fired
    types = [m.destination for m in broker.published()]
    assert types.count("job.work") == 2 and "job.done" in types and "job.abandoned" in types
    assert broker.depth("sagawire") == 0, "everything consumed was acked"


async def _status(engine: Engine, cid: str, status: Status) -> bool:
    inst = await engine.instance("quick", cid)
    return inst is not None and inst.status is status


async def test_outbox_rows_left_by_a_crash_are_published_with_their_ids() -> None:
    store = MemoryStore()
    await store.open()
    broker = MemoryBroker(record=True)
    transport = MemoryTransport(broker)
    await transport.start()
    # a previous process committed a transition but died before publishing
    first = Engine([quick], store, transport)
    env = decode(event("job.started", "x").body)
    from orchestrator.engine.correlate import Routed
    from orchestrator.engine.decide import decide
    from orchestrator.engine.persist import unit_for

    routed = Routed(quick, quick.events["job.started"], env, "x", Job(job_id="x"))
    decision = decide(quick, None, routed, 1000.0)
    unit = unit_for(routed, decision, 1000.0)
    assert await store.commit([unit]) == [Outcome.COMMITTED]
    assert broker.published() == []
    await first.prepare()
    (sent,) = broker.published("job.work")
    assert sent.message_id == decision.messages[0].id
    assert await store.pending_outbox() == []


class FlakyStore(MemoryStore):
    """Fails the first ``n`` commits as a database restarting would."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.failures = n

    async def commit(
        self, units: Sequence[UnitOfWork], *, published: Sequence[str] = ()
    ) -> list[Outcome]:
        if self.failures > 0:
            self.failures -= 1
            raise StoreError("database restarting")
        return await super().commit(units, published=published)


async def test_a_transient_store_failure_is_waited_out_holding_the_delivery() -> None:
    """The delivery is held (not given back, which would spend its delivery budget) and
    decided again once the store answers: received once, applied once."""
    broker = MemoryBroker(record=True)
    engine = await quick_engine(
        FlakyStore(2),
        MemoryTransport(broker),
        housekeeping_interval=0.05,
        retry_backoff_max=0.05,
    )
    client = MemoryTransport(broker)
    await client.start()
    async with running(engine):
        await client.publish([event("job.started", "a")])
        await wait_until(lambda: _status(engine, "a", Status.RUNNING))
    assert [m.destination for m in broker.published()].count("job.work") == 1
    assert engine.stats.deliveries == 1, "the delivery was given back and redelivered"
    assert engine.store_health.outages == 2  # its ping answers between the two failures
    assert engine.store_health.up


@pytest.mark.parametrize("batch", [1, 7, 256])
async def test_many_instances_in_one_batch(batch: int) -> None:
    from orchestrator.testing import SagaHarness

    async with SagaHarness(quick, max_batch=batch) as h:
        starts = [h.event("job.started", {"job_id": f"j{i}"}) for i in range(50)]
        replies = [h.event("job.worked", {"job_id": f"j{i}"}) for i in range(50)]
        await h.deliver(*starts, process=False)
        await h.deliver(*replies)
        for i in range(50):
            assert (await h.instance(f"j{i}")).status is Status.COMPLETED
        assert len(h.commands("job.done")) == 50


async def test_stop_while_housekeeping_holds_the_lock_still_returns() -> None:
    broker = MemoryBroker()
    engine = await quick_engine(MemoryStore(), MemoryTransport(broker), housekeeping_interval=0.01)
    async with running(engine):
        await asyncio.sleep(0.05)
        await engine.lock.acquire()  # as fire_due would, at the moment of the signal
        asyncio.get_running_loop().call_later(0.1, engine.lock.release)
    # `running` waited for run() to return within its 10 s bound


class DyingStore(MemoryStore):
    async def due_timers(self, now: float, limit: int = 1000) -> list:  # type: ignore[type-arg]
        raise StoreError("disk is gone", retryable=False)


async def test_a_fatal_store_error_stops_the_engine_with_that_error() -> None:
    engine = await quick_engine(
        DyingStore(), MemoryTransport(MemoryBroker()), housekeeping_interval=0.01
    )
    await engine.prepare()
    with pytest.raises(StoreError, match="disk is gone"):
        await asyncio.wait_for(engine.run(asyncio.Event()), 5)
    assert "disk is gone" in engine.ready_reason


class BusyTransport(MemoryTransport):
    """Always has the next batch ready, and acks slowly: a SIGTERM under load."""

    async def ack(self, deliveries: Sequence[Delivery]) -> None:
        await asyncio.sleep(0.02)
        await super().ack(deliveries)


async def test_stop_under_load_returns_and_gives_back_what_was_read_ahead() -> None:
    broker = MemoryBroker(record=True)
    transport = BusyTransport(broker)
    engine = await quick_engine(MemoryStore(), transport, max_batch=5)
    client = MemoryTransport(broker)
    await client.start()
    await engine.prepare()
    await client.publish([event("job.started", f"j{i}") for i in range(400)])
    stopping = asyncio.Event()
    task = asyncio.ensure_future(engine.run(stopping))
    await asyncio.sleep(0.1)
    stopping.set()
    await asyncio.wait_for(task, 5)
    await transport.close()
    handled = len(broker.published("job.work"))
    assert 0 < handled < 400
    assert broker.depth("sagawire") == 400 - handled, "unhandled deliveries were not given back"


async def test_old_inbox_marks_are_pruned_after_the_retention() -> None:
    from orchestrator.engine.clock import VirtualClock

    clock = VirtualClock()
    store = MemoryStore()
    transport = MemoryTransport(MemoryBroker())
    engine = await quick_engine(store, transport, clock=clock, inbox_retention=100.0)
    await engine.prepare()
    client = MemoryTransport(transport.broker)
    await client.start()
    await client.publish([event("job.started", "a")])
    await engine.handle(transport.poll(engine.topology))
    assert await store.seen([("quick", "job.started-a")])
    assert await engine.prune() == 0
    clock.advance(101)
    assert await engine.prune() == 1
    assert not await store.seen([("quick", "job.started-a")])


class ConflictingStore(MemoryStore):
    """Reports a version conflict for the first ``n`` commits, as a second writer would."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.left = n
        self.commits = 0

    async def commit(
        self, units: Sequence[UnitOfWork], *, published: Sequence[str] = ()
    ) -> list[Outcome]:
        self.commits += 1
        if self.left > 0:
            self.left -= 1
            return [Outcome.CONFLICT for _ in units]
        return await super().commit(units, published=published)


@pytest.mark.parametrize("conflicts", [2, 8])
async def test_version_conflicts_are_decided_again_until_they_settle(conflicts: int) -> None:
    """Past ``conflict_retries`` rounds the engine pauses between rounds, but never gives
    the delivery back: a broker would count that against the message."""
    broker = MemoryBroker(record=True)
    store = ConflictingStore(conflicts)
    transport = MemoryTransport(broker)
    engine = await quick_engine(store, transport, conflict_retries=5, retry_backoff_max=0.01)
    client = MemoryTransport(broker)
    await client.start()
    await engine.prepare()
    await client.publish([event("job.started", "a")])
    await engine.handle(transport.poll(engine.topology))
    assert store.commits == conflicts + 1
    assert await engine.instance("quick", "a") is not None
    assert broker.depth("sagawire") == 0
    assert engine.stats.conflicts == conflicts


async def test_an_idle_stop_leaves_no_pending_task_behind() -> None:
    """Stopped while waiting for a batch, the consumer cancels its queue getter too:
    before, the getter stayed pending and asyncio reported it destroyed later."""
    async with loop_reports() as reported:
        transport = MemoryTransport(MemoryBroker())
        engine = await quick_engine(MemoryStore(), transport)
        async with running(engine):
            await asyncio.sleep(0.05)  # idle: the consumer waits for a first batch
        await transport.close()
        del engine, transport
    assert not [m for m in reported if "destroyed" in m], reported


def test_message_ids_are_uuid5_of_the_cause() -> None:
    """Re-published commands keep their ids because they are derived, not drawn: the same
    value as uuid5 of (cause, saga, index), which other tools can recompute."""
    import uuid

    from orchestrator.engine.sending import _NAMESPACE, message_id

    for i in range(3000):
        cause, saga, index = f"evt-{i}-{'x' * (i % 37)}", f"saga{i % 5}", i % 4
        expected = str(uuid.uuid5(_NAMESPACE, f"{cause}/{saga}/{index}"))
        assert message_id(cause, saga, index) == expected


async def test_timers_wait_for_the_consumer_to_catch_up_after_a_start() -> None:
    """A restarted sidecar must not judge a deadline before it has read what was
    published while it was down: its timers wait until the broker has been ready
    ``catch_up`` seconds with nothing left to read (or ``catch_up_limit``)."""
    broker = MemoryBroker(record=True)
    engine = await quick_engine(
        MemoryStore(), MemoryTransport(broker), housekeeping_interval=0.05, catch_up=1.0
    )
    client = MemoryTransport(broker)
    await client.start()
    loop = asyncio.get_running_loop()
    async with running(engine):
        started = loop.time()
        await client.publish([event("job.started", "a")])
        await wait_until(lambda: _status(engine, "a", Status.RUNNING))
        await asyncio.sleep(0.6)  # the step's 0.3 s timeout is due, but held
        assert (await engine.instance("quick", "a")).status is Status.RUNNING  # type: ignore[union-attr]
        await wait_until(lambda: _status(engine, "a", Status.COMPENSATED), timeout=5)
        assert loop.time() - started >= 0.9


async def test_a_busy_broker_cannot_hold_timers_past_the_limit() -> None:
    broker = MemoryBroker(record=True)
    transport = MemoryTransport(broker)
    engine = await quick_engine(
        MemoryStore(), transport, housekeeping_interval=0.05, catch_up=60.0, catch_up_limit=0.5
    )
    client = MemoryTransport(broker)
    await client.start()
    async with running(engine):
        await client.publish([event("job.started", "a")])
        await wait_until(lambda: _status(engine, "a", Status.COMPENSATED), timeout=5)
