"""A second yardstick for the bench: the same message flow with the engine taken out.

The relay (:mod:`orchestrator.tooling.bench_relay`) moves one message per message. A saga in
the bench moves eight (the order, three commands, three replies, the completion
event) through five consumers (the engine, the three simulated services, the
feeder's publishes), so part of the gap between the engine and the relay is the
flow's own cost, not the engine's. This runs that flow with a stub in the engine's
place that answers each event with the next message at once (``orjson`` in and out,
no state, no store), against the same simulated services: its transitions per
second are the most any engine could reach in this bench on this broker, and the
engine's rate over it says how much of that the engine keeps.

The ring runs in a namespace of its own on the broker (:func:`ring_url`): its
``order.placed`` and replies must not reach the engine's durable consumer, whose
next bench would otherwise start with them.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import Protocol
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import orjson

from adapters import open_transport
from adapters.base import (
    HEADER_CONTENT_TYPE,
    HEADER_MESSAGE_ID,
    OutgoingMessage,
    Topology,
    close_stream,
)
from orchestrator.tooling.bench_lots import Lots, Timed
from orchestrator.tooling.participants import order_placed
from schemas.envelope import CONTENT_TYPE
from schemas.errors import ConfigError

__all__ = ["NEXT", "ring_rate", "ring_url"]

NEXT = {
    "order.placed": "inventory.reserve",
    "inventory.reserved": "payment.charge",
    "payment.charged": "shipping.schedule",
    "shipping.scheduled": "order.completed",
}
"""The order saga's happy path, which is all the bench's services ever answer."""


def ring_url(broker_url: str) -> str:
    """``broker_url`` moved to a namespace of the ring's own: a topic prefix on Kafka, a
    subject prefix and stream on NATS, an exchange and queue prefix on RabbitMQ, another
    in-memory broker. Credentials and other options are kept."""
    parts = urlsplit(broker_url)
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    scheme = parts.scheme
    if scheme.startswith("kafka"):
        query["topic_prefix"] = query.get("topic_prefix", "") + "swring."
    elif scheme in ("nats", "tls"):
        prefix = query.get("subject_prefix", "")
        query["subject_prefix"] = f"{prefix}.swring" if prefix else "swring"
        query["stream"] = query.get("stream", "SAGAWIRE") + "_RING"
    elif scheme.startswith("amqp"):
        query["exchange"] = query.get("exchange", "sagawire") + ".ring"
        query["queue_prefix"] = query.get("queue_prefix", "sagawire") + ".ring"
    elif scheme == "memory":
        return f"memory://{parts.netloc}{parts.path}-ring"
    else:
        raise ConfigError(f"--ring: no private namespace known for {scheme}:// brokers")
    return urlunsplit(parts._replace(query=urlencode(query)))


class Services(Protocol):
    async def close(self) -> None: ...


async def ring_rate(
    broker_url: str,
    sagas: int,
    window: int,
    max_batch: int,
    start_services: Callable[[], Awaitable[Services]],
    warmup: int = 0,
) -> Timed:
    """Run ``warmup`` sagas untimed, then ``sagas`` more through the stub; the timed
    transitions per second and the CPU they took. At most ``window`` sagas are in
    flight, as in the engine run. ``broker_url`` is the ring's own namespace
    (:func:`ring_url`), and the services from ``start_services`` must use it too.

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
                    try:
                        event = orjson.loads(d.body)
                        cid = str(event.get("correlationid") or "")
                    except (orjson.JSONDecodeError, AttributeError):
                        continue  # not one of ours: acknowledged with the batch
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
        return lots.timed(per_input=len(NEXT))
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
