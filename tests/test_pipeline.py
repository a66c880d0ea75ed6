"""The pipelined engine loop under interleavings: many orders in small batches, replies
duplicated, some replies arriving before their saga's start event, across batch
boundaries. Every saga must end right, each command go out once, nothing be
dead-lettered."""

from __future__ import annotations

import asyncio
import random

import pytest

from adapters.base import DEADLETTER, OutgoingMessage, Topology
from adapters.memory import MemoryBroker, MemoryTransport
from orchestrator import Status
from orchestrator.engine import Engine, EngineConfig
from orchestrator.store import open_store
from sagas.order import order
from schemas.codec import decode, encode
from schemas.envelope import Envelope

REPLY = {
    "inventory.reserve": ("inventory.reserved", {"reservation_id": "r"}, "inventory.rejected"),
    "payment.charge": ("payment.charged", {"payment_id": "p"}, "payment.declined"),
    "shipping.schedule": ("shipping.scheduled", {"tracking_id": "t"}, "shipping.failed"),
    "inventory.release": ("inventory.released", {}, None),
    "payment.refund": ("payment.refunded", {}, None),
}


def message(type: str, data: dict[str, object], id: str, cid: str) -> OutgoingMessage:
    env = Envelope.new(type, data, id=id, source="test", correlationid=cid)
    return OutgoingMessage(type, encode(env), id, cid)


def placed(oid: str) -> OutgoingMessage:
    data = {
        "order_id": oid,
        "customer_id": "c",
        "items": [{"sku": "s", "qty": 1}],
        "amount_cents": 3,
    }
    return message("order.placed", data, f"start-{oid}", oid)


@pytest.mark.parametrize("store_url", ["memory://", "sqlite"])
@pytest.mark.parametrize("max_batch", [3, 64])
async def test_pipeline_keeps_every_saga_right(store_url: str, max_batch: int, tmp_path) -> None:  # type: ignore[no-untyped-def]
    rng = random.Random(max_batch)
    n = 120
    fails = {
        f"o{i}": rng.choice(
            [None, None, "inventory.reserve", "payment.charge", "shipping.schedule"]
        )
        for i in range(n)
    }
    early = {f"o{i}" for i in range(n) if rng.random() < 0.15 and fails[f"o{i}"] is None}
    url = f"sqlite:///{tmp_path}/p.db" if store_url == "sqlite" else store_url
    store = open_store(url)
    await store.open()
    broker = MemoryBroker(record=True)
    engine_side = MemoryTransport(broker)
    await engine_side.start()
    engine = Engine(
        [order],
        store,
        engine_side,
        config=EngineConfig(max_batch=max_batch, housekeeping_interval=0.05),
    )
    await engine.prepare()
    services = MemoryTransport(broker)
    await services.start()
    topo = Topology(consumes=tuple(REPLY), group="services")
    await services.declare(topo)
    outcome = Topology(consumes=("order.completed", "order.cancelled", DEADLETTER), group="obs")
    await services.declare(outcome)

    async def participants() -> None:
        async for batch in services.consume(topo, max_batch=17):
            out = []
            for d in batch:
                cmd = decode(d.body)
                cid = cmd.correlationid
                assert cid is not None
                ok, extra, bad = REPLY[cmd.type]
                if cmd.type == "inventory.reserve" and cid in early:
                    continue  # already answered before the saga started
                if fails[cid] == cmd.type:
                    assert bad is not None
                    out.append(message(bad, {"order_id": cid, "reason": "no"}, f"re-{cmd.id}", cid))
                else:
                    out.append(message(ok, {"order_id": cid, **extra}, f"re-{cmd.id}", cid))
                if rng.random() < 0.2:
                    out.append(out[-1])  # a duplicate delivery
            rng.shuffle(out)  # replies for different orders in any order
            await services.publish(out)
            await services.ack(batch)

    stopping = asyncio.Event()
    runner = asyncio.ensure_future(engine.run(stopping))
    helper = asyncio.ensure_future(participants())
    try:
        first = []
        for oid in sorted(early):  # the reply overtakes the start event
            first.append(
                message(
                    "inventory.reserved",
                    {"order_id": oid, "reservation_id": "r"},
                    f"early-{oid}",
                    oid,
                )
            )
        await services.publish(first)
        await asyncio.sleep(0.05)
        await services.publish([placed(f"o{i}") for i in range(n)])
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 30
        while (
            len(broker.published("order.completed")) + len(broker.published("order.cancelled")) < n
        ):
            assert loop.time() < deadline, "sagas did not finish"
            await asyncio.sleep(0.05)
    finally:
        stopping.set()
        await asyncio.wait_for(runner, 10)
        helper.cancel()
        await services.close()
    for i in range(n):
        oid = f"o{i}"
        inst = await engine.instance("order", oid)
        assert inst is not None
        want = Status.COMPLETED if fails[oid] is None else Status.COMPENSATED
        assert inst.status is want, (oid, fails[oid], inst.state)
    ids: dict[tuple[str, str], set[str]] = {}
    for m in broker.published():
        env = decode(m.body)
        if env.source.startswith("sagawire/"):
            ids.setdefault((env.correlationid or "", env.type), set()).add(env.id)
    assert all(len(v) == 1 for v in ids.values()), "a command went out under two ids"
    assert broker.published(DEADLETTER) == []
    await store.close()
