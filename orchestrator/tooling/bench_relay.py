"""The bench's yardstick: the same messages relayed through the same transport, no engine.

consume -> publish each to another destination -> ack, in batches of the engine's
size, with a feeder keeping a window of messages ahead, as the engine run keeps
its sagas in flight. ``sagawire bench`` runs it before and after the engine and
divides the engine's transitions per second by its mean.

Like the engine run, it warms up before the clock starts: a first lot of messages
is relayed untimed, so one-off costs (a Kafka consumer group join takes about a
second, which was a third of a short relay's time) are not counted as throughput.
"""

from __future__ import annotations

import uuid

from adapters import open_transport
from adapters.base import HEADER_CONTENT_TYPE, OutgoingMessage, Topology, close_stream
from orchestrator.tooling.bench_lots import Lots, Timed
from orchestrator.tooling.participants import order_placed
from schemas.envelope import CONTENT_TYPE

__all__ = ["relay_rate"]

RELAY_IN = "sagawire.bench.relay.in"
RELAY_OUT = "sagawire.bench.relay.out"


async def relay_rate(
    broker_url: str, messages: int, window: int, max_batch: int, warmup: int = 0
) -> Timed:
    """Relay ``warmup`` messages untimed, then ``messages`` more in -> out through one
    transport; the timed messages per second and the CPU they took.

    Message ids carry a tag of this run: a broker that de-duplicates by id (NATS)
    would otherwise drop a second relay's messages as repeats of the first's.

    A feeder keeps at most ``window`` messages queued ahead of the relay, as the
    engine run keeps ``concurrency`` sagas in flight. It sends nothing of the timed
    lot before the warm-up lot has been relayed in full
    (:class:`~orchestrator.tooling.bench_lots.Lots`)."""
    transport = open_transport(broker_url)
    await transport.start()
    tag = uuid.uuid4().hex[:8]
    run = tag.encode()
    topology = Topology(consumes=(RELAY_IN,), produces=(RELAY_OUT,), group="sagawire-bench-relay")
    body = run + b" " + order_placed("relay", source="sagawire/bench").body
    headers = {HEADER_CONTENT_TYPE: CONTENT_TYPE}

    async def publish(first: int, count: int) -> None:
        await transport.publish(
            [
                OutgoingMessage(RELAY_IN, body, f"{tag}-{n}", f"{n}", headers)
                for n in range(first, first + count)
            ]
        )

    lots = Lots(warmup, messages, window, max_batch, publish)

    async def relay() -> None:
        stream = transport.consume(topology, max_batch=max_batch)
        try:
            async for batch in stream:
                await transport.publish(
                    [OutgoingMessage(RELAY_OUT, d.body, "", d.key, d.headers) for d in batch]
                )
                await transport.ack(batch)
                lots.done(sum(1 for d in batch if d.body.startswith(run)))
                if lots.complete:
                    return
        finally:
            await close_stream(stream)

    try:
        await transport.declare(topology)
        await lots.run(relay)
        return lots.timed()
    finally:
        await transport.close()
