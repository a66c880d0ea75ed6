"""Raw participant clients: what a real service in another codebase would use.

Each client speaks to its broker with the plain driver (aiokafka, nats-py
JetStream, aio-pika) and none of sagawire's adapters, so the end-to-end tests
prove that sagawire interoperates with ordinary code, not only with itself. A
client does three things for the driver:

* names the broker resources of one test (``broker_url`` for the sidecar, with a
  fresh topic prefix / stream and subject prefix / exchange) and deletes them in
  :meth:`RawClient.close`;
* publishes bytes to a destination (a CloudEvent ``type``) the way a participant
  would;
* after :meth:`RawClient.start`, puts every message on the watched destinations
  into :attr:`RawClient.incoming` as a :class:`Seen`, headers decoded to text;
* :meth:`ServiceClient.subscribe` gives a service a consumer of its own (a Kafka
  consumer group, NATS durable consumers, a RabbitMQ queue) that hands each message
  to the service and acknowledges it after, as a real service would consume beside
  the sidecar.

The sidecar declares the topology (it owns it); clients start after ``/readyz``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import aio_pika
import nats
import nats.js.errors
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from nats.aio.msg import Msg

CONTENT_TYPE = "application/cloudevents+json"
DEADLETTER = "sagawire.deadletter"


@dataclass(frozen=True)
class Seen:
    """One message a participant received."""

    destination: str
    body: bytes
    headers: Mapping[str, str]
    at: float


class RawClient(Protocol):
    broker: str
    broker_url: str
    group: str
    incoming: asyncio.Queue[Seen]

    async def start(self, watch: Sequence[str]) -> None: ...

    async def publish(self, destination: str, body: bytes, *, key: str | None = None) -> None: ...

    async def close(self) -> None: ...


Handler = Callable[[Seen], Awaitable[None]]


class ServiceClient(RawClient, Protocol):
    failures: list[BaseException]
    """What ended a :meth:`subscribe` consumer (an exception from its handler)."""

    async def subscribe(self, name: str, destinations: Sequence[str], handle: Handler) -> None:
        """Consume ``destinations`` as service ``name``, with a consumer identity of its
        own (never the sidecar's); each message goes to ``handle``, then is acked."""
        ...


def _text(value: object) -> str:
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode("utf-8", "replace")
    return str(value)


def _token() -> str:
    return uuid.uuid4().hex[:10]


# -- NATS JetStream -----------------------------------------------------------------

NATS_STREAM_PREFIX = "SWE2E_"
"""Streams of these tests are ``SWE2E_<unix time>_<hex>``: a leftover of a killed
run is recognisable, and old enough to delete without touching a run in progress."""
NATS_LEFTOVER_AGE = 900.0


class NatsClient:
    """A participant on JetStream: publishes with ``js.publish`` and reads every
    subject of the test (``<prefix>.>``) through one ordered push consumer."""

    broker = "nats"

    def __init__(self, host: str = "127.0.0.1", port: int = 4222) -> None:
        self.server = f"nats://{host}:{port}"
        self.stream = f"{NATS_STREAM_PREFIX}{int(time.time())}_{_token()}"
        self.prefix = f"e2e.{self.stream.lower()}"
        self.group = f"e2e-{_token()}"
        # ack_wait=5: what a kill -9 left unacked comes back in 5 s, not 30.
        self.broker_url = (
            f"{self.server}?stream={self.stream}&subject_prefix={self.prefix}&ack_wait=5"
        )
        self.incoming: asyncio.Queue[Seen] = asyncio.Queue()
        self.failures: list[BaseException] = []
        self._nc: Any = None
        self._js: Any = None
        self._watch: frozenset[str] = frozenset()
        self._pullers: list[asyncio.Task[None]] = []

    async def connect(self) -> NatsClient:
        self._nc = await nats.connect(self.server)
        self._js = self._nc.jetstream()
        try:
            await self._delete_leftovers()
        except BaseException:
            await self._nc.close()
            raise
        return self

    async def _delete_leftovers(self) -> None:
        now = time.time()
        for info in await self._js.streams_info():
            name = info.config.name
            if not name.startswith(NATS_STREAM_PREFIX):
                continue
            stamp = name[len(NATS_STREAM_PREFIX) :].partition("_")[0]
            if stamp.isdigit() and now - int(stamp) > NATS_LEFTOVER_AGE:
                with contextlib.suppress(nats.js.errors.NotFoundError):
                    await self._js.delete_stream(name)

    async def start(self, watch: Sequence[str]) -> None:
        self._watch = frozenset(watch)
        await self._js.subscribe(
            f"{self.prefix}.>", cb=self._on_message, stream=self.stream, ordered_consumer=True
        )

    async def _on_message(self, msg: Msg) -> None:
        destination = msg.subject.removeprefix(f"{self.prefix}.")
        if destination in self._watch:
            headers = {k: _text(v) for k, v in (msg.headers or {}).items()}
            self.incoming.put_nowait(Seen(destination, msg.data, headers, time.monotonic()))

    async def subscribe(self, name: str, destinations: Sequence[str], handle: Handler) -> None:
        """Durable pull consumers ``<name>__<destination>`` on the test's stream, one per
        destination (nats-server 2.9 filters a consumer on one subject only), from the
        stream's first message; each acked after ``handle``."""
        for destination in destinations:
            durable = f"{name}__{destination.replace('.', '_')}"
            sub = await self._js.pull_subscribe(
                f"{self.prefix}.{destination}", durable=durable, stream=self.stream
            )
            self._pullers.append(asyncio.create_task(self._pull(sub, destination, handle)))

    async def _pull(self, sub: Any, destination: str, handle: Handler) -> None:
        try:
            while True:
                try:
                    msgs = await sub.fetch(batch=64, timeout=0.5)
                except TimeoutError:
                    continue
                for msg in msgs:
                    headers = {k: _text(v) for k, v in (msg.headers or {}).items()}
                    await handle(Seen(destination, msg.data, headers, time.monotonic()))
                    await msg.ack()
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            self.failures.append(exc)
            raise

    async def publish(self, destination: str, body: bytes, *, key: str | None = None) -> None:
        # No Nats-Msg-Id on purpose: a duplicate must reach the sidecar, whose
        # inbox (not JetStream's de-duplication) is under test.
        await self._js.publish(
            f"{self.prefix}.{destination}", body, headers={"content-type": CONTENT_TYPE}
        )

    async def close(self) -> None:
        await _cancel(self._pullers)
        if self._nc is None:
            return
        with contextlib.suppress(nats.js.errors.NotFoundError):
            await self._js.delete_stream(self.stream)
        await self._nc.close()
        self._nc = None


# -- RabbitMQ -------------------------------------------------------------------------


class RabbitClient:
    """A participant on RabbitMQ: its own exclusive queue bound to what it watches on
    the test's exchange; dead letters are read from the sidecar's durable
    ``<exchange>.deadletter`` queue, as an operator's tool would."""

    broker = "rabbitmq"

    def __init__(self, host: str = "127.0.0.1", port: int = 5672) -> None:
        self.server = f"amqp://guest:guest@{host}:{port}/"
        self.exchange_name = f"e2e_{_token()}"
        self.group = f"e2e-{_token()}"
        self.broker_url = f"{self.server}?exchange={self.exchange_name}"
        self.incoming: asyncio.Queue[Seen] = asyncio.Queue()
        self.failures: list[BaseException] = []
        self._conn: Any = None
        self._channel: Any = None
        self._exchange: Any = None
        self._consumers: list[tuple[Any, str]] = []
        self._services: list[asyncio.Task[None]] = []
        self._service_queues: list[str] = []

    async def connect(self) -> RabbitClient:
        self._conn = await aio_pika.connect(self.server)
        self._channel = await self._conn.channel(publisher_confirms=True)
        return self

    async def start(self, watch: Sequence[str]) -> None:
        ch = self._channel
        self._exchange = await ch.declare_exchange(
            self.exchange_name, aio_pika.ExchangeType.TOPIC, durable=True
        )
        mine = await ch.declare_queue(exclusive=True, auto_delete=True)
        for destination in watch:
            if destination != DEADLETTER:
                await mine.bind(self._exchange, routing_key=destination)
        self._consumers.append((mine, await mine.consume(self._on_message, no_ack=True)))
        if DEADLETTER in watch:
            dead = await ch.get_queue(f"{self.exchange_name}.deadletter", ensure=True)
            self._consumers.append((dead, await dead.consume(self._on_message, no_ack=True)))

    async def _on_message(self, message: aio_pika.abc.AbstractIncomingMessage) -> None:
        headers = {k: _text(v) for k, v in (message.headers or {}).items()}
        if message.content_type:
            headers["content-type"] = message.content_type
        if message.message_id:
            headers["message-id"] = message.message_id
        self.incoming.put_nowait(
            Seen(message.routing_key or "", message.body, headers, time.monotonic())
        )

    async def subscribe(self, name: str, destinations: Sequence[str], handle: Handler) -> None:
        """A durable queue ``<exchange>.<name>`` bound to ``destinations`` on a channel
        of its own; messages handled one at a time, each acked after ``handle``."""
        channel = await self._conn.channel()
        await channel.set_qos(prefetch_count=64)
        exchange = await channel.declare_exchange(
            self.exchange_name, aio_pika.ExchangeType.TOPIC, durable=True
        )
        queue_name = f"{self.exchange_name}.{name}"
        queue = await channel.declare_queue(queue_name, durable=True)
        self._service_queues.append(queue_name)
        for destination in destinations:
            await queue.bind(exchange, routing_key=destination)
        self._services.append(asyncio.create_task(self._serve(queue, handle)))

    async def _serve(self, queue: Any, handle: Handler) -> None:
        try:
            async with queue.iterator() as messages:
                async for message in messages:
                    headers = {k: _text(v) for k, v in (message.headers or {}).items()}
                    seen = Seen(message.routing_key or "", message.body, headers, time.monotonic())
                    await handle(seen)
                    await message.ack()
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            self.failures.append(exc)
            raise

    async def publish(self, destination: str, body: bytes, *, key: str | None = None) -> None:
        await self._exchange.publish(
            aio_pika.Message(
                body,
                content_type=CONTENT_TYPE,
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            ),
            routing_key=destination,
        )

    async def close(self) -> None:
        await _cancel(self._services)
        if self._conn is None:
            return
        ch = self._channel
        for consumer, tag in self._consumers:  # before deleting: no "cancelled by broker"
            with contextlib.suppress(Exception):
                await consumer.cancel(tag)
        queues = (f"sagawire.{self.group}", f"{self.exchange_name}.deadletter")
        for queue in (*queues, *self._service_queues):
            with contextlib.suppress(Exception):
                await ch.queue_delete(queue)
        with contextlib.suppress(Exception):
            await ch.exchange_delete(self.exchange_name)
        await self._conn.close()
        self._conn = None


# -- Kafka ----------------------------------------------------------------------------


class KafkaClient:
    """A participant on Kafka: a plain producer, and a consumer without a group that
    ``assign()``s every partition of the watched topics (no 5 s group join)."""

    broker = "kafka"

    def __init__(self, bootstrap: str) -> None:
        self.bootstrap = bootstrap
        self.prefix = f"e2e.{_token()}."
        self.group = f"e2e-{_token()}"
        # A 6 s session (Kafka's minimum): after the kill -9 the group waits that long
        # for the dead member before the restarted sidecar gets its partitions.
        self.broker_url = f"kafka://{bootstrap}?topic_prefix={self.prefix}&session_timeout_ms=6000"
        self.incoming: asyncio.Queue[Seen] = asyncio.Queue()
        self.failures: list[BaseException] = []
        self._producer: Any = None
        self._consumer: Any = None
        self._poller: asyncio.Task[None] | None = None
        self._topics: list[str] = []
        self._services: list[asyncio.Task[None]] = []
        self._service_consumers: list[Any] = []

    async def connect(self) -> KafkaClient:
        self._producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, acks="all")
        await self._producer.start()
        return self

    async def start(self, watch: Sequence[str]) -> None:
        self._topics = [self.prefix + d for d in watch]
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=50,
        )
        await consumer.start()
        self._consumer = consumer
        await consumer.topics()  # load metadata for every topic the sidecar declared
        partitions = []
        for topic in self._topics:
            found = consumer.partitions_for_topic(topic)
            assert found, f"kafka topic {topic!r} was not declared by the sidecar"
            partitions += [TopicPartition(topic, p) for p in sorted(found)]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        self._poller = asyncio.create_task(self._poll())

    async def _poll(self) -> None:
        while True:
            batches = await self._consumer.getmany(timeout_ms=200, max_records=500)
            for tp, records in batches.items():
                destination = tp.topic.removeprefix(self.prefix)
                for r in records:
                    headers = {k: _text(v) for k, v in (r.headers or ())}
                    self.incoming.put_nowait(
                        Seen(destination, r.value or b"", headers, time.monotonic())
                    )

    async def subscribe(self, name: str, destinations: Sequence[str], handle: Handler) -> None:
        """A consumer group ``<group>.<name>`` of its own on ``destinations``' topics,
        from the earliest offset; offsets committed after ``handle`` took a batch.
        A 2 s session: Tansu holds a group join about that long."""
        consumer = AIOKafkaConsumer(
            *(self.prefix + d for d in destinations),
            bootstrap_servers=self.bootstrap,
            group_id=f"{self.group}.{name}",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            session_timeout_ms=2000,
            heartbeat_interval_ms=500,
            fetch_max_wait_ms=50,
        )
        await consumer.start()
        self._service_consumers.append(consumer)
        self._services.append(asyncio.create_task(self._consume(consumer, handle)))

    async def _consume(self, consumer: Any, handle: Handler) -> None:
        try:
            while True:
                batches = await consumer.getmany(timeout_ms=200, max_records=200)
                for tp, records in batches.items():
                    destination = tp.topic.removeprefix(self.prefix)
                    for r in records:
                        headers = {k: _text(v) for k, v in (r.headers or ())}
                        await handle(Seen(destination, r.value or b"", headers, time.monotonic()))
                if batches:
                    await consumer.commit()
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            self.failures.append(exc)
            raise

    async def publish(self, destination: str, body: bytes, *, key: str | None = None) -> None:
        await self._producer.send_and_wait(
            self.prefix + destination,
            body,
            key=key.encode() if key is not None else None,
            headers=[("content-type", CONTENT_TYPE.encode())],
        )

    async def close(self) -> None:
        await _cancel(self._services)
        for consumer in self._service_consumers:
            with contextlib.suppress(Exception):
                await consumer.stop()
        if self._poller is not None:
            self._poller.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._poller
        if self._consumer is not None:
            await self._consumer.stop()
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None
        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap)
        with contextlib.suppress(Exception):
            await admin.start()
            existing = [t for t in await admin.list_topics() if t.startswith(self.prefix)]
            if existing:
                await admin.delete_topics(existing)
        with contextlib.suppress(Exception):
            await admin.close()


async def _cancel(tasks: list[asyncio.Task[None]]) -> None:
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
    tasks.clear()
