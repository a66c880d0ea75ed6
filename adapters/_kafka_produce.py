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

Refusals. Handing batches over skips the checks ``send()`` makes, so :func:`refusal`
makes them: a record larger than ``max_message_bytes`` (counted as ``send()`` counts
it against ``max_request_size``) and a topic name Kafka does not allow are refused
before anything is sent. A broker refuses a whole batch, not one record
(:data:`REFUSALS`: too large, an invalid topic), so the transport sends each record
of such a batch again on its own to learn which one it refuses
(:meth:`~adapters.kafka.KafkaTransport.publish`).
"""

from __future__ import annotations

import asyncio
import functools
import random
import re
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from aiokafka import errors as kafka_errors
from aiokafka.errors import ProducerClosed
from aiokafka.partitioner import murmur2
from aiokafka.record.default_records import DefaultRecordBatchBuilder

from adapters._util import retrieve_outcome
from adapters.base import OutgoingMessage

__all__ = ["REFUSALS", "KeyPartitioner", "Sent", "refusal", "refused_by_broker", "send_batches"]

Sent = tuple["asyncio.Future[Any]", list[OutgoingMessage]]
"""One record batch handed over: its confirmation and the messages in it, in order."""

REFUSALS = (
    kafka_errors.MessageSizeTooLargeError,  # MESSAGE_TOO_LARGE (10)
    kafka_errors.RecordListTooLargeError,  # RECORD_LIST_TOO_LARGE (18)
    kafka_errors.InvalidTopicError,  # INVALID_TOPIC_EXCEPTION (17)
)
"""Produce errors that refuse a batch for what is in it, whenever it is sent again.
Others are not: a corrupt record (CRC) may be the network's doing, an authorization
or policy error is the operator's to mend, and the retriable ones pass."""

_TOPIC = re.compile(r"[A-Za-z0-9._-]{1,249}")
"""Kafka's rule for topic names (``Topic.validate``)."""


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


def refusal(topic: str, message: OutgoingMessage, max_message_bytes: int) -> str | None:
    """Why Kafka would refuse ``message`` for ``topic`` for good, checked before sending.
    Cheap for the usual message: the exact size is counted only when a rough upper
    bound (every character four bytes) does not settle it."""
    bad_topic = _topic_refusal(topic)
    if bad_topic is not None:
        return bad_topic
    text = sum(len(k) + len(v) for k, v in message.headers.items()) + len(message.key or "")
    if len(message.body) + 4 * text + 16 * len(message.headers) + 128 <= max_message_bytes:
        return None
    key = None if message.key is None else message.key.encode()
    headers: list[tuple[str, bytes | None]] = [(k, v.encode()) for k, v in message.headers.items()]
    size = DefaultRecordBatchBuilder.estimate_size_in_bytes(key, message.body, headers)
    if size > max_message_bytes:
        return (
            f"the record is {size} bytes with its key, headers and batch overhead, over"
            f" max_message_bytes={max_message_bytes} (the broker's message.max.bytes)"
        )
    return None


@functools.lru_cache(maxsize=4096)
def _topic_refusal(topic: str) -> str | None:
    if _TOPIC.fullmatch(topic) and topic not in (".", ".."):
        return None
    return (
        f"topic {topic[:120]!r} is not a valid Kafka topic name (1-249 of [A-Za-z0-9._-],"
        " not '.' or '..')"
    )


def refused_by_broker(err: BaseException) -> str | None:
    """The broker's reason if ``err`` refuses what the batch holds for good."""
    if isinstance(err, REFUSALS):
        return f"the broker refused it: {err.message} ({err.description})"
    return None


async def send_batches(
    producer: Any,
    partitioner: KeyPartitioner,
    topic_of: Callable[[str], str],
    unkeyed_partition: Callable[[str], Awaitable[int]],
    messages: Sequence[OutgoingMessage],
) -> list[Sent]:
    """Queue ``messages`` in order, one batch per (topic, partition); return the
    confirmations to wait for, each with the messages of its batch.

    Keyed messages go where ``producer.send()`` would put them (the same
    partitioner, on the same partition list); unkeyed ones of one topic all go to
    ``unkeyed_partition(topic)``, chosen once per call."""
    partitions: dict[str, list[int]] = {}
    unkeyed: dict[str, int] = {}
    open_batches: dict[tuple[str, int], tuple[Any, list[OutgoingMessage]]] = {}
    sent: list[Sent] = []

    async def hand_over(batch: Any, held: list[OutgoingMessage], topic: str, part: int) -> None:
        batch.close()  # complete: the sender takes it at once instead of lingering
        sent.append((await producer.send_batch(batch, topic, partition=part), held))
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
            batch, held = open_batches.get(tp) or (None, [])
            if batch is None:
                batch, held = open_batches[tp] = (producer.create_batch(), [])
            if batch.append(key=key, value=m.body, timestamp=None, headers=headers) is not None:
                held.append(m)
                continue
            # Full: send it (order kept: later messages of this partition follow it). An
            # empty batch takes any one record, however large, so the retry cannot fail.
            await hand_over(batch, held, topic, partition)
            batch, held = open_batches[tp] = (producer.create_batch(), [m])
            batch.append(key=key, value=m.body, timestamp=None, headers=headers)
        for (topic, partition), (batch, held) in open_batches.items():
            await hand_over(batch, held, topic, partition)
    except BaseException:
        for f, _ in sent:  # the caller never sees these: retrieve their outcome here
            f.add_done_callback(retrieve_outcome)
        raise
    return sent
