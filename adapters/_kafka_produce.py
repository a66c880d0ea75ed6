"""Publishing one call's messages to Kafka as one record batch per partition.

Why not ``producer.send()`` per message: each call is a coroutine that checks
metadata, serialises, picks a partition (copying the partition lists), appends to
the accumulator and makes a future that is resolved one by one when the batch is
acknowledged; that was ~40 us a message, most of the Kafka client's share of a
saga transition. Here each message is appended to a ``BatchBuilder`` of its
partition and each batch is handed over once (``send_batch``), with one future per
batch. Order is the same as with ``send()``: messages of one call enter their
partition's batch in call order, and batches enter the accumulator in call order.
Each batch is closed before it is handed over: aiokafka lets an open one linger for
``linger_ms`` in case ``send()`` appends to it, and a publish that waits for its
acknowledgement would pay that wait.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from aiokafka.errors import ProducerClosed
from aiokafka.partitioner import murmur2

from adapters._util import retrieve_outcome
from adapters.base import OutgoingMessage

__all__ = ["KeyPartitioner", "send_batches"]


class KeyPartitioner:
    """aiokafka's ``DefaultPartitioner`` (the same pick for every key, so records land
    where the Java client and ``producer.send()`` put them), remembering each key's hash.

    Why: aiokafka's murmur2 is pure Python, ~3 us for a correlation id, and a saga's
    commands all carry the same key (its correlation id): the engine hashed each key
    four times per order saga. Up to ``size`` keys are kept; then the memory starts
    over (a saga's keys are hot while it runs, not after)."""

    def __init__(self, size: int = 65536) -> None:
        self.size = size
        self._hashes: dict[bytes, int] = {}

    def __call__(
        self, key: bytes | None, all_partitions: Sequence[int], available: Sequence[int]
    ) -> int:
        if key is None:
            return random.choice(available or all_partitions)
        h = self._hashes.get(key)
        if h is None:
            if len(self._hashes) >= self.size:
                self._hashes.clear()
            h = self._hashes[key] = murmur2(key) & 0x7FFFFFFF
        return all_partitions[h % len(all_partitions)]


async def send_batches(
    producer: Any,
    partitioner: KeyPartitioner,
    topic_of: Callable[[str], str],
    unkeyed_partition: Callable[[str], Awaitable[int]],
    messages: Sequence[OutgoingMessage],
) -> list[asyncio.Future[Any]]:
    """Queue ``messages`` in order, one batch per (topic, partition); return the
    confirmations to wait for.

    Keyed messages go where ``producer.send()`` would put them (the same
    partitioner, on the same partition list); unkeyed ones of one topic all go to
    ``unkeyed_partition(topic)``, chosen once per call."""
    partitions: dict[str, list[int]] = {}
    unkeyed: dict[str, int] = {}
    open_batches: dict[tuple[str, int], Any] = {}
    futures: list[asyncio.Future[Any]] = []

    async def hand_over(batch: Any, topic: str, partition: int) -> None:
        batch.close()  # complete: the sender takes it at once instead of lingering
        futures.append(await producer.send_batch(batch, topic, partition=partition))
        # send_batch checks for a closed producer only on entry; one that waited for an
        # earlier batch of its partition while stop() ran is queued after the final
        # flush and never sent (send() checks at every turn). Fail it, do not hang.
        if producer._closed:
            raise ProducerClosed()

    try:
        for m in messages:
            topic = topic_of(m.destination)
            key = None if m.key is None else m.key.encode()
            if key is None:
                if topic not in unkeyed:
                    unkeyed[topic] = await unkeyed_partition(topic)
                partition = unkeyed[topic]
            else:
                if topic not in partitions:
                    # list(), as aiokafka's own partitioning does: the same order, the same pick
                    partitions[topic] = list(await producer.partitions_for(topic))
                every = partitions[topic]
                partition = partitioner(key, every, every)
            headers = [(k, v.encode()) for k, v in m.headers.items()]
            tp = (topic, partition)
            batch = open_batches.get(tp)
            if batch is None:
                batch = open_batches[tp] = producer.create_batch()
            if batch.append(key=key, value=m.body, timestamp=None, headers=headers) is not None:
                continue
            # Full: send it (order kept: later messages of this partition follow it). An
            # empty batch takes any one record, however large, so the retry cannot fail.
            await hand_over(batch, topic, partition)
            batch = open_batches[tp] = producer.create_batch()
            batch.append(key=key, value=m.body, timestamp=None, headers=headers)
        for (topic, partition), batch in open_batches.items():
            await hand_over(batch, topic, partition)
    except BaseException:
        for f in futures:  # the caller never sees these: retrieve their outcome here
            f.add_done_callback(retrieve_outcome)
        raise
    return futures
