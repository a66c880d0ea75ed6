"""RabbitMQ transport (aio-pika): one topic exchange, one durable queue per group.

URL: ``amqp://user:pass@host:port/vhost?exchange=sagawire`` or ``amqps://...?cafile=``;
every option and the names on the broker are described in
:mod:`adapters._rabbitmq_config`. How the pieces fit:

- **publish**: :mod:`adapters._rabbitmq_publish`, on a connection of its own:
  persistent messages, publisher confirms, a window pipelined at a time, in order; a
  message the broker refuses for good is named in a
  :class:`~schemas.errors.PublishRefused` once the others are confirmed.
- **consume**: :mod:`adapters._rabbitmq_consumer` (prefetch window, batches, a
  channel per iterator that is replaced after a reconnect).
- **ack/nack**: manual, after the engine committed; consecutive acks go out as one
  ``multiple`` frame. RabbitMQ has no delayed requeue, so ``nack(delay=d)`` holds
  the delivery unsettled for ``d`` seconds and then requeues it. A held delivery
  counts against the prefetch window; the engine only delays a few at a time.
- **holding**: a delivery left unacked costs nothing until the broker's
  ``consumer_timeout`` (30 minutes by default; RabbitMQ then closes the channel and
  requeues what it held), so the engine may hold deliveries for minutes while its
  store is down. A process that dies (kill -9) loses its TCP connection, and the
  broker requeues its unacked deliveries at once: another consumer has them within
  its next fetch.
- **reconnect**: :mod:`adapters._rabbitmq_link`, one link per connection (consume,
  publish); after a reconnect the topology is declared again before consumers
  restart, and readiness is false until both connections are up.
- **delivery_count**: classic queues do not count redeliveries, so it is 2 when
  the broker marks a delivery redelivered; quorum queues (``?queue_type=quorum``)
  send ``x-delivery-count``, which is used when present.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime

import aio_pika
from aio_pika.abc import AbstractConnection, AbstractIncomingMessage, AbstractQueue

from adapters._rabbitmq_config import RabbitConfig
from adapters._rabbitmq_consumer import Consumer, Handle, Lane
from adapters._rabbitmq_errors import translate
from adapters._rabbitmq_link import Link
from adapters._rabbitmq_publish import DRIVER_ERRORS, HEADER_KEY, Publisher
from adapters.base import (
    DEADLETTER,
    HEADER_CONTENT_TYPE,
    HEADER_MESSAGE_ID,
    Delivery,
    OutgoingMessage,
    Readiness,
    Topology,
    dead_letter_message,
    in_binding,
)
from schemas.binary import AMQP
from schemas.errors import TransportError

__all__ = ["HEADER_KEY", "RabbitTransport"]


class RabbitTransport:
    """The :class:`~adapters.base.Transport` for RabbitMQ."""

    partitionable = True
    """Carries partitioned mode (:mod:`orchestrator.engine.partitioning`): events are
    published under their type, so replicas need the forwarding hop to own instances."""

    def __init__(self, config: RabbitConfig) -> None:
        self.config = config
        self._link = Link(config, self._on_connect, role="consume")
        self._publisher = Publisher(config)
        self._topologies: dict[Topology, None] = {}
        self._consumers: set[Consumer] = set()
        self._delayed: set[asyncio.Task[None]] = set()
        self._started = False

    @classmethod
    def from_url(cls, url: str) -> RabbitTransport:
        return cls(RabbitConfig.from_url(url))

    def __repr__(self) -> str:
        return f"RabbitTransport({self.config.display_url!r})"

    # -- lifecycle ----------------------------------------------------------------

    async def start(self) -> None:
        await self._publisher.link.start()
        try:
            await self._link.start()
        except BaseException:
            await self._publisher.link.close()
            raise
        self._started = True

    async def close(self) -> None:
        """End the iterators, drop held nacks, close the connection: the broker
        requeues everything unacked."""
        self._started = False
        for consumer in self._consumers:
            consumer.stop()
        for task in self._delayed:
            task.cancel()
        await asyncio.gather(*self._delayed, return_exceptions=True)
        await self._link.close()
        await self._publisher.link.close()

    @property
    def readiness(self) -> Readiness:
        if not self._started:
            return Readiness(False, "rabbitmq transport not started")
        consuming = self._link.readiness
        return consuming if not consuming.ready else self._publisher.link.readiness

    async def _on_connect(self, conn: AbstractConnection) -> None:
        """Run on every (re)connect of the consuming connection, before readiness
        turns true: the topology again, then the consumers."""
        doing = f"declaring exchange {self.config.exchange!r}"
        try:
            for topology in list(self._topologies):
                doing = f"declaring queues for group {topology.group!r}"
                await self._declare_on(conn, topology)
            for consumer in list(self._consumers):
                doing = f"consuming from queue {consumer.queue_name!r}"
                await consumer.attach(conn)
        except DRIVER_ERRORS as exc:
            raise translate(exc, doing, self.config) from None

    # -- topology -----------------------------------------------------------------

    async def declare(self, topology: Topology) -> None:
        conn = await self._link.connection()
        try:
            await self._declare_on(conn, topology)
        except DRIVER_ERRORS as exc:
            doing = f"declaring queues for group {topology.group!r}"
            raise translate(exc, doing, self.config) from None
        self._topologies[topology] = None

    async def _declare_on(self, conn: AbstractConnection, topology: Topology) -> None:
        """Exchange, the group's queue bound to each consumed destination, and the
        dead-letter queue. A throwaway channel: a mismatch (406) closes only it."""
        cfg = self.config
        async with conn.channel(publisher_confirms=False) as channel:
            exchange = await channel.declare_exchange(
                cfg.exchange, aio_pika.ExchangeType.TOPIC, durable=True
            )
            bindings = [(cfg.deadletter_queue, DEADLETTER)]
            if topology.consumes:
                bindings += [(cfg.queue_name(topology.group), d) for d in topology.consumes]
            declared: dict[str, AbstractQueue] = {}
            for queue_name, destination in bindings:
                queue = declared.get(queue_name)
                if queue is None:
                    arguments = cfg.queue_arguments
                    if topology.exclusive and queue_name != cfg.deadletter_queue:
                        arguments = {**(arguments or {}), "x-single-active-consumer": True}
                    queue = declared[queue_name] = await channel.declare_queue(
                        queue_name, durable=True, arguments=arguments
                    )
                await queue.bind(exchange, routing_key=destination)

    # -- publishing ---------------------------------------------------------------

    async def publish(self, messages: Sequence[OutgoingMessage]) -> None:
        self._require_started()
        if messages:  # binary mode: cloudEvents_ application properties (headers)
            await self._publisher.publish(in_binding(messages, AMQP))

    async def dead_letter(self, delivery: Delivery, reason: str) -> None:
        await self.publish([dead_letter_message(delivery, reason)])

    # -- consuming ----------------------------------------------------------------

    async def consume(
        self, topology: Topology, *, max_batch: int = 256
    ) -> AsyncIterator[list[Delivery]]:
        self._require_started()
        if topology not in self._topologies:
            await self.declare(topology)
        consumer = Consumer(self.config.queue_name(topology.group), self.config.prefetch)
        # Registered first: a reconnect from now on attaches it; otherwise we do.
        self._consumers.add(consumer)
        try:
            await self._attach(consumer)
            while self._started:
                items = await consumer.batch(max_batch)
                if items is None or not self._started:
                    return
                yield [_to_delivery(lane, message) for lane, message in items]
        finally:
            self._consumers.discard(consumer)
            await consumer.retire()

    async def _attach(self, consumer: Consumer) -> None:
        try:
            conn = await self._link.connection()
        except TransportError:
            return  # down for now; the reconnect attaches the registered consumer
        try:
            await consumer.attach(conn)
        except DRIVER_ERRORS as exc:
            if not self._link.readiness.ready:
                return  # lost the connection meanwhile; same as above
            doing = f"consuming from queue {consumer.queue_name!r}"
            raise translate(exc, doing, self.config) from None

    async def ack(self, deliveries: Sequence[Delivery]) -> None:
        for lane, tags in _by_lane(deliveries).items():
            await lane.settle(tags, requeue=None)

    async def nack(self, deliveries: Sequence[Delivery], *, delay: float = 0.0) -> None:
        by_lane = _by_lane(deliveries)
        if delay <= 0:
            for lane, tags in by_lane.items():
                await lane.settle(tags, requeue=True)
            return
        task = asyncio.create_task(self._nack_later(by_lane, delay))
        self._delayed.add(task)
        task.add_done_callback(self._delayed.discard)

    async def _nack_later(self, by_lane: dict[Lane, list[int]], delay: float) -> None:
        await asyncio.sleep(delay)
        for lane, tags in by_lane.items():
            await lane.settle(tags, requeue=True)

    def _require_started(self) -> None:
        if not self._started:
            raise TransportError(
                f"rabbitmq transport for {self.config.display_url} is not started; "
                "call start() first"
            )


def _by_lane(deliveries: Sequence[Delivery]) -> dict[Lane, list[int]]:
    grouped: defaultdict[Lane, list[int]] = defaultdict(list)
    for d in deliveries:
        if isinstance(d.handle, Handle):
            grouped[d.handle.lane].append(d.handle.tag)
    return grouped


def _to_delivery(lane: Lane, message: AbstractIncomingMessage) -> Delivery:
    headers = {k: _text(v) for k, v in (message.headers or {}).items()}
    key = headers.pop(HEADER_KEY, None)
    count = headers.pop("x-delivery-count", None)
    if message.content_type:
        headers[HEADER_CONTENT_TYPE] = message.content_type
    if message.message_id:
        headers.setdefault(HEADER_MESSAGE_ID, message.message_id)
    if count is not None and count.isdigit():
        delivery_count = int(count) + 1
    else:
        delivery_count = 2 if message.redelivered else 1
    return Delivery(
        destination=message.routing_key or "",
        body=message.body,
        headers=headers,
        key=key,
        delivery_count=delivery_count,
        handle=Handle(lane, message.delivery_tag or 0),
    )


def _text(value: object) -> str:
    """A header value as text. An AMQP timestamp, a boolean (as a foreign publisher's
    binary-mode CloudEvent may carry ``cloudEvents_time``) in its CloudEvents
    canonical string: RFC 3339, ``true``/``false``."""
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode("utf-8", "replace")
    if isinstance(value, datetime):
        return (value if value.tzinfo else value.replace(tzinfo=UTC)).isoformat()
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
