"""A relay with plain nats-py and none of sagawire: the yardstick for the NATS adapter.

    .venv/bin/python scripts/raw_nats_relay.py [--messages N] [--window W]

Same shape as ``sagawire bench``'s relay (a feeder keeps W messages ahead; the
relay fetches pull batches of 256, publishes each message to another subject,
waits for the publish acks, acks the batch), but straight on the client: the gap
between this figure and the bench's ``baseline_relay_per_s`` on NATS is what the
adapter costs. Uses a private stream on 127.0.0.1:4222 and deletes it.
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid

import nats
import nats.errors
from nats.js.api import StreamConfig


async def relay(messages: int, window: int) -> None:
    nc = await nats.connect("nats://127.0.0.1:4222")
    js = nc.jetstream()
    tag = uuid.uuid4().hex[:8]
    stream = f"SWRAW{tag}"
    await js.add_stream(StreamConfig(name=stream, subjects=[f"swraw{tag}.>"]))
    try:
        sub = await js.pull_subscribe(f"swraw{tag}.in", durable="relay", stream=stream)
        body = b"x" * 300
        relayed = 0
        room = asyncio.Event()

        async def feed() -> None:
            sent = 0
            while sent < messages:
                free = min(window - (sent - relayed), messages - sent, 256)
                if free <= 0:
                    room.clear()
                    await room.wait()
                    continue
                acks = [await js.publish_async(f"swraw{tag}.in", body) for _ in range(free)]
                await asyncio.gather(*acks)
                sent += free

        began, cpu = time.perf_counter(), time.process_time()
        feeding = asyncio.ensure_future(feed())
        while relayed < messages:
            try:
                msgs = await sub.fetch(256, timeout=1)
            except nats.errors.TimeoutError:
                continue
            acks = [await js.publish_async(f"swraw{tag}.out", m.data) for m in msgs]
            await asyncio.gather(*acks)
            for m in msgs:
                await m.ack()
            relayed += len(msgs)
            room.set()
        elapsed = time.perf_counter() - began
        await feeding
        print(
            f"raw nats-py relay: {messages / elapsed:,.0f} msg/s"
            f" ({messages} messages, window {window}, {time.process_time() - cpu:.2f} s CPU)"
        )
    finally:
        await js.delete_stream(stream)
        await nc.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=40_000)
    parser.add_argument("--window", type=int, default=512)
    args = parser.parse_args()
    asyncio.run(relay(args.messages, args.window))


if __name__ == "__main__":
    main()
