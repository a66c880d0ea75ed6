"""Races between replicas that share one store, and store failures, driven step by step.

Two engines over one store stand for two sidecars of one ``--group`` on a queue that
spreads an instance's messages over both (NATS JetStream, RabbitMQ). Deliveries are
fed by hand (``handle`` for the serial path, ``_step``/``_drain`` for the pipelined
one) so each interleaving is exact. Every test here pins a guarantee of the README
that such an interleaving broke (the failure mode is in each docstring)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Literal, cast

import pytest

from adapters.base import DEADLETTER, Delivery, OutgoingMessage
from adapters.memory import MemoryBroker, MemoryTransport
from orchestrator import Status
from orchestrator.engine import Engine, EngineConfig
from orchestrator.engine.clock import VirtualClock
from orchestrator.language.definition import SagaDefinition
from orchestrator.store import open_store
from orchestrator.store.base import Outcome, Store, UnitOfWork
from orchestrator.store.memory import MemoryStore
from sagas.order import order
from sagas.trip import trip
from schemas.codec import decode, encode
from schemas.envelope import Envelope
from schemas.errors import StoreError

TRIP = {"trip_id": "t-1", "customer_id": "c", "destination": "Oslo", "nights": 2}
PLACED = {
    "order_id": "o-1",
    "customer_id": "c",
    "items": [{"sku": "s", "qty": 1}],
    "amount_cents": 5,
}


def delivery(type_: str, data: Mapping[str, object], id_: str, cid: str) -> Delivery:
    env = Envelope.new(type_, data, id=id_, source="test", correlationid=cid)
    return Delivery(destination=type_, body=encode(env), headers={}, key=cid)


def booked(leg: str) -> Delivery:
    return delivery(f"{leg}.booked", {"trip_id": "t-1", f"{leg}_ref": leg[0]}, f"{leg}-ok", "t-1")


class Replicas:
    """Two engines (``a`` and ``b``) over one store, one broker, one virtual clock."""

    def __init__(self, a: Engine, b: Engine, broker: MemoryBroker, clock: VirtualClock) -> None:
        self.a, self.b, self.broker, self.clock = a, b, broker, clock

    def sent(self, type_: str) -> list[Envelope]:
        return [decode(m.body) for m in self.broker.published(type_)]


@asynccontextmanager
async def replicas(
    sagas: Sequence[SagaDefinition], stores: tuple[Store, Store]
) -> AsyncIterator[Replicas]:
    broker = MemoryBroker(record=True)
    clock = VirtualClock()
    engines: list[Engine] = []
    for store in stores:
        await store.open()
        transport = MemoryTransport(broker)
        await transport.start()
        engine = Engine(sagas, store, transport, clock=clock, config=EngineConfig())
        await engine.prepare()
        engines.append(engine)
    try:
        yield Replicas(engines[0], engines[1], broker, clock)
    finally:
        for store in stores:
            await store.close()


def shared_stores(kind: str, tmp_path: Path) -> tuple[Store, Store]:
    """One MemoryStore object seen by both engines, or two connections to one SQLite file."""
    if kind == "memory":
        store = MemoryStore()
        return store, store
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    return open_store(url), open_store(url)


# -- a version conflict must not let the rest of the instance's chain commit -------------


class BeforeCommit:
    """A store that runs ``hook`` once, just before its next commit: another replica's
    commit landing between this replica's read and its write."""

    def __init__(self, inner: Store) -> None:
        self.inner = inner
        self.hook: Callable[[], Awaitable[None]] | None = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def commit(
        self, units: Sequence[UnitOfWork], *, published: Sequence[str] = ()
    ) -> list[Outcome]:
        hook, self.hook = self.hook, None
        if hook is not None:
            await hook()
        return await self.inner.commit(units, published=published)


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
async def test_a_conflict_in_one_batch_does_not_commit_the_units_chained_on_it(
    kind: str, tmp_path: Path
) -> None:
    """Replica A reads the trip (version 1) and decides flight.booked then hotel.booked
    in one batch (versions 2 and 3); replica B commits car.booked (version 2) before A's
    commit. flight.booked meets the conflict, but hotel.booked expects exactly the
    version B wrote, so it committed, over B's state, a state that never saw
    car.booked. car.booked is acknowledged, so never applied again: the trip waits for a
    car that was booked, times out and cancels all three legs."""
    first, second = shared_stores(kind, tmp_path)
    a_store = BeforeCommit(first)
    async with replicas([trip], (cast(Store, a_store), second)) as r:
        await r.a.handle([delivery("trip.requested", TRIP, "req-1", "t-1")])

        async def b_commits_car() -> None:
            await r.b.handle([booked("car")])

        a_store.hook = b_commits_car
        await r.a.handle([booked("flight"), booked("hotel")])
        inst = await r.a.instance("trip", "t-1")
        assert inst is not None
        assert inst.data.car == "booked", inst.data  # type: ignore[attr-defined]
        assert inst.status is Status.COMPLETED, inst.state
        assert len(r.sent("trip.confirmed")) == 1


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
async def test_a_conflict_in_the_pipeline_does_not_commit_the_next_batch_decided_on_it(
    kind: str, tmp_path: Path
) -> None:
    """The pipelined form of the same race: batch N (flight.booked) is decided from a
    fresh read and held; B commits car.booked; batch N+1 (hotel.booked) is decided from
    N's provisional instance while N commits and meets the conflict. N+1 was
    committed anyway, on top of B's version, before N was retried."""
    async with replicas([trip], shared_stores(kind, tmp_path)) as r:
        await r.a.handle([delivery("trip.requested", TRIP, "req-1", "t-1")])
        await r.a.pipeline.step([booked("flight")])  # decided, not committed yet
        await r.b.handle([booked("car")])
        await r.a.pipeline.step([booked("hotel")])  # commits N (conflict), decides N+1 on it
        await r.a.pipeline.drain()
        inst = await r.a.instance("trip", "t-1")
        assert inst is not None
        assert inst.data.car == "booked", inst.data  # type: ignore[attr-defined]
        assert inst.status is Status.COMPLETED, inst.state
        history = await r.a.store.history(("trip", "t-1"))
        types = [h.message_type for h in history]
        assert sorted(types[1:]) == ["car.booked", "flight.booked", "hotel.booked"], types


# -- decisions made on a stale cached instance must be checked against the store -------


async def test_a_due_timer_is_not_dropped_on_a_replica_whose_cache_is_stale() -> None:
    """A started the order (its cache: state ``inventory``); B applied inventory.reserved
    (state ``payment``, payment.timeout set). When payment.timeout falls due, A's
    housekeeping fires it: on its cached ``inventory`` state the timer is not handled,
    so A deleted the timer row without a version check. The payment service
    never answers, and the saga then waits forever in ``payment``."""
    async with replicas([order], shared_stores("memory", Path())) as r:
        await r.a.handle([delivery("order.placed", PLACED, "placed-1", "o-1")])
        reserved = {"order_id": "o-1", "reservation_id": "r"}
        await r.b.handle([delivery("inventory.reserved", reserved, "res-1", "o-1")])
        r.clock.advance(31)
        await r.a.fire_due()  # payment.timeout: A decides it on its cached instance
        for _ in range(6):  # retry backoffs, second timeout: give both replicas turns
            r.clock.advance(31)
            await r.b.fire_due()
            await r.a.fire_due()
        inst = await r.b.instance("order", "o-1")
        assert inst is not None
        assert len(r.sent("payment.charge")) == 2, "payment.charge was never retried"
        assert inst.status.final, (inst.state, inst.status)  # not waiting forever


async def test_an_event_the_stored_instance_accepts_is_not_parked_on_a_stale_cache() -> None:
    """A's cache says ``inventory``, the store says ``payment`` (B moved it). A receives
    payment.charged: on its cache the event is not accepted yet, so A parked it (a
    park has no version check) and acknowledged it; nothing revives it, and 60 s later
    it was dead-lettered while the saga, in ``payment``, waited for exactly that."""
    async with replicas([order], shared_stores("memory", Path())) as r:
        await r.a.handle([delivery("order.placed", PLACED, "placed-1", "o-1")])
        reserved = {"order_id": "o-1", "reservation_id": "r"}
        await r.b.handle([delivery("inventory.reserved", reserved, "res-1", "o-1")])
        charged = {"order_id": "o-1", "payment_id": "p"}
        await r.a.handle([delivery("payment.charged", charged, "chg-1", "o-1")])
        inst = await r.b.instance("order", "o-1")
        assert inst is not None
        assert inst.state == "shipping", inst.state
        assert r.sent(DEADLETTER) == []


async def test_an_abort_on_a_replica_with_a_stale_cache_takes_effect() -> None:
    """``Engine.abort`` decides on the cached instance; a version conflict there was
    dropped silently (the abort item has no delivery to retry), and the admin call
    returned the instance still ``running``."""
    async with replicas([order], shared_stores("memory", Path())) as r:
        await r.a.handle([delivery("order.placed", PLACED, "placed-1", "o-1")])
        reserved = {"order_id": "o-1", "reservation_id": "r"}
        await r.b.handle([delivery("inventory.reserved", reserved, "res-1", "o-1")])
        inst = await r.a.abort("order", "o-1", "operator says stop")
        assert inst is not None
        assert inst.status is Status.ABORTED, inst.status


# -- parked messages must be found by whichever replica changes the instance ------------


async def test_an_early_event_parked_on_one_replica_is_applied_when_another_starts_the_saga() -> (
    None
):
    """inventory.reserved reaches A before order.placed reaches B: A parks it. B learned
    which instances have parked messages only at start-up, so it created the instance
    without looking, and the parked reply was dead-lettered 60 s later instead of
    being applied (the saga then timed out and retried a reservation already made)."""
    async with replicas([order], shared_stores("memory", Path())) as r:
        reserved = {"order_id": "o-1", "reservation_id": "r"}
        await r.a.handle([delivery("inventory.reserved", reserved, "res-1", "o-1")])
        await r.b.handle([delivery("order.placed", PLACED, "placed-1", "o-1")])
        inst = await r.b.instance("order", "o-1")
        assert inst is not None
        assert inst.state == "payment", inst.state
        r.clock.advance(61)
        await r.a.fire_due()
        assert r.sent(DEADLETTER) == []


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
async def test_a_reply_parked_on_one_replica_is_applied_once_another_moves_the_saga_to_it(
    kind: str, tmp_path: Path
) -> None:
    """A holds the order in ``inventory``; payment.charged reaches B first, which parks
    it. Then A takes inventory.reserved and moves the saga to ``payment``, unaware of
    what B parked. Housekeeping learned of the parked message within 0.5 s but only
    tried it "when the instance next has a message or a timer": the saga waited for
    the reply it already had until its step timed out, and was then compensated."""
    async with replicas([order], shared_stores(kind, tmp_path)) as r:
        await r.a.handle([delivery("order.placed", PLACED, "placed-1", "o-1")])
        charged = {"order_id": "o-1", "payment_id": "p"}
        await r.b.handle([delivery("payment.charged", charged, "chg-1", "o-1")])
        reserved = {"order_id": "o-1", "reservation_id": "r"}
        await r.a.handle([delivery("inventory.reserved", reserved, "res-1", "o-1")])
        inst = await r.a.instance("order", "o-1")
        assert inst is not None and inst.state == "payment", inst.state
        r.clock.advance(0.5)
        await r.a.fire_due()  # a housekeeping pass: it learns of B's parked message
        inst = await r.a.instance("order", "o-1")
        assert inst is not None
        assert inst.state == "shipping", inst.state
        assert len(r.sent("shipping.schedule")) == 1
        assert await r.a.store.parked_keys() == set()
        r.clock.advance(3600)
        await r.a.fire_due()
        await r.b.fire_due()
        assert r.sent(DEADLETTER) == []
        assert r.sent("payment.refund") == []


async def test_a_parked_message_another_replica_cannot_apply_yet_waits_for_its_instance() -> None:
    """Learning of a parked message tries it once; if the instance still cannot take
    it, it stays parked (not dead-lettered, not tried on every pass), and the change
    that makes it applicable applies it."""
    async with replicas([order], shared_stores("memory", Path())) as r:
        await r.a.handle([delivery("order.placed", PLACED, "placed-1", "o-1")])
        charged = {"order_id": "o-1", "payment_id": "p"}
        await r.b.handle([delivery("payment.charged", charged, "chg-1", "o-1")])
        r.clock.advance(0.5)
        await r.a.fire_due()
        inst = await r.a.instance("order", "o-1")
        assert inst is not None and inst.state == "inventory", inst.state
        assert len(await r.a.store.parked_keys()) == 1
        reserved = {"order_id": "o-1", "reservation_id": "r"}
        await r.a.handle([delivery("inventory.reserved", reserved, "res-1", "o-1")])
        inst = await r.a.instance("order", "o-1")
        assert inst is not None and inst.state == "shipping", inst.state
        assert r.sent(DEADLETTER) == []


# -- a commit whose outcome is unknown ------------------------------------------------------


class FailingCommit(MemoryStore):
    """The next commit fails once with a retryable error: ``"before"`` it writes anything
    (a lock, a connection lost before COMMIT), or ``"after"`` (the connection dropped
    during COMMIT, so the engine cannot know the transaction went through)."""

    def __init__(self) -> None:
        super().__init__()
        self.fail_next: Literal["before", "after"] | None = None

    def fail_after(self) -> None:
        self.fail_next = "after"

    async def commit(
        self, units: Sequence[UnitOfWork], *, published: Sequence[str] = ()
    ) -> list[Outcome]:
        when, self.fail_next = self.fail_next, None
        if when == "before":
            raise StoreError("database is locked", retryable=True)
        outcomes = await super().commit(units, published=published)
        if when == "after":
            raise StoreError("connection lost during COMMIT", retryable=True)
        return outcomes


async def test_commands_of_a_commit_with_an_unknown_outcome_are_published() -> None:
    """The commit went through but raised, so its commands were not published; deciding
    the delivery again finds it a duplicate (no-op). Once, nothing told the outbox relay
    to look, so inventory.reserve stayed in the outbox until the next restart: the saga
    timed out and re-sent it, and the first one went out after that."""
    store = FailingCommit()
    broker, engine, runner = await run_with_one_order(store, store.fail_after)
    assert runner.exception() is None
    inst = await engine.instance("order", "o-1")
    assert inst is not None and inst.state == "inventory"
    assert store.fail_next is None and broker.depth("sagawire") == 0
    assert len(broker.published("inventory.reserve")) == 1, "the command was never published"
    await store.close()


# -- a transient store error while reading ---------------------------------------------------


class ReadFailsOnce(MemoryStore):
    """``seen`` fails once with a retryable error: a lock held by another process
    (SQLITE_BUSY), a dropped PostgreSQL connection."""

    def __init__(self) -> None:
        super().__init__()
        self.fail_next = False

    def fail_once(self) -> None:
        self.fail_next = True

    async def seen(self, marks: Sequence[tuple[str, str]]) -> set[tuple[str, str]]:
        if self.fail_next:
            self.fail_next = False
            raise StoreError("database is locked (SQLITE_BUSY)", retryable=True)
        return await super().seen(marks)


async def test_a_retryable_store_error_while_reading_a_batch_does_not_stop_the_engine() -> None:
    """A commit that fails with a retryable error nacks the batch and goes on; a read that
    fails the same way escaped the consume loop, so ``run`` raised and the sidecar exited
    non-zero over a blip the housekeeping loop would have shrugged off."""
    store = ReadFailsOnce()
    broker, _, runner = await run_with_one_order(store, store.fail_once)
    assert runner.exception() is None
    assert len(broker.published("inventory.reserve")) == 1
    await store.close()


async def run_with_one_order(
    store: Store, arm: Callable[[], None]
) -> tuple[MemoryBroker, Engine, asyncio.Future[None]]:
    """Run an engine over ``store`` (``arm`` tells it to fail next, once the engine is
    prepared) with one order.placed waiting, until it publishes inventory.reserve or stops (at most a second); then stop it."""
    broker = MemoryBroker(record=True)
    await store.open()
    transport = MemoryTransport(broker)
    await transport.start()
    engine = Engine(
        [order],
        store,
        transport,
        config=EngineConfig(housekeeping_interval=0.01, retry_backoff_max=0.01),
    )
    await engine.prepare()
    client = MemoryTransport(broker)
    await client.start()
    env = Envelope.new("order.placed", PLACED, id="placed-1", source="test", correlationid="o-1")
    arm()
    await client.publish([OutgoingMessage("order.placed", encode(env), env.id, "o-1")])
    stopping = asyncio.Event()
    runner = asyncio.ensure_future(engine.run(stopping))
    try:
        for _ in range(100):
            if runner.done() or broker.published("inventory.reserve"):
                break
            await asyncio.sleep(0.01)
    finally:
        stopping.set()
        await asyncio.wait({runner}, timeout=5)
        await transport.close()
    return broker, engine, runner


async def test_a_batch_decided_on_one_whose_commit_failed_is_decided_again() -> None:
    """Batch N+1 is decided on N's instances before N commits. When N's commit fails
    (nothing written), N's deliveries are held and, once the store answers, decided
    again first, then N+1's, in order: nothing lands on a state the store never held,
    and nothing goes back to the broker."""
    store = FailingCommit()
    async with replicas([trip], (store, MemoryStore())) as r:
        await r.a.handle([delivery("trip.requested", TRIP, "req-1", "t-1")])
        await r.a.pipeline.step([booked("flight")])  # decided, held
        store.fail_next = "before"
        await r.a.pipeline.step([booked("hotel")])  # N fails; N+1 was decided on it
        await r.a.pipeline.drain()
        inst = await r.a.instance("trip", "t-1")
        assert inst is not None
        history = [h.message_type for h in await store.history(("trip", "t-1"))]
        assert history == ["trip.requested", "flight.booked", "hotel.booked"]
        assert (inst.version, inst.data.flight) == (3, "booked")  # type: ignore[attr-defined]
