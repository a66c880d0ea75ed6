"""Bad input and broker behaviour the adapters must survive, over REAL connections.

Each test feeds one broker something a careless or foreign publisher can send (a
header the client library refuses to write back, a routing header, a null header
value, a body near the size limit) or drives a delivery to its last attempt, and
checks the team's rule: a clear error or a dead letter, nothing lost, and the
transport still moving messages afterwards. Every test owns uniquely named
streams/exchanges/queues/topics and deletes them. Brokers are reached as in the
rest of ``tests/transport``: skip on a laptop without them, fail under CI=true.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aio_pika
import nats
import nats.js.errors
import pytest
from aiokafka import AIOKafkaProducer
from nats.aio.msg import Msg

from adapters.base import (
    DEADLETTER,
    HEADER_ORIGIN,
    HEADER_REASON,
    Delivery,
    OutgoingMessage,
    Topology,
    Transport,
    close_stream,
)
from adapters.kafka import KafkaTransport
from adapters.nats import NatsTransport
from adapters.rabbitmq import RabbitTransport
from orchestrator.engine import Engine, EngineConfig
from orchestrator.language.loader import load_sagas
from orchestrator.store.memory import MemoryStore
from orchestrator.tooling.bench import stop_engine
from orchestrator.tooling.participants import order_placed
from schemas.errors import TransportError
from tests.support.kafka import Tansu, delete_topics
from tests.support.services import require, unique

WAIT = 15.0
"""Seconds to wait for a delivery that should come."""


@contextlib.asynccontextmanager
async def first_delivery(
    transport: Transport, topology: Topology, timeout: float = WAIT
) -> AsyncIterator[Delivery]:
    """The first delivery of a fresh ``consume()``, which is closed on exit."""
    stream = transport.consume(topology, max_batch=16)
    try:
        batch = await asyncio.wait_for(anext(stream), timeout)
        yield batch[0]
    finally:
        await close_stream(stream)


async def wait_ready(transport: Transport, timeout: float) -> bool:
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        if transport.readiness.ready:
            return True
        await asyncio.sleep(0.2)
    return transport.readiness.ready


# -- NATS JetStream -----------------------------------------------------------------

NATS_HOST, NATS_PORT = "127.0.0.1", 4222
NATS_TUNING = "ping_interval=1&reconnect_wait=0.5&fetch_timeout=1&connect_timeout=5"


@dataclass
class NatsSetup:
    stream: str
    prefix: str

    def url(self, extra: str = "") -> str:
        dl = f"deadletter={DEADLETTER}.{self.stream}"
        tail = f"&{extra}" if extra else ""
        return f"nats://{NATS_HOST}:{NATS_PORT}?stream={self.stream}&{dl}&{NATS_TUNING}{tail}"

    @property
    def dl_subject(self) -> str:
        return f"{DEADLETTER}.{self.stream}"

    def topology(self) -> Topology:
        return Topology(consumes=(f"{self.prefix}.a",), group=f"{self.prefix}-g")


@pytest.fixture
async def nats_setup() -> AsyncIterator[NatsSetup]:
    require("nats", NATS_HOST, NATS_PORT)
    setup = NatsSetup(stream=unique("SWBAD_"), prefix=unique("swbad"))
    yield setup
    nc = await nats.connect(f"nats://{NATS_HOST}:{NATS_PORT}")
    with contextlib.suppress(nats.js.errors.NotFoundError):
        await nc.jetstream().delete_stream(setup.stream)
    await nc.close()


async def raw_hpub(subject: str, header_block: bytes, body: bytes) -> None:
    """Publish with a header block written by hand, as a Go or CLI client may (their
    header names are not limited to what nats-py accepts); PING/PONG proves it landed."""
    reader, writer = await asyncio.open_connection(NATS_HOST, NATS_PORT)
    try:
        await reader.readline()  # INFO
        writer.write(b'CONNECT {"verbose":false,"pedantic":false,"headers":true}\r\n')
        size = len(header_block) + len(body)
        writer.write(f"HPUB {subject} {len(header_block)} {size}\r\n".encode())
        writer.write(header_block + body + b"\r\nPING\r\n")
        await writer.drain()
        assert await asyncio.wait_for(reader.readline(), 5) == b"PONG\r\n"
    finally:
        writer.close()
        await writer.wait_closed()


async def nats_dead_letters(setup: NatsSetup, timeout: float = 3.0) -> list[Msg]:
    nc = await nats.connect(f"nats://{NATS_HOST}:{NATS_PORT}")
    try:
        js = nc.jetstream()
        sub = await js.pull_subscribe(setup.dl_subject, stream=setup.stream)
        try:
            return list(await sub.fetch(batch=10, timeout=timeout))
        except nats.errors.TimeoutError:
            return []
    finally:
        await nc.close()


@pytest.mark.broker("nats")
async def test_nats_dead_letters_a_message_whose_header_name_nats_py_will_not_write(
    nats_setup: NatsSetup,
) -> None:
    """Found: ``NatsTransport.dead_letter`` copies the delivery's headers verbatim and
    nats-py refuses to write a header name outside its token regex (``x/y``), which the
    server accepts from other clients. The dead letter fails with a NON-retryable
    TransportError every time; the engine (committing._finish) nacks it, so the
    message cycles until max_deliver and is then left unacked in the stream: neither
    handled nor dead-lettered."""
    t = NatsTransport.from_url(nats_setup.url())
    await t.start()
    try:
        topo = nats_setup.topology()
        await t.declare(topo)
        raw = b"\xff not json"
        await raw_hpub(f"{nats_setup.prefix}.a", b"NATS/1.0\r\nx/y: 1\r\nx-ok: 2\r\n\r\n", raw)
        async with first_delivery(t, topo) as d:
            await t.dead_letter(d, "body is not JSON")
            await t.ack([d])
    finally:
        await t.close()
    (dead,) = await nats_dead_letters(nats_setup)
    assert dead.data == raw
    assert dead.headers is not None and dead.headers[HEADER_REASON] == "body is not JSON"


@pytest.mark.broker("nats")
async def test_nats_dead_letter_near_max_payload_leaves_the_connection_alive(
    nats_setup: NatsSetup,
) -> None:
    """Found: nats-py checks only the body against ``max_payload``; the dead letter adds
    headers to a body that fit, the server answers "maximum payload exceeded" and
    nats-py CLOSES the connection for good (status CLOSED, no reconnect). The adapter
    never learns: readiness says "reconnecting" forever, pumps wait forever, every
    publish fails, and the sidecar stalls without exiting. One oversized bad message
    takes the whole sidecar down."""
    t = NatsTransport.from_url(nats_setup.url("publish_timeout=3"))
    await t.start()
    try:
        topo = nats_setup.topology()
        await t.declare(topo)
        nc = await nats.connect(f"nats://{NATS_HOST}:{NATS_PORT}")
        try:
            body = b"x" * (nc.max_payload - 100)  # fits alone, not with the dead-letter headers
            await nc.jetstream().publish(f"{nats_setup.prefix}.a", body, stream=nats_setup.stream)
        finally:
            await nc.close()
        async with first_delivery(t, topo) as d:
            with contextlib.suppress(TransportError):  # refusing is fine; killing it is not
                await t.dead_letter(d, "body is not JSON")
        assert await wait_ready(t, 10.0), f"transport never came back: {t.readiness.reason}"
        await t.publish([OutgoingMessage(f"{nats_setup.prefix}.a", b"{}", message_id="after")])
    finally:
        await t.close()


@pytest.mark.broker("nats")
async def test_nats_delivery_on_its_last_attempt_given_back_at_stop_is_not_lost(
    nats_setup: NatsSetup,
) -> None:
    """Found: the consumer is created with JetStream ``max_deliver``; a delivery with
    ``final_attempt`` that the transport gives back (engine stop: ``_consume`` nacks
    its read-ahead, ``Fetching.give_back``/``close`` nak what they hold; also the
    engine's conflict and failed-dead-letter nacks) is never delivered again and never
    dead-lettered: JetStream silently drops it from the consumer."""
    url = nats_setup.url("max_deliver=2")
    topo = nats_setup.topology()
    t = NatsTransport.from_url(url)
    await t.start()
    try:
        await t.declare(topo)
        await t.publish([OutgoingMessage(f"{nats_setup.prefix}.a", b'{"n":1}', message_id="m1")])
        stream = t.consume(topo, max_batch=16)
        (d,) = await asyncio.wait_for(anext(stream), WAIT)
        await t.nack([d])  # a transient failure
        (d,) = await asyncio.wait_for(anext(stream), WAIT)
        assert d.final_attempt
        await close_stream(stream)  # the engine stops before handling it: given back
    finally:
        await t.close()
    t = NatsTransport.from_url(url)
    await t.start()
    try:
        stream = t.consume(topo, max_batch=16)
        again: list[Delivery] = []
        try:
            again = await asyncio.wait_for(anext(stream), 5)
        except TimeoutError:
            pass
        finally:
            await close_stream(stream)
    finally:
        await t.close()
    dead = await nats_dead_letters(nats_setup, timeout=1.0)
    assert again or dead, "the message is neither redelivered nor dead-lettered: lost"


# -- RabbitMQ -----------------------------------------------------------------------

AMQP_HOST, AMQP_PORT = "127.0.0.1", 5672
AMQP_ADMIN = f"amqp://guest:guest@{AMQP_HOST}:{AMQP_PORT}/"


@dataclass
class RabbitSetup:
    exchange: str
    group: str
    extra_queues: list[str]

    @property
    def url(self) -> str:
        return f"{AMQP_ADMIN}?exchange={self.exchange}"

    @property
    def group_queue(self) -> str:
        return f"sagawire.{self.group}"

    @property
    def dl_queue(self) -> str:
        return f"{self.exchange}.deadletter"


@pytest.fixture
async def rabbit() -> AsyncIterator[RabbitSetup]:
    require("rabbitmq", AMQP_HOST, AMQP_PORT)
    setup = RabbitSetup(exchange=unique("swbad_"), group=unique("gbad"), extra_queues=[])
    yield setup
    conn = await aio_pika.connect(AMQP_ADMIN)
    async with conn:
        for q in [setup.group_queue, setup.dl_queue, *setup.extra_queues]:
            with contextlib.suppress(Exception):
                async with conn.channel() as ch:
                    await ch.queue_delete(q)
        with contextlib.suppress(Exception):
            async with conn.channel() as ch:
                await ch.exchange_delete(setup.exchange)


async def amqp_publish(
    setup: RabbitSetup, routing_key: str, body: bytes, headers: dict[str, object]
) -> None:
    """Publish as a foreign client would, with aio-pika on its own connection."""
    conn = await aio_pika.connect(AMQP_ADMIN)
    async with conn:
        ch = await conn.channel()
        exchange = await ch.get_exchange(setup.exchange)
        message = aio_pika.Message(body, headers=headers)  # type: ignore[arg-type]
        await exchange.publish(message, routing_key=routing_key)


async def amqp_get_all(queue: str, wait: float = 1.0) -> list[aio_pika.abc.AbstractIncomingMessage]:
    """Everything in ``queue`` after ``wait`` seconds, acked."""
    await asyncio.sleep(wait)
    conn = await aio_pika.connect(AMQP_ADMIN)
    out: list[aio_pika.abc.AbstractIncomingMessage] = []
    async with conn:
        ch = await conn.channel()
        q = await ch.get_queue(queue, ensure=True)
        while (m := await q.get(fail=False, no_ack=True)) is not None:
            out.append(m)
    return out


@pytest.mark.broker("rabbitmq")
async def test_rabbitmq_dead_letter_of_a_cc_message_does_not_kill_publishing(
    rabbit: RabbitSetup,
) -> None:
    """Found: ``_to_delivery`` turns every header into a string, so the AMQP routing
    header ``CC`` (an array the broker keeps on the delivered message) goes back out
    on the dead letter as a longstr. RabbitMQ rejects that publish with 406
    PRECONDITION_FAILED, which closes the transport's one publisher channel. Nothing
    ever reopens it (only a lost *connection* runs ``_on_connect``), readiness stays
    true, and from then on every publish -- commands, outbox relay, other dead
    letters -- fails with "the publish channel is closed (the connection is being
    restored)" until the process is restarted. The error is also mislabelled a
    DeclarationError ("The broker already has this entity with other settings")."""
    t = RabbitTransport.from_url(rabbit.url)
    await t.start()
    try:
        a, b = f"{rabbit.group}.a", f"{rabbit.group}.b"
        topo = Topology(consumes=(a, b), group=rabbit.group)
        await t.declare(topo)
        raw = b"\xff not json"
        await amqp_publish(rabbit, a, raw, {"CC": [b]})  # sender-selected distribution
        async with first_delivery(t, topo) as d:
            await t.dead_letter(d, "body is not JSON")
            await t.ack([d])
        await t.publish([OutgoingMessage(b, b"{}", message_id="after")])
    finally:
        await t.close()
    (dead,) = await amqp_get_all(rabbit.dl_queue)
    assert dead.body == raw
    assert dead.headers[HEADER_REASON] == "body is not JSON"
    # The copy must go to the dead-letter queue only: a dead letter carrying a working
    # CC would also land back on the consumed destination ``b`` and loop.
    left = await amqp_get_all(rabbit.group_queue, wait=0.5)
    assert [m.body for m in left] == [b"{}"]


@pytest.mark.broker("rabbitmq")
async def test_rabbitmq_publisher_channel_comes_back_after_a_channel_error(
    rabbit: RabbitSetup,
) -> None:
    """Found (the root of the CC finding, any channel-level error will do): once the
    broker closes the publisher channel with the connection still up, publishing
    never works again and readiness stays true. Here the exchange vanishes under a
    running sidecar (an operator, a definitions reset) and is declared again: the
    transport must publish again, or at least say it is not ready."""
    t = RabbitTransport.from_url(rabbit.url)
    await t.start()
    try:
        a = f"{rabbit.group}.a"
        await t.declare(Topology(consumes=(a,), group=rabbit.group))
        conn = await aio_pika.connect(AMQP_ADMIN)
        async with conn:
            async with conn.channel() as ch:
                await ch.exchange_delete(rabbit.exchange)
            with pytest.raises(TransportError):  # 404: the broker closes the channel
                await t.publish([OutgoingMessage(a, b"{}", message_id="lost")])
            async with conn.channel() as ch:
                await ch.declare_exchange(
                    rabbit.exchange, aio_pika.ExchangeType.TOPIC, durable=True
                )
        deadline = asyncio.get_running_loop().time() + 10.0
        last = ""
        while asyncio.get_running_loop().time() < deadline:
            try:
                await t.publish([OutgoingMessage(a, b"{}", message_id="again")])
                break
            except TransportError as exc:
                last = str(exc)
            if not t.readiness.ready:
                break  # honest: not ready, and says why
            await asyncio.sleep(0.5)
        else:
            pytest.fail(f"publishing dead for good while readiness says ready: {last}")
    finally:
        await t.close()


@pytest.mark.broker("rabbitmq")
@pytest.mark.parametrize("header", ["content-type", "sagawire-message-id"])
async def test_rabbitmq_dead_letters_a_message_with_an_overlong_property_header(
    rabbit: RabbitSetup, header: str
) -> None:
    """Found: ``_properties`` moves the ``content-type`` header and the message id
    (``sagawire-message-id``, which ``_to_delivery`` takes from a header when the
    publisher set one) into AMQP shortstr properties, limited to 255 bytes. Headers are
    longstr, so a publisher may send longer ones; the dead letter then fails with
    "TypeError: string exceeds maximum length of 255 bytes" (as a *retryable*
    TransportError) on every attempt, and the engine requeues the message every
    second, forever: never handled, never dead-lettered."""
    t = RabbitTransport.from_url(rabbit.url)
    await t.start()
    try:
        a = f"{rabbit.group}.a"
        topo = Topology(consumes=(a,), group=rabbit.group)
        await t.declare(topo)
        raw = b"not json"
        await amqp_publish(rabbit, a, raw, {header: "v" * 300})
        async with first_delivery(t, topo) as d:
            await t.dead_letter(d, "body is not JSON")
            await t.ack([d])
    finally:
        await t.close()
    (dead,) = await amqp_get_all(rabbit.dl_queue)
    assert dead.body == raw
    assert dead.headers[HEADER_ORIGIN] == a


@pytest.mark.broker("rabbitmq")
async def test_rabbitmq_engine_keeps_running_sagas_after_a_bad_cc_message(
    rabbit: RabbitSetup,
) -> None:
    """The user's view of the CC finding: the real engine dead-letters one malformed
    event that carried a CC header, and after that no saga gets its commands."""
    watch = f"{rabbit.exchange}.watch"
    rabbit.extra_queues.append(watch)
    conn = await aio_pika.connect(AMQP_ADMIN)
    async with conn:
        ch = await conn.channel()
        exchange = await ch.declare_exchange(
            rabbit.exchange, aio_pika.ExchangeType.TOPIC, durable=True
        )
        q = await ch.declare_queue(watch, durable=True)
        await q.bind(exchange, routing_key="inventory.reserve")
    store = MemoryStore()
    await store.open()
    transport = RabbitTransport.from_url(rabbit.url)
    client = RabbitTransport.from_url(rabbit.url)
    await transport.start()
    await client.start()
    stopping = asyncio.Event()
    engine = Engine(
        load_sagas("sagas.order"),
        store,
        transport,
        config=EngineConfig(group=rabbit.group, retry_backoff_max=0.2),
    )
    running: asyncio.Future[None] | None = None
    try:
        await engine.prepare()
        running = asyncio.ensure_future(engine.run(stopping))
        await amqp_publish(rabbit, "order.placed", b"{not json", {"CC": ["order.audit"]})
        await asyncio.sleep(1.0)
        await client.publish([order_placed("o-after", source="tests/bad-input")])
        deadline = asyncio.get_running_loop().time() + WAIT
        commands: list[aio_pika.abc.AbstractIncomingMessage] = []
        while not commands and asyncio.get_running_loop().time() < deadline:
            commands = await amqp_get_all(watch, wait=0.3)
        assert commands, "no inventory.reserve for a good order after one bad CC message"
        assert not running.done()
    finally:
        if running is not None:
            await stop_engine(running, stopping, transport)
        await client.close()
        await transport.close()
        await store.close()


# -- Kafka --------------------------------------------------------------------------


@pytest.fixture
async def kafka_prefix(kafka_broker: Tansu) -> AsyncIterator[str]:
    prefix = unique("swbad")
    yield prefix
    await delete_topics(kafka_broker, prefix)


async def kafka_send(
    broker: Tansu, topic: str, value: bytes | None, headers: list[tuple[str, bytes | None]]
) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=f"127.0.0.1:{broker.port}")
    await producer.start()
    try:
        await producer.send_and_wait(topic, value, headers=headers)
    finally:
        await producer.stop()


@pytest.mark.broker("kafka")
async def test_kafka_record_with_a_null_header_value_is_delivered_not_a_crash(
    kafka_broker: Tansu, kafka_prefix: str
) -> None:
    """Found: ``ConsumerRun._delivery`` decodes every header value, but Kafka header
    values may be null (Java ``new RecordHeader("trace", null)``; aiokafka yields
    ``None``). ``None.decode`` raises AttributeError out of ``consume()``; the engine's
    reader dies, ``Engine.run`` raises, the process exits, and after the restart the
    same uncommitted record kills it again: a crash loop that also blocks every later
    record of that partition."""
    url = f"{kafka_broker.url}&topic_prefix={kafka_prefix}."
    t = KafkaTransport.from_url(url)
    await t.start()
    try:
        topo = Topology(consumes=("a",), group=f"{kafka_prefix}-g")
        await t.declare(topo)
        raw = b"not json"
        await kafka_send(kafka_broker, f"{kafka_prefix}.a", raw, [("trace", None), ("x", b"1")])
        async with first_delivery(t, topo, timeout=30.0) as d:
            assert d.body == raw
            await t.dead_letter(d, "body is not JSON")
            await t.ack([d])
    finally:
        await t.close()
