"""Housekeeping tries the parked messages another replica parked, against the stored
instance, so that a reply parked on one replica while another moved the instance on is
applied instead of waiting for a timeout.

Each test names, in its docstring, the failure mode it pins (the first three were found
by a review of the first version of this, which revived only keys newly seen). Engines share one store
(memory, one SQLite file over two connections, or one PostgreSQL database) and a
virtual clock; deliveries are fed by hand so each interleaving is exact."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, cast

import pytest

from adapters.base import DEADLETTER
from adapters.memory import MemoryBroker, MemoryTransport
from orchestrator import Status
from orchestrator.engine import Engine, EngineConfig
from orchestrator.engine.clock import VirtualClock
from orchestrator.language.definition import SagaDefinition
from orchestrator.store import open_store
from orchestrator.store.base import InstanceKey, ParkedRecord, Store, UnitOfWork
from orchestrator.store.memory import MemoryStore
from sagas.order import order
from sagas.trip import trip
from schemas.errors import StoreError
from tests.test_engine_races import (
    PLACED,
    TRIP,
    BeforeCommit,
    booked,
    delivery,
    replicas,
    shared_stores,
)

CHARGED = {"order_id": "o-1", "payment_id": "p"}
RESERVED = {"order_id": "o-1", "reservation_id": "r"}
KINDS = ["memory", "sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


@pytest.fixture(params=KINDS)
def pair(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[Store, Store]:
    """Two handles on one store: ``shared_stores``, plus two pools on one PostgreSQL
    database (a fresh one per test, dropped afterwards, by the ``database_url`` fixture)."""
    if request.param == "postgres":
        url = request.getfixturevalue("database_url")
        return open_store(url), open_store(url)
    return shared_stores(request.param, tmp_path)


class ParkedReadFailsOnce:
    """``parked`` fails once with a retryable error (SQLITE_BUSY, a dropped connection)."""

    def __init__(self, inner: Store) -> None:
        self.inner = inner
        self.fail_next = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def parked(self, keys: Sequence[InstanceKey]) -> list[ParkedRecord]:
        if self.fail_next:
            self.fail_next = False
            raise StoreError("database is locked (SQLITE_BUSY)", retryable=True)
        return await self.inner.parked(keys)


class Trio:
    def __init__(self, engines: list[Engine], broker: MemoryBroker, clock: VirtualClock) -> None:
        self.a, self.b, self.c = engines
        self.broker, self.clock = broker, clock

    def sent(self, type_: str) -> list[Any]:
        from schemas.codec import decode

        return [decode(m.body) for m in self.broker.published(type_)]


@asynccontextmanager
async def trio(sagas: Sequence[SagaDefinition], stores: Sequence[Any]) -> AsyncIterator[Trio]:
    """Three engines over one store: ``replicas`` with a third replica."""
    broker = MemoryBroker(record=True)
    clock = VirtualClock()
    engines = []
    for store in stores:
        await store.open()
        transport = MemoryTransport(broker)
        await transport.start()
        engine = Engine(sagas, cast(Store, store), transport, clock=clock, config=EngineConfig())
        await engine.prepare()
        engines.append(engine)
    try:
        yield Trio(engines, broker, clock)
    finally:
        for store in stores:
            await store.close()


async def passes(*engines: Engine, clock: VirtualClock, seconds: float = 0.5) -> None:
    clock.advance(seconds)
    for e in engines:
        await e.fire_due()


# -- found by review --------------------------------------------------------------------------


async def test_a_reply_parked_for_an_instance_already_known_to_have_parked_messages_is_revived(
    pair: tuple[Store, Store],
) -> None:
    """The race the change fixes, on an instance this replica already knew had parked
    messages. hotel.booked and car.booked reach A before trip.requested: A parks them,
    so the trip is in A's ``_parked_keys``. A decides trip.requested (pipelined: read,
    decided, not committed yet), settling hotel and car; meanwhile flight.booked reaches
    B, which finds no instance and parks it. A commits. The revive only runs for keys in
    ``fresh - before``, and the trip's key was in ``before``: flight.booked is never
    tried, nothing else will come for the trip, so the reply every leg waited for is
    dead-lettered after 60 s and the trip is cancelled at 120 s, every leg booked."""
    async with replicas([trip], pair) as r:
        await r.a.handle([booked("hotel")])
        await r.a.handle([booked("car")])
        await r.a.pipeline.step([delivery("trip.requested", TRIP, "req-1", "t-1")])  # decided, held
        await r.b.handle([booked("flight")])  # no instance in the store yet: parked
        await r.a.pipeline.drain()
        inst = await r.a.instance("trip", "t-1")
        assert inst is not None and inst.state == "booking", inst
        assert len(await r.a.store.parked([("trip", "t-1")])) == 1  # flight.booked
        await passes(r.a, r.b, clock=r.clock)
        await passes(r.a, r.b, clock=r.clock)
        inst = await r.a.instance("trip", "t-1")
        assert inst is not None
        after_pass = inst.state
        await passes(r.a, r.b, clock=r.clock, seconds=61)
        await passes(r.a, r.b, clock=r.clock, seconds=61)
        final = await r.a.instance("trip", "t-1")
        assert final is not None
        dead = [m.destination for m in r.broker.published(DEADLETTER)]
        assert after_pass == "confirmed", (
            f"flight.booked left parked: trip in {after_pass!r}; 122 s later it is"
            f" {final.state!r}, dead letters: {len(dead)}, cancels sent:"
            f" {[e.type for t in ('flight', 'hotel', 'car') for e in r.sent(t + '.cancel')]}"
        )


async def test_a_reply_parked_before_a_restart_is_not_revived_by_the_restarted_replica() -> None:
    """The change's own scenario (B parks payment.charged while A holds the order a step
    behind; A moves it to ``payment``), but A restarts (deploy, crash) before its next
    housekeeping pass. ``prepare`` loads every parked key as already known, so no key is
    ever "learned" and the reply is not revived: the order waits in ``payment`` for the
    reply it has until payment.timeout fires."""
    async with replicas([order], shared_stores("memory", Path())) as r:
        await r.a.handle([delivery("order.placed", PLACED, "placed-1", "o-1")])
        await r.b.handle([delivery("payment.charged", CHARGED, "chg-1", "o-1")])
        await r.a.handle([delivery("inventory.reserved", RESERVED, "res-1", "o-1")])
        transport = MemoryTransport(r.broker)
        await transport.start()
        restarted = Engine([order], r.a.store, transport, clock=r.clock, config=EngineConfig())
        await restarted.prepare()
        await passes(restarted, r.b, clock=r.clock)
        await passes(restarted, r.b, clock=r.clock)
        inst = await restarted.instance("order", "o-1")
        assert inst is not None
        assert inst.state == "shipping", f"payment.charged still parked; order in {inst.state!r}"


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
async def test_a_revive_that_met_a_transient_store_error_is_tried_again(
    kind: str, tmp_path: Path
) -> None:
    """The change's own scenario, but the revive's read of the parked messages fails
    with a retryable error (the housekeeping loop logs it and runs the next pass).
    ``_parked_keys`` was updated before ``_revive`` ran, so on the next pass the key is
    no longer "learned": the revive is lost for good and the order waits in
    ``payment`` for the reply it has, until its step times out."""
    first, second = shared_stores(kind, tmp_path)
    flaky = ParkedReadFailsOnce(first)
    async with replicas([order], (cast(Store, flaky), second)) as r:
        await r.a.handle([delivery("order.placed", PLACED, "placed-1", "o-1")])
        await r.b.handle([delivery("payment.charged", CHARGED, "chg-1", "o-1")])
        await r.a.handle([delivery("inventory.reserved", RESERVED, "res-1", "o-1")])
        flaky.fail_next = True
        r.clock.advance(0.5)
        await r.a.fire_due()  # logged; the key stays to be tried on the next pass
        assert flaky.fail_next is False, "the revive did not read the parked messages"
        inst = await r.a.instance("order", "o-1")
        assert inst is not None and inst.state == "payment", inst
        await passes(r.a, r.b, clock=r.clock)
        await passes(r.a, r.b, clock=r.clock)
        inst = await r.a.instance("order", "o-1")
        assert inst is not None
        assert inst.state == "shipping", f"payment.charged still parked; order in {inst.state!r}"


# -- behaviour pinned (these pass) --------------------------------------------------------


async def test_the_change_scenario_on_every_store(
    pair: tuple[Store, Store],
) -> None:
    """The commit's own scenario (B parks payment.charged, A moves the order to
    ``payment`` unaware), on PostgreSQL too: applied in A's next pass, once, unparked;
    no refund, no dead letter later."""
    async with replicas([order], pair) as r:
        await r.a.handle([delivery("order.placed", PLACED, "placed-1", "o-1")])
        await r.b.handle([delivery("payment.charged", CHARGED, "chg-1", "o-1")])
        await r.a.handle([delivery("inventory.reserved", RESERVED, "res-1", "o-1")])
        await passes(r.a, r.b, clock=r.clock)
        inst = await r.a.instance("order", "o-1")
        assert inst is not None and inst.state == "shipping", inst
        assert len(r.sent("shipping.schedule")) == 1
        assert await r.a.store.parked_keys() == set()
        await passes(r.a, r.b, clock=r.clock, seconds=3600)
        assert r.sent(DEADLETTER) == []
        assert r.sent("payment.refund") == []


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
async def test_a_revived_message_rejected_by_a_finished_instance_is_dead_lettered_once(
    kind: str, tmp_path: Path
) -> None:
    """B parks payment.charged; A (unaware) aborts the order. A's revive rejects it on
    the aborted instance: it must be dead-lettered exactly once and unparked, so the
    expiry pass does not dead-letter it a second time."""
    async with replicas([order], shared_stores(kind, tmp_path)) as r:
        await r.a.handle([delivery("order.placed", PLACED, "placed-1", "o-1")])
        await r.b.handle([delivery("payment.charged", CHARGED, "chg-1", "o-1")])
        inst = await r.a.abort("order", "o-1", "stop")
        assert inst is not None and inst.status is Status.ABORTED
        await passes(r.a, r.b, clock=r.clock)
        assert len(r.broker.published(DEADLETTER)) == 1
        assert await r.a.store.parked_keys() == set()
        await passes(r.a, r.b, clock=r.clock, seconds=61)
        await passes(r.a, r.b, clock=r.clock, seconds=61)
        assert len(r.broker.published(DEADLETTER)) == 1
        assert r.sent("shipping.schedule") == []


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
async def test_a_revived_duplicate_is_unparked_and_not_applied_again(
    kind: str, tmp_path: Path
) -> None:
    """payment.charged is published twice with one id: the first copy is parked by B,
    the second applied by A (unaware of the parked one). A's revive must only unpark
    the first (inbox mark seen): not applied twice, shipping.schedule sent once, and
    not dead-lettered at expiry as if never applied."""
    async with replicas([order], shared_stores(kind, tmp_path)) as r:
        await r.a.handle([delivery("order.placed", PLACED, "placed-1", "o-1")])
        await r.b.handle([delivery("payment.charged", CHARGED, "chg-1", "o-1")])
        await r.a.handle([delivery("inventory.reserved", RESERVED, "res-1", "o-1")])
        await r.a.handle([delivery("payment.charged", CHARGED, "chg-1", "o-1")])
        assert len(r.sent("shipping.schedule")) == 1
        await passes(r.a, r.b, clock=r.clock)
        assert await r.a.store.parked_keys() == set()
        assert len(r.sent("shipping.schedule")) == 1
        history = await r.a.store.history(("order", "o-1"))
        assert [h.message_type for h in history].count("payment.charged") == 1
        await passes(r.a, r.b, clock=r.clock, seconds=61)
        assert r.sent(DEADLETTER) == []


async def test_a_revive_on_a_stale_cache_is_decided_again_on_the_stored_state(
    pair: tuple[Store, Store],
) -> None:
    """B's cache holds the order in ``inventory`` (v1); A moved it to ``payment`` and then
    parked a second inventory.reserved (another id: the participant answered twice).
    B learns of it and revives it on its stale cache, where it applies: that must
    conflict and be decided again on the stored state (where it stays parked), so
    payment.charge is published once, not twice."""
    async with replicas([order], pair) as r:
        await r.b.handle([delivery("order.placed", PLACED, "placed-1", "o-1")])
        await r.a.handle([delivery("inventory.reserved", RESERVED, "res-1", "o-1")])
        await r.a.handle([delivery("inventory.reserved", RESERVED, "res-2", "o-1")])
        assert len(await r.a.store.parked([("order", "o-1")])) == 1
        await passes(r.b, r.a, clock=r.clock)
        inst = await r.b.instance("order", "o-1")
        assert inst is not None and (inst.state, inst.version) == ("payment", 2), inst
        assert len(r.sent("payment.charge")) == 1
        assert len(await r.a.store.parked([("order", "o-1")])) == 1
        assert r.sent(DEADLETTER) == []


async def test_a_revive_that_conflicts_is_redecided_and_dead_letters_once() -> None:
    """Three replicas. B parks payment.charged; A moves the order to ``payment``; A's
    revive applies the reply, but C (unaware) aborts the order before A's commit. The
    revive conflicts, is decided again on the aborted order and dead-letters the reply:
    shipping.schedule never published, one dead letter, nothing left parked."""
    inner = MemoryStore()
    a_store = BeforeCommit(inner)
    async with trio([order], [a_store, inner, inner]) as t:
        await t.a.handle([delivery("order.placed", PLACED, "placed-1", "o-1")])
        await t.b.handle([delivery("payment.charged", CHARGED, "chg-1", "o-1")])
        await t.a.handle([delivery("inventory.reserved", RESERVED, "res-1", "o-1")])

        async def c_aborts() -> None:
            await t.c.abort("order", "o-1", "stop")

        a_store.hook = c_aborts
        await passes(t.a, clock=t.clock)
        assert a_store.hook is None, "the revive never committed"
        inst = await t.a.instance("order", "o-1")
        assert inst is not None and inst.status is Status.ABORTED, inst
        assert t.sent("shipping.schedule") == []
        assert len(t.broker.published(DEADLETTER)) == 1
        assert await inner.parked_keys() == set()
        await passes(t.a, t.b, t.c, clock=t.clock, seconds=61)
        assert len(t.broker.published(DEADLETTER)) == 1


async def test_more_learned_keys_than_a_batch_are_all_revived() -> None:
    """Seven orders each get a reply parked by B while A moves them on; with
    ``max_batch`` 3 the learned keys are revived in chunks: all seven ship, once each."""
    async with replicas([order], shared_stores("memory", Path())) as r:
        r.a.config = EngineConfig(max_batch=3)
        ids = [f"o-{n}" for n in range(7)]
        for cid in ids:
            placed = dict(PLACED, order_id=cid)
            await r.a.handle([delivery("order.placed", placed, f"placed-{cid}", cid)])
            charged = {"order_id": cid, "payment_id": "p"}
            await r.b.handle([delivery("payment.charged", charged, f"chg-{cid}", cid)])
            reserved = {"order_id": cid, "reservation_id": "r"}
            await r.a.handle([delivery("inventory.reserved", reserved, f"res-{cid}", cid)])
        await passes(r.a, clock=r.clock)
        for cid in ids:
            inst = await r.a.instance("order", cid)
            assert inst is not None and inst.state == "shipping", (cid, inst and inst.state)
        assert len(r.sent("shipping.schedule")) == 7
        assert await r.a.store.parked_keys() == set()


async def test_a_revive_commits_the_pending_pipelined_batch_first() -> None:
    """A decided inventory.reserved in the pipeline (held, not committed) when the pass
    revives B's parked payment.charged: the pending batch must be committed first, or
    the revive decides on ``inventory`` (parks) or commits over it (conflict)."""
    async with replicas([order], shared_stores("memory", Path())) as r:
        await r.a.handle([delivery("order.placed", PLACED, "placed-1", "o-1")])
        await r.b.handle([delivery("payment.charged", CHARGED, "chg-1", "o-1")])
        await r.a.pipeline.step([delivery("inventory.reserved", RESERVED, "res-1", "o-1")])
        assert r.a.pipeline.pending is not None
        await passes(r.a, clock=r.clock)
        inst = await r.a.instance("order", "o-1")
        assert inst is not None and inst.state == "shipping", inst
        assert len(r.sent("payment.charge")) == 1
        assert len(r.sent("shipping.schedule")) == 1


async def test_unreadable_or_foreign_parked_messages_do_not_stop_the_revive() -> None:
    """A parked body that no longer decodes, and a parked message of a saga A does not
    load, share A's revive chunk with B's real parked reply: they are skipped (left for
    expiry, dead-lettered once then), and the reply is still applied."""
    store = MemoryStore()
    async with replicas([order], (store, store)) as r:
        await r.a.handle([delivery("order.placed", dict(PLACED, order_id="o-2"), "p-2", "o-2")])
        now = r.clock.now()
        junk = [
            ParkedRecord("order", "o-2", "junk-1", "payment.charged", b"{not", now, now + 60),
            ParkedRecord("trip", "t-9", "trip-1", "flight.booked", b"{}", now, now + 60),
        ]
        await store.commit([UnitOfWork(parked=tuple(junk))])
        await r.a.handle([delivery("order.placed", PLACED, "placed-1", "o-1")])
        await r.b.handle([delivery("payment.charged", CHARGED, "chg-1", "o-1")])
        await r.a.handle([delivery("inventory.reserved", RESERVED, "res-1", "o-1")])
        await passes(r.a, clock=r.clock)
        inst = await r.a.instance("order", "o-1")
        assert inst is not None and inst.state == "shipping", inst
        assert await store.parked_keys() == {("order", "o-2"), ("trip", "t-9")}
        await passes(r.a, r.b, clock=r.clock, seconds=61)
        assert len(r.broker.published(DEADLETTER)) == 2
        assert await store.parked_keys() == set()
