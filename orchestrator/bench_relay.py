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

import asyncio
import time
import uuid

from adapters import open_transport
from adapters.base import HEADER_CONTENT_TYPE, OutgoingMessage, Topology, close_stream
from orchestrator.participants import order_placed
from schemas.envelope import CONTENT_TYPE

__all__ = ["relay_rate"]

STALL_SECONDS = 600.0
RELAY_IN = "sagawire.bench.relay.in"
RELAY_OUT = "sagawire.bench.relay.out"


async def relay_rate(
    broker_url: str, messages: int, window: int, max_batch: int, warmup: int = 0
) -> float:
    """Relay ``warmup`` messages untimed, then ``messages`` more in -> out through one
    transport; the timed messages per second.

    Message ids carry a tag of this run: a broker that de-duplicates by id (NATS)
    would otherwise drop a second relay's messages as repeats of the first's.

    A feeder keeps at most ``window`` messages queued ahead of the relay, as the
    engine run keeps ``concurrency`` sagas in flight. It sends nothing of the timed
    lot before the warm-up lot has been relayed in full."""
    transport = open_transport(broker_url)
    await transport.start()
    tag = uuid.uuid4().hex[:8]
    run = tag.encode()
    topology = Topology(consumes=(RELAY_IN,), produces=(RELAY_OUT,), group="sagawire-bench-relay")
    body = run + b" " + order_placed("relay", source="sagawire/bench").body
    headers = {HEADER_CONTENT_TYPE: CONTENT_TYPE}
    total = warmup + messages
    relayed = 0
    room = asyncio.Event()
    began = 0.0
    try:
        await transport.declare(topology)

        async def feed() -> None:
            nonlocal began
            sent = 0
            while sent < total:
                if sent == warmup and relayed < warmup:  # the timed lot starts from empty
                    room.clear()
                    await room.wait()
                    continue
                if sent == warmup and not began:
                    began = time.perf_counter()
                end = warmup if sent < warmup else total
                free = min(window - (sent - relayed), end - sent, max_batch)
                if free <= 0:
                    room.clear()
                    await room.wait()
                    continue
                await transport.publish(
                    [
                        OutgoingMessage(RELAY_IN, body, f"{tag}-{sent + i}", f"{sent + i}", headers)
                        for i in range(free)
                    ]
                )
                sent += free

        feeding = asyncio.ensure_future(feed())
        stream = transport.consume(topology, max_batch=max_batch)
        try:
            async with asyncio.timeout(STALL_SECONDS):
                async for batch in stream:
                    await transport.publish(
                        [OutgoingMessage(RELAY_OUT, d.body, "", d.key, d.headers) for d in batch]
                    )
                    await transport.ack(batch)
                    relayed += sum(1 for d in batch if d.body.startswith(run))
                    room.set()
                    if relayed >= total:
                        break
        finally:
            feeding.cancel()
            await close_stream(stream)
        return messages / (time.perf_counter() - began)
    finally:
        await transport.close()
