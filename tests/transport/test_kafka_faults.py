"""Kafka under faults: refusals, holding, recovery after kill -9.

Refusals. Tansu, the broker these tests run on, refuses nothing: it takes records of
any size (20 MB were accepted) and topics of any name (``a/b``, ``..``, 300
characters), and creates topics on first use. So the refusals Apache Kafka makes are
tested in two honest halves: what the transport checks before sending (a record over
``max_message_bytes``, an invalid topic name) against the real Tansu, and what it does
with a broker's refusal of a batch (``MESSAGE_TOO_LARGE``, ``INVALID_TOPIC``...: find
the refused record by sending each alone, publish the rest, tell it from a failure
that may pass) against a stand-in producer that answers each batch as a broker would.

Holding and recovery run against the session Tansu; each test owns its topics.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiokafka import errors as kafka_errors

from adapters._kafka_produce import refused_by_broker
from adapters._kafka_settings import KafkaSettings
from adapters.base import Delivery, OutgoingMessage, Topology, close_stream
from adapters.kafka import KafkaTransport
from schemas.errors import PublishRefused, TransportError
from tests.support.kafka import Tansu, delete_topics
from tests.support.services import unique
from tests.transport.contract import Names, Receiver, msg
from tests.transport.holder import start_holder


@pytest.fixture
def names() -> Names:
    p = unique("sw")
    return Names(prefix=p, group=f"{p}-g")


@pytest.fixture
async def cleanup(kafka_broker: Tansu, names: Names) -> AsyncIterator[None]:
    """Delete the topics the test created (they all start with ``names.prefix``)."""
    yield
    await delete_topics(kafka_broker, names.prefix)


# -- refusals checked before sending (real broker) -----------------------------------


@pytest.mark.broker("kafka")
@pytest.mark.usefixtures("cleanup")
async def test_records_kafka_would_refuse_are_refused_and_the_rest_published(
    kafka_broker: Tansu, names: Names
) -> None:
    t = KafkaTransport.from_url(f"{kafka_broker.url}&max_message_bytes=10000")
    await t.start()
    dest = names.dest("a")
    topo = Topology(consumes=(dest,), group=names.group)
    try:
        await t.declare(topo)
        bad = {
            "big": (OutgoingMessage(dest, b"x" * 10_000, "big", "k"), "max_message_bytes=10000"),
            "slash": (OutgoingMessage(f"{dest}/b", b"{}", "slash"), "not a valid Kafka topic"),
            "long": (OutgoingMessage("t" * 250, b"{}", "long"), "not a valid Kafka topic"),
            "dots": (OutgoingMessage("..", b"{}", "dots"), "not a valid Kafka topic"),
        }
        good = [msg(dest, i, key="k") for i in range(3)]
        bads = [m for m, _ in bad.values()]
        async with Receiver(t, topo) as rx:
            with pytest.raises(PublishRefused) as refused:
                await t.publish([good[0], *bads[:2], good[1], *bads[2:], good[2]])
            assert set(refused.value.refused) == set(bad)
            for message_id, (_, phrase) in bad.items():
                assert phrase in refused.value.refused[message_id]
            got = await rx.wait_for(3, timeout=30)
            assert [d.body for d in got] == [m.body for m in good]
            await t.ack(got)
    finally:
        await t.close()


# -- the broker's refusals (a stand-in producer) -------------------------------------


class _Batch:
    def __init__(self) -> None:
        self.values: list[bytes] = []

    def append(self, *, key: bytes | None, value: bytes, timestamp: None, headers: Any) -> object:
        self.values.append(value)
        return object()  # appended (a real batch returns metadata, or None when full)

    def close(self) -> None:
        pass


class _Broker:
    """Answers each batch as a broker would: ``error`` for a batch holding a record
    that contains ``refuse``, success (and the records kept, in order) otherwise."""

    _closed = False

    def __init__(self, refuse: bytes, error: type[BaseException]) -> None:
        self.refuse, self.error = refuse, error
        self.stored: list[bytes] = []
        self.batches = 0

    def create_batch(self) -> _Batch:
        return _Batch()

    async def partitions_for(self, topic: str) -> set[int]:
        return {0, 1, 2}

    async def send_batch(self, batch: _Batch, topic: str, *, partition: int) -> Any:
        self.batches += 1
        answer: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if any(self.refuse in v for v in batch.values):
            answer.set_exception(self.error())
        else:
            self.stored.extend(batch.values)
            answer.set_result(None)
        return answer


def _stand_in(broker: _Broker) -> KafkaTransport:
    t = KafkaTransport(KafkaSettings.from_url("kafka://stand-in:9092", env={}))
    t._producer = broker
    t._state = "started"
    return t


@pytest.mark.parametrize(
    "error",
    [
        kafka_errors.MessageSizeTooLargeError,
        kafka_errors.RecordListTooLargeError,
        kafka_errors.InvalidTopicError,
    ],
)
async def test_a_batch_the_broker_refuses_is_sent_again_record_by_record(
    error: type[BaseException],
) -> None:
    """The broker refuses the whole batch and names no record: each is sent alone,
    the one it refuses again is named with the broker's reason, the others land in
    their order."""
    broker = _Broker(b"poison", error)
    t = _stand_in(broker)
    messages = [OutgoingMessage("t", b"%d" % i, f"m{i}", "k") for i in range(5)]
    messages.insert(2, OutgoingMessage("t", b"poison", "bad", "k"))
    with pytest.raises(PublishRefused) as refused:
        await t.publish(messages)
    assert list(refused.value.refused) == ["bad"]
    assert refused.value.refused["bad"].startswith("the broker refused it: ")
    assert broker.stored == [b"0", b"1", b"2", b"3", b"4"]
    assert broker.batches == 1 + 6  # the batch, then each record alone


@pytest.mark.parametrize(
    "error",
    [
        kafka_errors.KafkaTimeoutError,  # what aiokafka raises once retriable errors ran out
        kafka_errors.NotEnoughReplicasError,
        kafka_errors.CorruptRecordException,  # a CRC failure may be the network's doing
        kafka_errors.TopicAuthorizationFailedError,  # an operator's to mend
    ],
)
async def test_a_failure_that_is_not_a_refusal_fails_the_whole_call(
    error: type[BaseException],
) -> None:
    t = _stand_in(_Broker(b"poison", error))
    messages = [msg("t", 1, key="k"), OutgoingMessage("t", b"poison", "bad", "k")]
    with pytest.raises(TransportError) as failed:
        await t.publish(messages)
    assert not isinstance(failed.value, PublishRefused)


async def test_a_failure_that_may_pass_wins_over_a_refusal_in_the_same_call() -> None:
    """Two topics, two batches: one refused for good, one failed for now. The call
    fails as a whole and retryably; the refusal is found when it is retried."""

    class Mixed(_Broker):
        async def send_batch(self, batch: _Batch, topic: str, *, partition: int) -> Any:
            if topic == "later":
                answer: asyncio.Future[None] = asyncio.get_running_loop().create_future()
                answer.set_exception(kafka_errors.KafkaTimeoutError())
                return answer
            return await super().send_batch(batch, topic, partition=partition)

    t = _stand_in(Mixed(b"poison", kafka_errors.MessageSizeTooLargeError))
    with pytest.raises(TransportError) as failed:
        await t.publish([OutgoingMessage("t", b"poison", "bad", "k"), msg("later", 1, key="k")])
    assert failed.value.retryable and not isinstance(failed.value, PublishRefused)


def test_which_broker_errors_are_refusals() -> None:
    assert refused_by_broker(kafka_errors.MessageSizeTooLargeError()) is not None
    assert "MESSAGE_SIZE_TOO_LARGE" in (
        refused_by_broker(kafka_errors.MessageSizeTooLargeError()) or ""
    )
    for transient in (
        kafka_errors.KafkaTimeoutError(),
        kafka_errors.RequestTimedOutError(),
        kafka_errors.NotLeaderForPartitionError(),
        kafka_errors.UnknownTopicOrPartitionError(),
        kafka_errors.KafkaConnectionError(),
        kafka_errors.CorruptRecordException(),
        kafka_errors.TopicAuthorizationFailedError(),
    ):
        assert refused_by_broker(transient) is None, transient


# -- settings ---------------------------------------------------------------------------


def test_session_heartbeat_and_static_membership_settings() -> None:
    s = KafkaSettings.from_url("kafka://h:9092", env={})
    assert (s.session_timeout_ms, s.heartbeat_interval_ms, s.instance_id) == (2000, 666, None)
    assert (s.max_poll_interval_ms, s.max_message_bytes) == (300000, 1048576)
    s = KafkaSettings.from_url("kafka://h:9092?session_timeout_ms=2000&instance_id=pod-0", env={})
    assert (s.heartbeat_interval_ms, s.instance_id) == (666, "pod-0")
    env = {"SAGAWIRE_KAFKA_INSTANCE_ID": "pod-1"}
    assert KafkaSettings.from_url("kafka://h:9092", env=env).instance_id == "pod-1"
    assert KafkaSettings.from_url("kafka://h:9092?instance_id=pod-2", env=env).instance_id == (
        "pod-2"
    )


# -- holding and recovery (real broker) ------------------------------------------------


@pytest.mark.broker("kafka")
@pytest.mark.usefixtures("cleanup")
async def test_a_held_batch_outlives_max_poll_interval_without_coming_back(
    kafka_broker: Tansu, names: Names
) -> None:
    """The engine takes one batch and then nothing for three times
    ``max_poll_interval_ms``: aiokafka would leave the group for want of a poll, and
    the rejoined consumer would deliver the held records again. The transport keeps
    polling with its partitions paused, so nothing comes twice."""
    t = KafkaTransport.from_url(f"{kafka_broker.url}&max_poll_interval_ms=1500")
    await t.start()
    dest = names.dest("a")
    topo = Topology(consumes=(dest,), group=names.group)
    batches = t.consume(topo, max_batch=3)
    got: list[Delivery] = []

    async def drain() -> None:
        async for batch in batches:
            got.extend(batch)

    try:
        await t.declare(topo)
        await t.publish([msg(dest, i, key="k") for i in range(6)])
        held = await asyncio.wait_for(anext(batches), 30)
        await asyncio.sleep(4.5)
        draining = asyncio.ensure_future(drain())
        try:
            await asyncio.sleep(3.0)  # the rest, and anything that would come twice
            everything = held + got
            assert sorted(d.body for d in everything) == sorted(msg(dest, i).body for i in range(6))
            assert {d.delivery_count for d in everything} == {1}
            await t.ack(everything)
        finally:
            draining.cancel()
            await asyncio.gather(draining, return_exceptions=True)
    finally:
        await close_stream(batches)
        await t.close()


@pytest.mark.slow
@pytest.mark.broker("kafka")
@pytest.mark.usefixtures("cleanup")
@pytest.mark.parametrize(
    ("membership", "options", "bound"),
    [
        ("static", "&session_timeout_ms=6000&instance_id={group}-0", 8.0),
        ("dynamic", "&session_timeout_ms=6000", 14.0),
    ],
)
async def test_a_killed_consumers_records_go_to_its_successor(
    kafka_broker: Tansu, names: Names, membership: str, options: str, bound: float
) -> None:
    """kill -9 leaves the member in its group until its session times out. A static
    member (``instance_id``) restarted with the same id takes its place at once on
    Apache Kafka (KIP-345); Tansu makes every static join wait ~3 s at JoinGroup and
    ~3 s at SyncGroup, so it is ~6 s here. A dynamic successor waits for the dead
    member's session (6 s, Apache Kafka's least) and a rebalance: ~11 s on Tansu."""
    url = kafka_broker.url.replace("?session_timeout_ms=2000", "?") + options.format(
        group=names.group
    )
    dest = names.dest("a")
    topo = Topology(consumes=(dest,), group=names.group)
    t = KafkaTransport.from_url(url)
    await t.start()
    try:
        await t.declare(topo)
        await t.publish([msg(dest, i, key=f"k{i}") for i in range(6)])
        async with start_holder(url, names.group, dest, 6) as holder:
            holder.kill()
            killed = time.monotonic()
            await holder.wait()
            async with Receiver(t, topo) as rx:
                got = await rx.wait_for(6, timeout=30)
                elapsed = time.monotonic() - killed
                await t.ack(got)
        print(f"Kafka ({membership}): a killed consumer's 6 records redelivered {elapsed:.2f}s")
        assert elapsed < bound
    finally:
        await t.close()
