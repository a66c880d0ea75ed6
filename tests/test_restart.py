"""Restarts on the durable SQLite store: what was committed survives, timers that fell due
while the process was down fire at start-up, and outbox rows a crash left unpublished are
published at start-up with their original ids."""

from __future__ import annotations

from pathlib import Path

from adapters.base import OutgoingMessage, Topology
from adapters.memory import MemoryBroker, MemoryTransport
from orchestrator import Status
from orchestrator.engine import Engine
from orchestrator.engine.clock import VirtualClock
from orchestrator.store import open_store
from orchestrator.store.base import Store
from sagas.order import order
from schemas.codec import decode, encode
from schemas.envelope import Envelope

PLACED = {
    "order_id": "o-1",
    "customer_id": "c",
    "items": [{"sku": "A", "qty": 1}],
    "amount_cents": 10,
}


async def boot(path: Path, broker: MemoryBroker, clock: VirtualClock) -> tuple[Engine, Store]:
    store = open_store(f"sqlite:///{path}")
    await store.open()
    transport = MemoryTransport(broker)
    await transport.start()
    engine = Engine([order], store, transport, clock=clock)
    await engine.prepare()
    return engine, store


async def feed(engine: Engine, broker: MemoryBroker, type: str, data: dict[str, object]) -> None:
    env = Envelope.new(type, data, id=f"{type}-1", source="test", correlationid="o-1")
    client = MemoryTransport(broker)
    await client.start()
    await client.publish([OutgoingMessage(type, encode(env), env.id, "o-1")])
    t = engine.transport
    assert isinstance(t, MemoryTransport)
    await engine.handle(t.poll(engine.topology))


async def test_state_and_timers_survive_a_restart(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    broker = MemoryBroker(record=True)
    clock = VirtualClock()
    engine, store = await boot(db, broker, clock)
    await feed(engine, broker, "order.placed", PLACED)
    await feed(engine, broker, "inventory.reserved", {"order_id": "o-1", "reservation_id": "r"})
    await store.close()  # the process goes away...

    clock.advance(45)  # ...and the payment step's 30 s timeout falls due while it is down
    engine, store = await boot(db, broker, clock)
    inst = await engine.instance("order", "o-1")
    assert inst is not None and inst.state == "payment" and inst.version == 2
    assert await engine.fire_due() == 1
    clock.advance(2)
    await engine.fire_due()  # the backoff elapsed: the command goes again
    charges = [decode(m.body) for m in broker.published("payment.charge")]
    # the first charge was published before the stop but not yet marked published, so the
    # restart published it again: same id and attempt, so consumers see one command per
    # attempt; the re-send is the same command (same id), attempt 2
    sent = {(c.id, c.attempt) for c in charges}
    assert len({i for i, _ in sent}) == 1 and sorted(a for _, a in sent) == [1, 2]
    history = await store.history(("order", "o-1"))
    assert [h.message_type for h in history][-2:] == [
        "timer:payment.timeout",
        "timer:payment.retry",
    ]
    await store.close()


async def test_unpublished_outbox_rows_go_out_at_start_up_with_their_ids(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    clock = VirtualClock()
    dead_broker = MemoryBroker(record=True)
    engine, store = await boot(db, dead_broker, clock)

    async def broken_publish(messages: object) -> None:
        from schemas.errors import TransportError

        raise TransportError("broker went away")

    engine.transport.publish = broken_publish  # type: ignore[method-assign]
    await feed(engine, dead_broker, "order.placed", PLACED)
    assert dead_broker.published("inventory.reserve") == []
    (row,) = await store.pending_outbox()
    await store.close()  # crash with the command committed but not published

    broker = MemoryBroker(record=True)
    broker.bind("inventory", ["inventory.reserve"])
    engine, store = await boot(db, broker, clock)
    (sent,) = broker.published("inventory.reserve")
    assert sent.message_id == row.id == decode(sent.body).id
    assert await store.pending_outbox() == []
    inst = await engine.instance("order", "o-1")
    assert inst is not None and inst.status is Status.RUNNING
    await store.close()


async def test_parked_events_survive_a_restart(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    broker = MemoryBroker(record=True)
    clock = VirtualClock()
    engine, store = await boot(db, broker, clock)
    await feed(engine, broker, "inventory.reserved", {"order_id": "o-1", "reservation_id": "r"})
    await store.close()
    engine, store = await boot(db, broker, clock)
    await feed(engine, broker, "order.placed", PLACED)
    inst = await engine.instance("order", "o-1")
    assert inst is not None and inst.state == "payment"
    assert broker.published("sagawire.deadletter") == []
    await store.close()


def test_topology_covers_what_the_saga_needs() -> None:
    engine = Engine([order], open_store("memory://"), MemoryTransport())
    topo: Topology = engine.topology
    assert "order.placed" in topo.consumes and "inventory.reserve" in topo.produces
