"""The transport contract against Kafka (a Tansu broker started for the session),
plus what only Kafka has: offsets, partitions, rewinds.

Group joins are slow on Tansu (about the session timeout, which the test URL sets
to 2 s), so only tests about consuming as a group join one; the others read with
``assign()``.

Reconnect: a plain TCP proxy cannot sit in front of Kafka, because after
bootstrapping a client connects to the broker's *advertised* address and would
bypass it. The ``proxy`` fixture chains TcpProxy -> Tansu's Kafka-aware proxy ->
the session broker; the Tansu proxy advertises the TcpProxy's port, so every
connection of the proxied transport (metadata, fetch, produce, group coordinator)
goes through the cut, while ``direct`` keeps publishing to the same broker.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from adapters import open_transport
from adapters._kafka_offsets import OffsetTracker
from adapters._kafka_settings import KafkaSettings
from adapters.base import DEADLETTER, Delivery, OutgoingMessage, Topology, Transport
from adapters.kafka import KafkaTransport
from schemas.errors import ConfigError, TransportError
from tests.support.kafka import Tansu, delete_topics, free_port, start_tansu_proxy
from tests.support.proxy import TcpProxy
from tests.support.waiting import wait_until
from tests.transport.contract import (
    Names,
    Receiver,
    ReconnectContract,
    TransportContract,
    TransportFactory,
    msg,
)


@pytest.mark.broker("kafka")
class TestKafkaTransport(TransportContract, ReconnectContract):
    @pytest.fixture
    def transport_factory(self, kafka_broker: Tansu) -> TransportFactory:
        async def make() -> KafkaTransport:
            return KafkaTransport.from_url(kafka_broker.url)

        return make

    @pytest.fixture
    async def proxy(self, kafka_broker: Tansu) -> AsyncIterator[TcpProxy]:
        inner_port = free_port()
        tcp = await TcpProxy("127.0.0.1", inner_port).start()
        kafka_proxy = start_tansu_proxy(
            kafka_broker.port, advertised_port=tcp.port, port=inner_port
        )
        try:
            yield tcp
        finally:
            await tcp.close()
            kafka_proxy.stop()

    @pytest.fixture
    def proxied_factory(self) -> Callable[[TcpProxy], Awaitable[Transport]]:
        async def make(proxy: TcpProxy) -> Transport:
            return KafkaTransport.from_url(
                f"kafka://127.0.0.1:{proxy.port}?session_timeout_ms=2000"
            )

        return make

    def refused_message(self, names: Names) -> tuple[OutgoingMessage, str]:
        """Over ``max_message_bytes`` (1 MiB): refused before sending, as Apache Kafka
        would refuse it (``message.max.bytes``). Tansu itself takes records of any size,
        so the broker's own refusals are tested in ``test_kafka_faults``."""
        return OutgoingMessage(names.dest("a"), b"x" * 1_100_000, "huge"), "max_message_bytes"

    @pytest.fixture(autouse=True)
    async def cleanup(self, kafka_broker: Tansu, names: Names) -> AsyncIterator[None]:
        """Delete the topics this test created (its names share ``names.prefix``)."""
        yield
        await delete_topics(kafka_broker, names.prefix)

    # -- Kafka only -------------------------------------------------------------------
    async def test_declare_creates_topics_with_partitions_and_prefix(
        self, kafka_broker: Tansu, names: Names
    ) -> None:
        t = KafkaTransport.from_url(f"{kafka_broker.url}&partitions=5&topic_prefix={names.prefix}.")
        await t.start()
        try:
            await t.declare(Topology(consumes=("a",), produces=("b",), group=names.group))
            await t.declare(Topology(consumes=("a",), produces=("b",), group=names.group))
            partitions = await topic_partitions(
                kafka_broker, [f"{names.prefix}.a", f"{names.prefix}.b"]
            )
            assert partitions == {f"{names.prefix}.a": 5, f"{names.prefix}.b": 5}
            assert (await topic_partitions(kafka_broker, [DEADLETTER]))[DEADLETTER] >= 1
        finally:
            await t.close()

    async def test_start_new_skips_history_once_and_then_goes_on_from_where_it_was(
        self, kafka_broker: Tansu, names: Names
    ) -> None:
        """A tracker joining with ``start=new`` sees none of the topic's history; when it
        comes back, its group has offsets and gets what was published while it was away."""
        topo = self.topology(names, "a")
        topic = names.dest("a")
        producer = KafkaTransport.from_url(kafka_broker.url)
        await producer.start()
        try:
            await producer.declare(topo)
            # history, a record per batch: Tansu answers a partition's end offset from
            # its last batch's first record, so a tracker pinned to the end of a batch
            # of 3 would start inside it (it passed with 3 partitions by luck)
            for i in range(3):
                await producer.publish([msg(topic, i)])
            tracker = KafkaTransport.from_url(f"{kafka_broker.url}&start=new")
            await tracker.start()
            await tracker.declare(topo)
            async with Receiver(tracker, topo) as rx:
                # The group's position is fixed once it is assigned: until then a new
                # record may land before "latest", so publish until one arrives.
                n = 100
                while not rx.deliveries:
                    await producer.publish([msg(topic, n)])
                    n += 1
                    await rx.quiet(0.5)
                await rx.quiet(0.5)
                assert all(int(d.body[5:-1]) >= 100 for d in rx.deliveries), "history seen"
                await tracker.ack(list(rx.deliveries))
            await tracker.close()
            await producer.publish([msg(topic, i) for i in (4, 5)])  # while away
            again = KafkaTransport.from_url(f"{kafka_broker.url}&start=new")
            await again.start()
            try:
                async with Receiver(again, topo) as rx2:
                    got = await rx2.wait_for(2, timeout=30)
                    assert len(await rx2.quiet(0.5)) == 2
                    await again.ack(got)
                assert sorted(int(d.body[5:-1]) for d in got) == [4, 5]
            finally:
                await again.close()
        finally:
            await producer.close()

    async def test_same_key_same_partition_in_order(
        self, open_transport: Callable[[], Awaitable[Transport]], names: Names, kafka_broker: Tansu
    ) -> None:
        t = await open_transport()
        topic = names.dest("a")
        await t.declare(self.topology(names, "a"))
        await t.publish([msg(topic, i, key=f"k{i % 7}") for i in range(140)])
        records = await read_all(kafka_broker, topic, 140)
        partitions: dict[str, set[int]] = {}
        for r in records:
            partitions.setdefault(r.key.decode(), set()).add(r.partition)
        assert all(len(p) == 1 for p in partitions.values()), partitions
        assert len({p for ps in partitions.values() for p in ps}) > 1, "all keys on one partition"
        for key in partitions:
            seq = [int(r.value[5:-1]) for r in records if r.key.decode() == key]
            assert seq == sorted(seq) and len(seq) == 20

    async def test_batched_publish_lands_where_send_would_in_order_across_full_batches(
        self, open_transport: Callable[[], Awaitable[Transport]], names: Names, kafka_broker: Tansu
    ) -> None:
        """Publishing builds one record batch per partition (``_kafka_produce``): a key
        still lands on the partition aiokafka's own ``send()`` picks, order holds when
        a batch fills up mid-call, and a message larger than a whole batch still goes."""
        t = await open_transport()
        topic = names.dest("a")
        await t.declare(self.topology(names, "a"))
        big = 70_000  # 256 KiB batches: three of these fill one
        messages = [
            OutgoingMessage(topic, b"%d:" % i + b"x" * big, f"m{i}", "k", {"x-n": str(i)})
            for i in range(8)
        ]
        messages.insert(4, OutgoingMessage(topic, b"4h:" + b"y" * 300_000, "huge", "k"))
        messages += [msg(topic, i, key=f"s{i}") for i in range(20)]
        await t.publish(messages)
        reference = AIOKafkaProducer(bootstrap_servers=f"127.0.0.1:{kafka_broker.port}")
        await reference.start()
        try:
            expected = {
                key: (await (await reference.send(topic, b"ref", key=key.encode()))).partition
                for key in ["k", *(f"s{i}" for i in range(20))]
            }
        finally:
            await reference.stop()
        records = [r for r in await read_all(kafka_broker, topic, 50) if r.value != b"ref"]
        assert len(records) == 29
        assert all(r.partition == expected[r.key.decode()] for r in records)
        same_key = [r.value.split(b":")[0] for r in records if r.key == b"k"]
        assert same_key == [b"0", b"1", b"2", b"3", b"4h", b"4", b"5", b"6", b"7"]
        assert next(r for r in records if r.key == b"k").headers == (("x-n", b"0"),)

    async def test_unkeyed_messages_of_one_publish_share_a_partition_in_order(
        self, open_transport: Callable[[], Awaitable[Transport]], names: Names, kafka_broker: Tansu
    ) -> None:
        """aiokafka alone picks a random partition per unkeyed record, so two messages
        published together could be consumed in either order (the crash contract test
        acks the first delivery and expects the second back)."""
        t = await open_transport()
        topic = names.dest("a")
        await t.declare(self.topology(names, "a"))
        for call in range(3):
            await t.publish([msg(topic, call * 10 + i) for i in range(10)])
        records = await read_all(kafka_broker, topic, 30)
        by_call: dict[int, list[tuple[int, int]]] = {}
        for r in records:
            n = int(r.value[5:-1])
            by_call.setdefault(n // 10, []).append((r.partition, n))
        for call, got in by_call.items():
            assert len({p for p, _ in got}) == 1, f"publish {call} spread over partitions"
            assert [n for _, n in got] == list(range(call * 10, call * 10 + 10))
        assert len({got[0][0] for got in by_call.values()}) == 3, "calls did not rotate"

    async def test_commits_only_the_contiguous_acked_prefix(
        self, open_transport: Callable[[], Awaitable[Transport]], names: Names, kafka_broker: Tansu
    ) -> None:
        t = await open_transport()
        topo = self.topology(names, "a")
        await t.declare(topo)
        async with Receiver(t, topo) as rx:
            await t.publish([msg(names.dest("a"), i, key="one") for i in range(3)])
            first, second, third = await rx.wait_for(3)
            tp = first.handle.tp  # type: ignore[union-attr]
            await t.ack([second, third])
            await asyncio.sleep(1.0)
            assert await committed(kafka_broker, names.group, tp) is None, "committed past a gap"
            await t.ack([first])
            for _ in range(50):
                if await committed(kafka_broker, names.group, tp) == 3:
                    break
                await asyncio.sleep(0.1)
            assert await committed(kafka_broker, names.group, tp) == 3

    async def test_nack_rewinds_and_redelivers_only_what_was_nacked(
        self, open_transport: Callable[[], Awaitable[Transport]], names: Names
    ) -> None:
        t = await open_transport()
        topo = self.topology(names, "a")
        await t.declare(topo)
        async with Receiver(t, topo) as rx:
            await t.publish([msg(names.dest("a"), i, key="one") for i in range(3)])
            a, b, c = await rx.wait_for(3)
            await t.nack([a], delay=0.3)
            await t.ack([b])  # c stays with "the engine"
            (again,) = (await rx.wait_for(4))[3:]
            assert again.body == a.body and again.delivery_count == 2
            assert len(await rx.quiet(1.0)) == 4, "b (acked) or c (held) came back"
            await t.ack([again, c])

    async def test_in_flight_window_pauses_fetching_until_acks(
        self, kafka_broker: Tansu, names: Names
    ) -> None:
        t = KafkaTransport.from_url(f"{kafka_broker.url}&max_in_flight=100")
        await t.start()
        topo = self.topology(names, "a")
        try:
            await t.declare(topo)
            await t.publish([msg(names.dest("a"), i, key=f"k{i % 10}") for i in range(500)])
            async with Receiver(t, topo, max_batch=64) as rx:
                first = await rx.wait_for(100)
                assert len(await rx.quiet(1.0)) == 100, "fetched past the in-flight window"
                acked = 100
                await t.ack(first)
                while acked < 500:  # the window moves as acks come
                    await rx.wait_for(min(acked + 100, 500))
                    assert len(rx.deliveries) <= acked + 100
                    await t.ack(rx.deliveries[acked:])
                    acked = len(rx.deliveries)
            assert sorted(int(d.body[5:-1]) for d in rx.deliveries) == list(range(500))
        finally:
            await t.close()

    async def test_close_ends_the_iterator_and_keeps_acks(
        self, open_transport: Callable[[], Awaitable[Transport]], names: Names, kafka_broker: Tansu
    ) -> None:
        t = await open_transport()
        topo = self.topology(names, "a")
        await t.declare(topo)
        await t.publish([msg(names.dest("a"), i, key="one") for i in range(2)])
        batches: list[list[Delivery]] = []
        both = asyncio.Event()

        async def run() -> None:
            async for batch in t.consume(topo):
                batches.append(batch)
                await t.ack(batch)
                if sum(map(len, batches)) >= 2:
                    both.set()

        task = asyncio.ensure_future(run())
        async with asyncio.timeout(20):
            await both.wait()
        tp = batches[0][0].handle.tp  # type: ignore[union-attr]
        await t.close()
        async with asyncio.timeout(5):
            await task  # ended, not cancelled
        assert not t.readiness.ready
        assert await committed(kafka_broker, names.group, tp) == 2

    async def test_fetches_wait_briefly_while_records_flow_and_long_when_idle(
        self, kafka_broker: Tansu, names: Names, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The wait each fetch request carries to the broker (captured as aiokafka builds
        it): the idle wait until records come, the busy wait right after, the idle wait
        again once none came for ``BUSY_FOR``."""
        import aiokafka.consumer.fetcher as fetcher_module

        from adapters import _kafka_fetch_wait

        sent: list[int] = []
        real = fetcher_module.FetchRequest

        def capture(max_wait: int, *args: object, **kwargs: object) -> object:
            sent.append(max_wait)
            return real(max_wait, *args, **kwargs)

        monkeypatch.setattr(fetcher_module, "FetchRequest", capture)
        monkeypatch.setattr(_kafka_fetch_wait, "BUSY_FOR", 0.5)
        t = KafkaTransport.from_url(
            f"{kafka_broker.url}&fetch_max_wait_ms=120&busy_fetch_wait_ms=7"
        )
        await t.start()
        topo = self.topology(names, "a")
        try:
            await t.declare(topo)
            async with Receiver(t, topo, auto_ack=True) as rx:

                async def idle_fetches() -> bool:
                    return len(sent) >= 3

                await wait_until(idle_fetches)
                mark = len(sent)
                assert set(sent[:mark]) == {120}, sent
                await t.publish([msg(names.dest("a"), i, key="k") for i in range(5)])
                await rx.wait_for(5)

                async def busy_fetch() -> bool:
                    return 7 in sent[mark:]

                async def idle_again() -> bool:
                    return sent[-1] == 120 and 7 in sent[mark:]

                await wait_until(busy_fetch)
                await wait_until(idle_again)
        finally:
            await t.close()

    async def test_readiness_and_errors_before_start(self, kafka_broker: Tansu) -> None:
        t = KafkaTransport.from_url(kafka_broker.url)
        assert not t.readiness.ready and "not started" in t.readiness.reason
        with pytest.raises(TransportError):
            await t.publish([msg("x", 1)])
        dead = KafkaTransport.from_url(f"kafka://127.0.0.1:{free_port()}")
        with pytest.raises(TransportError) as info:
            await dead.start()
        assert info.value.retryable


# -- helpers reading Kafka directly (assign(), no group join) ---------------------------
async def topic_partitions(broker: Tansu, topics: list[str]) -> dict[str, int]:
    admin = AIOKafkaAdminClient(bootstrap_servers=f"127.0.0.1:{broker.port}")
    await admin.start()
    try:
        return {d["topic"]: len(d["partitions"]) for d in await admin.describe_topics(topics)}
    finally:
        await admin.close()


async def read_all(broker: Tansu, topic: str, n: int) -> list[object]:
    consumer = AIOKafkaConsumer(
        bootstrap_servers=f"127.0.0.1:{broker.port}", enable_auto_commit=False
    )
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        if not tps:
            await consumer._client.force_metadata_update()
            tps = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        records: list[object] = []
        async with asyncio.timeout(20):
            while len(records) < n:
                for batch in (await consumer.getmany(timeout_ms=200)).values():
                    records.extend(batch)
        return records
    finally:
        await consumer.stop()


async def committed(broker: Tansu, group: str, tp: TopicPartition) -> int | None:
    consumer = AIOKafkaConsumer(
        bootstrap_servers=f"127.0.0.1:{broker.port}", group_id=group, enable_auto_commit=False
    )
    await consumer.start()
    try:
        result: int | None = await consumer.committed(tp)
        return result
    finally:
        await consumer.stop()


# -- no broker needed ---------------------------------------------------------------------
def test_url_options_and_credentials_never_leak() -> None:
    s = KafkaSettings.from_url(
        "kafka://alice:s3cr%40t@h1:9092,h2:9092?partitions=6&replication=3&topic_prefix=p."
        "&security_protocol=SASL_SSL&sasl_mechanism=SCRAM-SHA-512",
        env={},
    )
    assert s.bootstrap == "h1:9092,h2:9092"
    assert (s.partitions, s.replication, s.topic_prefix) == (6, 3, "p.")
    assert (s.username, s.password) == ("alice", "s3cr@t")
    assert "s3cr" not in repr(s) and "s3cr" not in s.redacted_url
    assert s.topic("order.created") == "p.order.created"
    assert s.destination("p.order.created") == "order.created"
    kwargs = s.client_kwargs()
    assert kwargs["sasl_mechanism"] == "SCRAM-SHA-512" and kwargs["ssl_context"] is not None


def test_fetch_waits_default_to_busy_10_idle_50_and_one_given_wait_applies_to_both() -> None:
    def waits(query: str) -> tuple[int, int]:
        s = KafkaSettings.from_url(f"kafka://h:9092{query}", env={})
        return s.fetch_max_wait_ms, s.busy_fetch_wait_ms

    assert waits("") == (50, 10)
    assert waits("?fetch_max_wait_ms=500") == (500, 500)
    assert waits("?busy_fetch_wait_ms=5") == (50, 5)
    assert waits("?fetch_max_wait_ms=500&busy_fetch_wait_ms=20") == (500, 20)
    with pytest.raises(ConfigError, match="busy_fetch_wait_ms"):
        waits("?busy_fetch_wait_ms=0")


def test_credentials_from_env_and_missing_ones_are_a_config_error() -> None:
    url = "kafka://h:9092?security_protocol=SASL_PLAINTEXT"
    s = KafkaSettings.from_url(
        url, env={"SAGAWIRE_KAFKA_USER": "bob", "SAGAWIRE_KAFKA_PASSWORD": "pw"}
    )
    assert s.client_kwargs()["sasl_plain_username"] == "bob"
    with pytest.raises(ConfigError, match="SAGAWIRE_KAFKA_USER"):
        KafkaSettings.from_url(url, env={}).client_kwargs()


@pytest.mark.parametrize(
    "url",
    [
        "kafka://h:9092?partitions=0",
        "kafka://h:9092?idempotence=maybe",
        "kafka://h:9092?security_protocol=TLS",
        "kafka://h:9092?sasl_mechanism=GSSAPI",
        "kafka://h:9092?acks=1",
        "kafka://h:9092?start=latest",
        "kafka://",
    ],
)
def test_bad_urls_are_config_errors(url: str) -> None:
    with pytest.raises(ConfigError):
        KafkaSettings.from_url(url, env={})


def test_registry_opens_kafka() -> None:
    assert isinstance(open_transport("kafka://127.0.0.1:9092"), KafkaTransport)


def test_tracker_commits_the_contiguous_prefix_and_rewinds() -> None:
    tr: OffsetTracker[str] = OffsetTracker()
    tr.assign(["p"])
    t0, t1, t2 = (tr.accept("p", o) for o in (10, 11, 13))  # 12: a transaction marker
    assert t0 and t1 and t2 and tr.outstanding == 3
    assert not tr.ack(t1)
    assert tr.pending_commits() == {}
    tr.nack(t2, due=5.0)
    assert tr.rewinding == {"p"} and tr.due_rewinds(4.0) == {}
    assert tr.due_rewinds(5.0) == {"p": 13}
    assert tr.ack(t0)
    assert tr.pending_commits() == {"p": 12}
    again = tr.accept("p", 13)
    assert again and tr.delivery_count(again) == 2
    assert tr.accept("p", 11) is None  # acked before: never handed out twice
    tr.mark_committed({"p": 12})
    assert tr.ack(again) and tr.pending_commits() == {"p": 14}
    assert tr.revoke(["p"]) == {"p": 14} and tr.outstanding == 0
    assert not tr.ack(again), "a ticket from before a rebalance is ignored"


def test_tracker_skips_deliveries_still_held_after_a_rewind() -> None:
    tr: OffsetTracker[str] = OffsetTracker()
    tr.assign(["p"])
    a, b = tr.accept("p", 0), tr.accept("p", 1)
    assert a and b
    tr.nack(a, due=0.0)
    assert tr.due_rewinds(0.0) == {"p": 0}
    assert tr.accept("p", 0) is not None
    assert tr.accept("p", 1) is None  # b is still with the engine


async def test_batched_publish_fails_instead_of_hanging_when_the_producer_closed() -> None:
    """send_batch checks for a closed producer only on entry; a batch queued while stop()
    ran would never be sent. send_batches raises instead, and the confirmations it
    already had are retrieved (no 'exception never retrieved' later). Every batch is
    closed before it is handed over, so the sender takes it without lingering."""
    import asyncio

    from aiokafka.errors import ProducerClosed

    from adapters._kafka_produce import KeyPartitioner, send_batches

    loop = asyncio.get_running_loop()
    handed: list[asyncio.Future[object]] = []

    class Batch:
        def __init__(self) -> None:
            self.n = 0

        def append(self, **_: object) -> object | None:
            self.n += 1
            return object() if self.n <= 2 else None  # two records fill a batch

        closed = False

        def close(self) -> None:
            self.closed = True

    class Producer:
        _closed = False

        def create_batch(self) -> Batch:
            return Batch()

        async def partitions_for(self, topic: str) -> set[int]:
            return {0, 1, 2}

        async def send_batch(self, batch: Batch, topic: str, *, partition: int) -> object:
            f: asyncio.Future[object] = loop.create_future()
            handed.append(f)
            if len(handed) == 2:
                self._closed = True  # stop() ran while this one waited for a drain
            return f

    async def unkeyed(topic: str) -> int:
        return 0

    messages = [OutgoingMessage("t", b"x", f"m{i}", "same-key") for i in range(6)]
    closed_when_handed: list[bool] = []
    real_send = Producer.send_batch

    async def send_batch(self: Producer, batch: Batch, topic: str, *, partition: int) -> object:
        closed_when_handed.append(batch.closed)
        return await real_send(self, batch, topic, partition=partition)

    Producer.send_batch = send_batch  # type: ignore[method-assign]
    with pytest.raises(ProducerClosed):
        await send_batches(Producer(), KeyPartitioner(), str, unkeyed, messages)
    assert len(handed) == 2
    assert closed_when_handed == [True, True], "a handed-over batch would linger"
    handed[0].set_exception(RuntimeError("failed later"))
    await asyncio.sleep(0)
    assert handed[0]._log_traceback is False  # retrieved by send_batches' callback


def test_key_partitioner_picks_what_aiokafka_picks_across_cache_resets() -> None:
    """The remembered hashes never change a pick: the same partition as aiokafka's
    DefaultPartitioner for every key and partition list, before and after the memory
    of keys fills and starts over; keyless records go to an available partition."""
    from aiokafka.partitioner import DefaultPartitioner

    from adapters._kafka_produce import KeyPartitioner

    reference, ours = DefaultPartitioner(), KeyPartitioner(size=50)
    keys = [f"order-{n}".encode() for n in range(120)] + [b"", "ü-é".encode()]
    for partitions in ([0, 1, 2], [0, 1, 2, 3, 4, 5, 6], [3, 5]):
        for _ in range(2):  # the second pass hits remembered hashes (or a reset memory)
            for key in keys:
                assert ours(key, partitions, partitions) == reference(key, partitions, partitions)
    assert len(ours._hashes) <= 50
    assert {ours(None, [0, 1, 2], [2]) for _ in range(20)} == {2}
    assert ours(None, [0, 1, 2], []) in {0, 1, 2}


def test_fetch_wait_is_short_for_a_second_after_records_and_never_above_the_idle_wait() -> None:
    from adapters._kafka_fetch_wait import BUSY_FOR, FetchWait

    class Fetcher:
        _fetch_max_wait_ms = 500

    class Consumer:
        _fetcher = Fetcher()

    consumer = Consumer()
    wait = FetchWait(idle_ms=50, busy_ms=10)
    wait.attach(consumer)
    assert consumer._fetcher._fetch_max_wait_ms == 50
    wait.observe(False, 100.0)
    assert consumer._fetcher._fetch_max_wait_ms == 50
    wait.observe(True, 101.0)
    assert consumer._fetcher._fetch_max_wait_ms == 10
    wait.observe(False, 101.0 + BUSY_FOR / 2)
    assert consumer._fetcher._fetch_max_wait_ms == 10
    wait.observe(False, 101.0 + BUSY_FOR)
    assert consumer._fetcher._fetch_max_wait_ms == 50
    assert FetchWait(idle_ms=5, busy_ms=10).busy_ms == 5


def test_fetch_wait_without_the_private_attribute_warns_and_does_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from adapters._kafka_fetch_wait import FetchWait

    class Consumer:
        pass

    wait = FetchWait(idle_ms=50, busy_ms=10)
    wait.attach(Consumer())
    wait.observe(True, 1.0)
    assert "no fetcher wait" in caplog.text
    assert wait.current == 50
