"""Publishing one call's messages to Kafka as one record batch per partition.

Why not ``producer.send()`` per message: each call is a coroutine that checks
metadata, serialises, picks a partition (copying the partition lists), appends to
the accumulator and makes a future that is resolved one by one when the batch is
acknowledged; that was ~40 us a message, most of the Kafka client's share of a
saga transition. Here each message is appended to a ``BatchBuilder`` of its
partition and each batch is handed over once (``send_batch``), with one future per
batch. Order is the same as with ``send()``: messages of one call enter their
partition's batch in call order, and batches enter the accumulator in call order.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from aiokafka.errors import ProducerClosed
from aiokafka.partitioner import DefaultPartitioner

from adapters._util import retrieve_outcome
from adapters.base import OutgoingMessage

__all__ = ["send_batches"]


async def send_batches(
    producer: Any,
    partitioner: DefaultPartitioner,
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
