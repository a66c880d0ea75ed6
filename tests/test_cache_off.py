"""``--cache-size 0``: replicas that share instances read each from the store.

With competing consumers (NATS JetStream, RabbitMQ) consecutive events of an instance
land on different replicas; a replica's cached copy is then stale, and its commit a
version conflict decided again. Without the cache each batch reads the stored version,
so two replicas taking turns on one instance do not conflict at all (measured with
``scripts/bench_replicas.py`` on NATS: 15.6% of deliveries conflicted with the cache,
none without). The saga's behaviour is the same either way."""

from __future__ import annotations

import pytest

from adapters.memory import MemoryBroker, MemoryTransport
from orchestrator import Status
from orchestrator.engine import Engine, EngineConfig
from orchestrator.engine.clock import VirtualClock
from orchestrator.store.memory import MemoryStore
from orchestrator.testing import SagaHarness
from sagas.order import order
from tests.sagas.test_order import placed
from tests.test_engine_races import PLACED, delivery


async def test_the_order_saga_runs_every_path_without_a_cache() -> None:
    async with SagaHarness(order, config=EngineConfig(cache_size=0)) as h:
        await h.send("order.placed", placed("o-1"))
        await h.send("inventory.reserved", {"order_id": "o-1", "reservation_id": "r"})
        await h.send("payment.charged", {"order_id": "o-1", "payment_id": "p"})
        await h.send("shipping.scheduled", {"order_id": "o-1", "tracking_id": "t"})
        assert (await h.instance("o-1")).status is Status.COMPLETED
        await h.send("order.placed", placed("o-2"))
        await h.send("inventory.reserved", {"order_id": "o-2", "reservation_id": "r"})
        await h.send("payment.declined", {"order_id": "o-2", "reason": "no"})
        await h.send("inventory.released", {"order_id": "o-2"})
        assert (await h.instance("o-2")).status is Status.COMPENSATED
        await h.send("order.placed", placed("o-3"))
        await h.advance(400)  # nobody answers: retried, then compensated
        assert (await h.instance("o-3")).status is Status.COMPENSATED


@pytest.mark.parametrize(("cache_size", "conflicts"), [(20_000, 1), (0, 0)])
async def test_replicas_taking_turns_on_an_instance_conflict_only_with_a_cache(
    cache_size: int, conflicts: int
) -> None:
    store, broker, clock = MemoryStore(), MemoryBroker(), VirtualClock()
    await store.open()
    a, b = [
        Engine([order], store, MemoryTransport(broker), clock=clock,
               config=EngineConfig(cache_size=cache_size))
        for _ in range(2)
    ]  # fmt: skip
    for engine in (a, b):
        await engine.transport.start()
        await engine.prepare()
    await a.handle([delivery("order.placed", PLACED, "e-1", "o-1")])  # a caches version 1
    reserved = {"order_id": "o-1", "reservation_id": "r"}
    await b.handle([delivery("inventory.reserved", reserved, "e-2", "o-1")])  # version 2
    charged = {"order_id": "o-1", "payment_id": "p"}
    await a.handle([delivery("payment.charged", charged, "e-3", "o-1")])  # a's copy: stale?
    assert a.stats.conflicts == conflicts
    inst = await a.instance("order", "o-1")
    assert inst is not None and (inst.state, inst.version) == ("shipping", 3)
