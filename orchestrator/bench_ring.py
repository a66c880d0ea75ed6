"""A second yardstick for the bench: the same message flow with the engine taken out.

The relay (:mod:`orchestrator.bench_relay`) moves one message per message. A saga in
the bench moves eight (the order, three commands, three replies, the completion
event) through five consumers (the engine, the three simulated services, the
feeder's publishes), so part of the gap between the engine and the relay is the
flow's own cost, not the engine's. This runs that flow with a stub in the engine's
place that answers each event with the next message at once (``orjson`` in and out,
no state, no store), against the same simulated services: its transitions per
second are the most any engine could reach in this bench on this broker, and the
engine's rate over it says how much of that the engine keeps.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import Protocol

import orjson

from adapters import open_transport
from adapters.base import (
    HEADER_CONTENT_TYPE,
    HEADER_MESSAGE_ID,
    OutgoingMessage,
    Topology,
    close_stream,
)
from orchestrator.bench_lots import Lots
from orchestrator.participants import order_placed
from schemas.envelope import CONTENT_TYPE

__all__ = ["NEXT", "ring_rate"]

NEXT = {
    "order.placed": "inventory.reserve",
    "inventory.reserved": "payment.charge",
    "payment.charged": "shipping.schedule",
    "shipping.scheduled": "order.completed",
}
"""The order saga's happy path, which is all the bench's services ever answer."""


class Services(Protocol):
    async def close(self) -> None: ...


async def ring_rate(
    broker_url: str,
    sagas: int,
    window: int,
    max_batch: int,
    start_services: Callable[[], Awaitable[Services]],
    warmup: int = 0,
) -> float:
    """Run ``warmup`` sagas untimed, then ``sagas`` more through the stub; the timed
    transitions per second. At most ``window`` sagas are in flight, as in the engine run.

    Messages of earlier runs (Kafka keeps them, and a new consumer group starts from
    the earliest offset) are acknowledged and otherwise ignored: only this run's
    correlation ids count and get an answer."""
    services = await start_services()
    transport = open_transport(broker_url)
    tag = f"ring{uuid.uuid4().hex[:8]}-"

    async def publish(first: int, count: int) -> None:
        await transport.publish(
            [
                order_placed(f"{tag}{n}", source="sagawire/bench")
                for n in range(first, first + count)
            ]
        )

    lots = Lots(warmup, sagas, window, max_batch, publish)
    topology = Topology(
        consumes=tuple(NEXT), produces=tuple(NEXT.values()), group="sagawire-bench-ring"
    )

    async def stub() -> None:
        stream = transport.consume(topology, max_batch=max_batch)
        try:
            async for batch in stream:
                out = []
                finished = 0
                for d in batch:
                    event = orjson.loads(d.body)
                    cid = event.get("correlationid") or ""
                    if not cid.startswith(tag):
                        continue
                    out.append(_answer(event, cid))
                    finished += event["type"] == "shipping.scheduled"
                if out:
                    await transport.publish(out)
                await transport.ack(batch)
                lots.done(finished)
                if lots.complete:
                    return
        finally:
            await close_stream(stream)

    try:
        await transport.start()
        await transport.declare(topology)
        await lots.run(stub)
        return lots.rate(per_input=len(NEXT))
    finally:
        await transport.close()
        await services.close()


def _answer(event: dict[str, object], cid: str) -> OutgoingMessage:
    kind = NEXT[str(event["type"])]
    cause = str(event["id"])
    mid = f"{cause}/{kind}"
    body = orjson.dumps(
        {
            "specversion": "1.0",
            "id": mid,
            "source": "sagawire/bench-ring",
            "type": kind,
            "datacontenttype": "application/json",
            "correlationid": cid,
            "causationid": cause,
            "data": {"order_id": cid},
        }
    )
    headers = {HEADER_CONTENT_TYPE: CONTENT_TYPE, HEADER_MESSAGE_ID: mid}
    return OutgoingMessage(kind, body, mid, cid, headers)
