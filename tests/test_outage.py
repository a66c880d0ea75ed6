"""A world that is briefly broken: the store gone, the broker refusing, a dead letter
that cannot be published yet. Nothing is lost, nothing is dead-lettered for it, no
delivery is given back (which would spend its delivery budget), and what the broker
refuses for good is recorded instead of blocking what comes after it.

The real databases and brokers under the same faults: ``tests/faults/``."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from adapters.base import DEADLETTER, Delivery, OutgoingMessage
from adapters.memory import MemoryBroker, MemoryTransport
from orchestrator import Status
from orchestrator.store.base import OutboxRecord, UnitOfWork
from orchestrator.store.memory import MemoryStore
from schemas.errors import PublishRefused, StoreError, TransportError
from tests.support.waiting import wait_until
from tests.test_engine_run import _status, event, quick_engine, running


class DownStore(MemoryStore):
    """Every operation fails while ``down``, as a database behind a cut connection."""

    def __init__(self) -> None:
        super().__init__()
        self.down = False
        self.failures = 0
        for name in (
            "load", "seen", "commit", "pending_outbox", "mark_published", "mark_failed",
            "due_timers", "next_timer_due", "parked", "parked_keys", "expired_parked",
            "prune", "ping",
        ):  # fmt: skip
            setattr(self, name, self._guard(getattr(self, name)))

    def _guard(self, method: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        @functools.wraps(method)
        async def guarded(*args: Any, **kwargs: Any) -> Any:
            if self.down:
                self.failures += 1
                raise StoreError("memory store: connection refused (test outage)")
            return await method(*args, **kwargs)

        return guarded


class CountingTransport(MemoryTransport):
    """Counts nacks: giving a delivery back during an outage is what must not happen."""

    def __init__(self, broker: MemoryBroker) -> None:
        super().__init__(broker)
        self.nacked = 0

    async def nack(self, deliveries: Sequence[Delivery], *, delay: float = 0.0) -> None:
        self.nacked += len(deliveries)
        await super().nack(deliveries, delay=delay)


async def test_a_store_outage_holds_deliveries_then_applies_each_once() -> None:
    broker = MemoryBroker(record=True)
    store = DownStore()
    transport = CountingTransport(broker)
    engine = await quick_engine(
        store, transport, housekeeping_interval=0.02, retry_backoff_max=0.05
    )
    client = MemoryTransport(broker)
    await client.start()
    async with running(engine):
        store.down = True
        await client.publish([event("job.started", f"j{i}") for i in range(20)])
        await wait_until(lambda: _async(not engine.store_health.up))
        await asyncio.sleep(0.5)  # ten times the backoff cap: many probes, no progress
        assert "store unavailable" in engine.store_health.reason
        assert broker.published("job.work") == []
        assert broker.depth("sagawire") == 20, "deliveries were acked while the store was down"
        store.down = False
        for i in range(20):
            await wait_until(functools.partial(_status, engine, f"j{i}", Status.RUNNING))
        assert engine.store_health.up
    assert len(broker.published("job.work")) == 20
    assert broker.published(DEADLETTER) == []
    assert transport.nacked == 0, "a delivery went back to the broker during the outage"
    assert engine.stats.deliveries == 20
    assert store.failures > 3
    assert engine.store_health.outages >= 1


async def test_stopping_during_an_outage_gives_the_held_deliveries_back() -> None:
    broker = MemoryBroker(record=True)
    store = DownStore()
    transport = CountingTransport(broker)
    engine = await quick_engine(store, transport, housekeeping_interval=0.02)
    client = MemoryTransport(broker)
    await client.start()
    async with running(engine):
        store.down = True
        await client.publish([event("job.started", f"j{i}") for i in range(5)])
        await wait_until(lambda: _async(transport.nacked == 0 and not engine.store_health.up))
        await asyncio.sleep(0.1)
    # `running` stopped the engine within its bound although the store never came back
    assert transport.nacked == 5
    assert broker.depth("sagawire") == 5
    assert broker.published(DEADLETTER) == []


class RefusingTransport(MemoryTransport):
    """Refuses for good every message whose body mentions ``poison``, as a broker refuses
    an oversized message; publishes the others of the same call."""

    def __init__(self, broker: MemoryBroker) -> None:
        super().__init__(broker)
        self.fail_destination: str | None = None
        self.hold: asyncio.Event | None = None

    async def publish(self, messages: Sequence[OutgoingMessage]) -> None:
        if self.hold is not None:
            await self.hold.wait()
        if any(m.destination == self.fail_destination for m in messages):
            raise TransportError(f"{self.fail_destination}: leader not available")
        refused = {
            m.message_id: "message too large (test)" for m in messages if b"poison" in m.body
        }
        await super().publish([m for m in messages if m.message_id not in refused])
        if refused:
            raise PublishRefused(refused)


async def test_a_command_the_broker_refuses_is_recorded_and_blocks_nothing() -> None:
    broker = MemoryBroker(record=True)
    store = MemoryStore()
    transport = RefusingTransport(broker)
    engine = await quick_engine(store, transport, housekeeping_interval=0.02)
    client = MemoryTransport(broker)
    await client.start()
    async with running(engine):
        await client.publish([event("job.started", "poison"), event("job.started", "ok")])
        await wait_until(functools.partial(_status, engine, "ok", Status.RUNNING))
        await wait_until(functools.partial(_status, engine, "poison", Status.RUNNING))
        await wait_until(lambda: _async(engine.relay.refused == 1))
        await client.publish([event("job.started", "after")])
        await wait_until(lambda: _async(len(broker.published("job.work")) == 2))
    sent = broker.published("job.work")
    assert [m.key for m in sent] == ["ok", "after"]
    (failed,) = await store.failed_outbox()
    assert failed.row.destination == "job.work"
    assert b"poison" in failed.row.body
    assert failed.reason == "message too large (test)"
    assert await store.pending_outbox() == [], "the refused row is still being retried"


def _row(id: str, destination: str) -> OutboxRecord:
    return OutboxRecord(id=id, destination=destination, key=None, body=b"{}", created_at=1.0)


async def test_the_relay_backs_off_a_failing_destination_alone() -> None:
    broker = MemoryBroker(record=True)
    store = MemoryStore()
    transport = RefusingTransport(broker)
    engine = await quick_engine(store, transport)
    rows = [_row("a1", "down.here"), _row("b1", "up.there"), _row("a2", "down.here")]
    await store.commit([UnitOfWork(outbox=tuple(rows))])
    transport.fail_destination = "down.here"
    assert await engine.relay_pending() == 1
    assert [m.message_id for m in broker.published()] == ["b1"]
    assert [r.id for r in await store.pending_outbox()] == ["a1", "a2"]
    await store.commit([UnitOfWork(outbox=(_row("b2", "up.there"),))])
    assert await engine.relay_pending() == 1  # the backing-off destination is not tried
    transport.fail_destination = None
    await asyncio.sleep(0.25)  # past its first back-off
    assert await engine.relay_pending() == 2
    assert [m.message_id for m in broker.published()] == ["b1", "b2", "a1", "a2"]


async def test_the_relay_publishes_off_the_engines_lock() -> None:
    """A relay waiting on a slow broker does not hold up deliveries being handled."""
    broker = MemoryBroker(record=True)
    store = MemoryStore()
    transport = RefusingTransport(broker)
    engine = await quick_engine(store, transport)
    await engine.prepare()
    await store.commit([UnitOfWork(outbox=(_row("left-1", "job.work"),))])
    transport.hold = asyncio.Event()
    relaying = asyncio.ensure_future(engine.relay_pending())
    await asyncio.sleep(0.05)
    assert not relaying.done()
    transport.hold = None  # the engine's own publishes go through
    client = MemoryTransport(broker)
    await client.start()
    await client.publish([event("job.started", "a")])
    await asyncio.wait_for(engine.handle(transport.poll(engine.topology)), 1.0)
    assert await _status(engine, "a", Status.RUNNING)
    relaying.cancel()


class FlakyDeadLetters(MemoryTransport):
    def __init__(self, broker: MemoryBroker, failures: int) -> None:
        super().__init__(broker)
        self.failures = failures
        self.nacked = 0

    async def dead_letter(self, delivery: Delivery, reason: str) -> None:
        if self.failures:
            self.failures -= 1
            raise TransportError("broker unavailable (test)")
        await super().dead_letter(delivery, reason)

    async def nack(self, deliveries: Sequence[Delivery], *, delay: float = 0.0) -> None:
        self.nacked += len(deliveries)
        await super().nack(deliveries, delay=delay)


async def test_a_dead_letter_the_broker_cannot_take_yet_is_tried_again_then_acked() -> None:
    broker = MemoryBroker(record=True)
    transport = FlakyDeadLetters(broker, failures=3)
    engine = await quick_engine(MemoryStore(), transport, retry_backoff_max=0.02)
    await engine.prepare()
    client = MemoryTransport(broker)
    await client.start()
    await client.publish([OutgoingMessage("job.started", b"not json", "m-1")])
    await engine.handle(transport.poll(engine.topology))
    assert len(broker.published(DEADLETTER)) == 1
    assert transport.nacked == 0
    assert broker.depth("sagawire") == 0
    assert engine.stats.dead_letter_reasons == {"decode": 1}


async def test_every_dead_letter_is_counted_by_its_kind() -> None:
    broker = MemoryBroker(record=True)
    transport = MemoryTransport(broker)
    engine = await quick_engine(MemoryStore(), transport)
    await engine.prepare()
    client = MemoryTransport(broker)
    await client.start()
    big = event("job.started", "x" * 2000)
    await client.publish(
        [
            OutgoingMessage("job.started", b"\xff\xfe", "m-1"),
            OutgoingMessage("job.started", b"[1, 2]", "m-2"),
            big,
            OutgoingMessage("job.started", b"{" + b" " * 300_000 + b"}", "m-3"),
        ]
    )
    await engine.handle(transport.poll(engine.topology))
    assert engine.stats.dead_letter_reasons == {"decode": 1, "envelope": 1, "limit": 2}
    reasons = [m.headers["sagawire-reason"] for m in broker.published(DEADLETTER)]
    assert any("'correlationid'" in r or "'id'" in r for r in reasons), reasons
    assert any("max_message_bytes" in r for r in reasons), reasons
    assert engine.stats.dead_letters == sum(engine.stats.dead_letter_reasons.values())


async def _async(value: bool) -> bool:
    return value


def test_the_counters_log_as_json_with_deviations_counted() -> None:
    """The stop line logs every counter; deviations are keyed by (saga, kind), which a
    JSON log line cannot take as keys: that made the sidecar exit 1 on SIGTERM."""
    import orjson

    from orchestrator.engine.config import Stats

    stats = Stats()
    stats.deviated("checkout", "repeated")
    stats.dead_lettered("decode")
    line = orjson.loads(orjson.dumps(stats.summary()))
    assert line["deviations"] == {"checkout/repeated": 1}
    assert line["dead_letter_reasons"] == {"decode": 1}


class AckFails(MemoryTransport):
    """The first ``failures`` acks fail as a NATS flush does when the broker goes away
    mid-ack; the deliveries stay unsettled, as they would on the broker."""

    def __init__(self, broker: MemoryBroker, failures: int) -> None:
        super().__init__(broker)
        self.failures = failures

    async def ack(self, deliveries: Sequence[Delivery]) -> None:
        if self.failures:
            self.failures -= 1
            raise TransportError("nats: flush timeout (test outage)")
        await super().ack(deliveries)


async def test_an_ack_the_broker_does_not_confirm_stops_nothing() -> None:
    """What a batch caused is committed before its ack: an ack that fails (the broker
    cut mid-ack) is logged, the deliveries come back once it is back, and the inbox skips
    them. It used to stop the engine, and the sidecar with it."""
    broker = MemoryBroker(record=True)
    transport = AckFails(broker, failures=1)
    engine = await quick_engine(MemoryStore(), transport)
    await engine.prepare()
    client = MemoryTransport(broker)
    await client.start()
    await client.publish([event("job.started", "j-1")])
    await engine.handle(transport.poll(engine.topology))  # must not raise
    inst = await engine.instance("quick", "j-1")
    assert inst is not None and inst.version == 1
    await client.publish([event("job.started", "j-1")])  # as the broker delivers it again
    await engine.handle(transport.poll(engine.topology))
    inst = await engine.instance("quick", "j-1")
    assert inst is not None and inst.version == 1
    assert engine.stats.duplicates == 1 and engine.stats.dead_letters == 0


async def test_a_batchs_dead_letters_are_kept_in_one_store_call() -> None:
    """A flood of bad messages costs one store transaction per batch, not one per
    message (each is still published to the dead-letter destination)."""

    class Counting(MemoryStore):
        def __init__(self) -> None:
            super().__init__()
            self.calls: list[int] = []

        async def keep_dead_letters(self, records: Sequence[Any]) -> None:
            self.calls.append(len(records))
            await super().keep_dead_letters(records)

    broker = MemoryBroker(record=True)
    transport = MemoryTransport(broker)
    store = Counting()
    engine = await quick_engine(store, transport)
    await engine.prepare()
    client = MemoryTransport(broker)
    await client.start()
    await client.publish([OutgoingMessage("job.started", b"\xff", f"m-{i}") for i in range(4)])
    await engine.handle(transport.poll(engine.topology))
    assert store.calls == [4]
    assert len(broker.published(DEADLETTER)) == 4
