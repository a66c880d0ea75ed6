"""Kafka delivery semantics over a real broker (the session Tansu): nack and rewind,
and in-flight windows across a rebalance. Each test is a regression test for a
violation found in review; they fail on the code they were written against.

Topics are unique per test (``names.prefix``) and deleted afterwards.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.partitioner import murmur2

from adapters.base import Delivery, OutgoingMessage, Topology
from adapters.kafka import KafkaTransport
from schemas.codec import encode
from schemas.envelope import Envelope
from tests.support.kafka import Tansu, delete_topics
from tests.support.services import unique
from tests.transport.contract import Names, Receiver, msg

pytestmark = pytest.mark.broker("kafka")

PARTITIONS = 3  # what declare() creates by default


@pytest.fixture
def names() -> Names:
    p = unique("sw")
    return Names(prefix=p, group=f"{p}-g")


@pytest.fixture(autouse=True)
async def cleanup(kafka_broker: Tansu, names: Names) -> AsyncIterator[None]:
    """Delete the topics this test created (they all start with ``names.prefix``)."""
    yield
    await delete_topics(kafka_broker, names.prefix)


def key_on(partition: int) -> str:
    """A record key the producer puts on ``partition`` (of :data:`PARTITIONS`)."""
    for i in range(10_000):
        key = f"key-{i}"
        if (murmur2(key.encode()) & 0x7FFFFFFF) % PARTITIONS == partition:
            return key
    raise AssertionError("no key found")


def numbers(deliveries: Sequence[Delivery]) -> list[int]:
    return [int(d.body[5:-1]) for d in deliveries]


async def committed(broker: Tansu, group: str, tps: Sequence[TopicPartition]) -> list[int | None]:
    consumer = AIOKafkaConsumer(
        bootstrap_servers=f"127.0.0.1:{broker.port}", group_id=group, enable_auto_commit=False
    )
    await consumer.start()
    try:
        return [await consumer.committed(tp) for tp in tps]
    finally:
        await consumer.stop()


async def redelivered(rx: Receiver, number: int, after: int, timeout: float) -> bool:
    """Whether message ``number`` arrives again (among deliveries past ``after``)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        if number in numbers(rx.deliveries[after:]):
            return True
        await asyncio.sleep(0.05)
    return False


async def test_a_nack_rewound_while_the_window_is_full_is_not_forgotten_by_a_later_nack(
    kafka_broker: Tansu, names: Names
) -> None:
    """A nacked record whose rewind (seek) fell due while fetching was paused must still
    come back when another record of its partition is nacked before it was re-read.

    Found: the second nack rewinds to its own offset, past the first one, which is then
    never redelivered while the consumer lives, and the partition's commit is stuck
    below it for good (consumer lag grows; a restart replays everything since)."""
    t = KafkaTransport.from_url(f"{kafka_broker.url}&max_in_flight=3")
    await t.start()
    topic = names.dest("a")
    topo = Topology(consumes=(topic,), group=names.group)
    try:
        await t.declare(topo)
        async with Receiver(t, topo) as rx:
            await t.publish([msg(topic, 0, key=key_on(0)), msg(topic, 1, key=key_on(0))])
            a, c = await rx.wait_for(2)
            await t.publish([msg(topic, 10, key=key_on(1)), msg(topic, 11, key=key_on(1))])
            (x,) = (await rx.wait_for(3))[2:]  # the window (3) is full now
            await t.nack([a], delay=0.3)
            (y,) = (await rx.wait_for(4))[3:]  # the freed slot went to partition 1
            assert numbers([x, y]) == [10, 11]
            await asyncio.sleep(0.8)  # a's rewind falls due while the window is full
            await t.nack([c], delay=0.3)
            await t.ack([x, y])  # room again: both nacked records should come back
            assert await redelivered(rx, 1, after=4, timeout=10), "c was not redelivered"
            assert await redelivered(rx, 0, after=4, timeout=3), (
                f"the first nacked record never came back; got {numbers(rx.deliveries)}"
            )
            await t.ack(rx.deliveries[4:])
            tp = TopicPartition(topic, 0)

            async def p0_committed() -> int | None:
                return (await committed(kafka_broker, names.group, [tp]))[0]

            for _ in range(30):
                if await p0_committed() == 2:
                    break
                await asyncio.sleep(0.1)
            assert await p0_committed() == 2
    finally:
        await t.close()


async def test_a_rebalance_does_not_widen_the_in_flight_window(
    kafka_broker: Tansu, names: Names
) -> None:
    """``max_in_flight`` bounds the deliveries a consumer has handed out and that are
    neither acked nor nacked. Found: on revocation the adapter stops counting the ones
    the engine still holds, so after every rebalance it hands out a whole new window
    (here 20 unsettled deliveries with ``max_in_flight=10``)."""
    url = f"{kafka_broker.url}&max_in_flight=10"
    first, second = KafkaTransport.from_url(url), KafkaTransport.from_url(url)
    await first.start()
    await second.start()
    topic = names.dest("a")
    topo = Topology(consumes=(topic,), group=names.group)
    try:
        await first.declare(topo)
        await first.publish([msg(topic, i, key=f"k{i % 12}") for i in range(90)])
        async with Receiver(first, topo) as rx_first:
            await rx_first.wait_for(10)
            assert len(await rx_first.quiet(0.5)) == 10
            async with Receiver(second, topo) as rx_second:
                await rx_second.wait_for(1)  # the group rebalanced
                held = await rx_first.quiet(1.5)
                assert len(held) <= 10, (
                    f"first consumer holds {len(held)} unsettled deliveries with max_in_flight=10"
                )
    finally:
        await first.close()
        await second.close()


def placed(i: int) -> OutgoingMessage:
    env = Envelope.new(
        "order.placed",
        {
            "order_id": f"o-{i}",
            "customer_id": "c",
            "items": [{"sku": "A", "qty": 1}],
            "amount_cents": 10,
        },
        id=f"placed-{i}",
        source="test",
        correlationid=f"o-{i}",
    )
    return OutgoingMessage("order.placed", encode(env), env.id, key="one")


class StopAfterFirstBatch(KafkaTransport):
    """Sets ``stopping`` once the engine has taken its first batch: a SIGTERM under load."""

    stopping: asyncio.Event

    async def consume(
        self, topology: Topology, *, max_batch: int = 256
    ) -> AsyncIterator[list[Delivery]]:
        async for batch in super().consume(topology, max_batch=max_batch):
            yield batch
            self.stopping.set()
