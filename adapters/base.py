"""The Transport protocol: what the engine needs from a broker, and nothing about sagas.

A transport moves opaque bytes between named destinations (a Kafka topic, a NATS
subject, a RabbitMQ routing key). The engine calls, in this order:

1. :meth:`Transport.start` — connect (raise :class:`TransportError` if unreachable);
2. :meth:`Transport.declare` — create topics/streams/queues/bindings idempotently;
3. :meth:`Transport.consume` — an async iterator of *batches* of deliveries;
4. :meth:`Transport.publish` — send messages, returning once the broker confirmed them;
5. :meth:`Transport.ack` — only after the store committed what the deliveries caused;
   :meth:`Transport.nack` — give a delivery back for redelivery (optionally delayed);
   :meth:`Transport.dead_letter` — copy a delivery's original bytes to
   :data:`DEADLETTER` with the reason in headers (the caller acks afterwards);
6. :meth:`Transport.close`.

Delivery is at-least-once: anything not acked is delivered again, after a
reconnect or a restart. The engine makes the *effect* exactly-once with its inbox.

Two promises let the engine ride out a broken world without spending a message's
delivery budget:

* **Holding is free.** A delivery handed out and neither acked nor nacked stays the
  engine's for as long as the process lives (the engine holds what it has while its
  store is down, possibly for minutes): it is not delivered again, and it does not
  count as another delivery (``delivery_count``, JetStream ``max_deliver``). Each
  transport keeps its lease alive (NATS: in-progress acks; Kafka: the group
  membership, polled with paused partitions; RabbitMQ: unacked deliveries are free
  until the broker's ``consumer_timeout``, 30 minutes by default). When the process
  dies, the broker gives held deliveries to another consumer soon: each transport
  says how soon.
* **Refusals are named.** A message the broker refuses for good (too large, an
  invalid destination or header) does not fail the messages published with it:
  :meth:`Transport.publish` publishes the others and raises
  :class:`~schemas.errors.PublishRefused` naming each refused message and the broker's
  reason. Anything that may succeed later (connection lost, no confirm, a timeout) is
  a retryable :class:`~schemas.errors.TransportError` for the whole call, and the
  caller publishes the same list again: messages that had landed may then land twice
  (consumers de-duplicate on the message id).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol, runtime_checkable

from schemas.binary import NEUTRAL_SPECVERSION, Binding, to_binding

__all__ = [
    "DEADLETTER",
    "HEADER_CONTENT_TYPE",
    "HEADER_MESSAGE_ID",
    "HEADER_ORIGIN",
    "HEADER_REASON",
    "Delivery",
    "OutgoingMessage",
    "Readiness",
    "Topology",
    "Transport",
    "dead_letter_message",
    "in_binding",
]

DEADLETTER = "sagawire.deadletter"
"""Destination of messages that can never be handled."""

HEADER_REASON = "sagawire-reason"
HEADER_ORIGIN = "sagawire-original-destination"
HEADER_MESSAGE_ID = "sagawire-message-id"
HEADER_CONTENT_TYPE = "content-type"


@dataclass(slots=True)  # not frozen: built per message, frozen __init__ costs 4x
class OutgoingMessage:
    """One message to publish. ``key`` keeps one saga instance's messages in order
    where the broker partitions (Kafka record key); ``message_id`` lets brokers that
    de-duplicate (JetStream ``Nats-Msg-Id``) do so."""

    destination: str
    body: bytes
    message_id: str
    key: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(slots=True, eq=False)
class Delivery:
    """One received message. ``handle`` is the adapter's private ack token."""

    destination: str
    body: bytes
    headers: Mapping[str, str]
    key: str | None = None
    delivery_count: int = 1
    handle: object = None
    final_attempt: bool = False
    """The broker will not deliver this message again (JetStream ``max_deliver``): the
    engine dead-letters it rather than nack it when it cannot be handled now."""


@dataclass(frozen=True, slots=True)
class Topology:
    """What the sidecar needs on the broker: the destinations it consumes (as consumer
    ``group``) and the ones it publishes to. :data:`DEADLETTER` is always declared.

    Produced destinations are declared where the broker has such a thing (Kafka topics,
    JetStream subjects); on RabbitMQ they are routing keys, and a message routed to a
    key no queue is bound to is dropped unless ``?mandatory=1``: participants declare
    their own queues."""

    consumes: tuple[str, ...]
    produces: tuple[str, ...] = ()
    group: str = "sagawire"
    exclusive: bool = False
    """At most one consumer of the group takes messages at a time, the others waiting
    to take over (partitioned mode, :mod:`orchestrator.engine.partitioning`): RabbitMQ
    declares the queue with ``x-single-active-consumer``; elsewhere the store's lease
    alone decides who reads."""

    @property
    def all_destinations(self) -> tuple[str, ...]:
        seen = dict.fromkeys((*self.consumes, *self.produces, DEADLETTER))
        return tuple(seen)


@dataclass(frozen=True, slots=True)
class Readiness:
    """Whether the transport can move messages now; ``reason`` says why not."""

    ready: bool
    reason: str = ""


@runtime_checkable
class Transport(Protocol):
    """A broker connection. Implementations: memory, kafka, nats, rabbitmq."""

    async def start(self) -> None:
        """Connect. Raises :class:`~schemas.errors.TransportError` when unreachable."""

    async def close(self) -> None:
        """Stop consuming, give back unacked deliveries, disconnect."""

    async def declare(self, topology: Topology) -> None:
        """Create what ``topology`` needs, idempotently; DeclarationError on a mismatch."""

    def consume(self, topology: Topology, *, max_batch: int = 256) -> AsyncIterator[list[Delivery]]:
        """Batches of deliveries for ``topology.consumes`` as ``topology.group``.

        Ends when the transport closes. Survives reconnects without ending. The caller
        may stop taking batches for as long as it likes (the engine does while its
        store is down): the transport stays a live consumer meanwhile and keeps what it
        handed out leased to the caller (see the module docstring)."""
        ...

    async def publish(self, messages: Sequence[OutgoingMessage]) -> None:
        """Publish in order; return once the broker has confirmed every message.

        Raises :class:`~schemas.errors.PublishRefused` when the broker refused some
        messages for good: every other message of the call was published and
        confirmed, in order, and ``refused`` maps each refused ``message_id`` to the
        broker's reason. Raises a retryable :class:`~schemas.errors.TransportError`
        when any message may not have been confirmed for a reason that can pass
        (transient failures win over refusals in the same call: the refusal is
        reported again when the caller retries)."""

    async def ack(self, deliveries: Sequence[Delivery]) -> None:
        """Settle deliveries; they will not be delivered again.

        Returns once the broker has the acknowledgement (not merely once it is queued
        in a socket buffer), so that a crash right after ``ack`` cannot bring the
        message back. Acks for deliveries of a connection that has since dropped are
        ignored: the broker redelivers those, and the engine's inbox makes that a no-op."""

    async def nack(self, deliveries: Sequence[Delivery], *, delay: float = 0.0) -> None:
        """Give deliveries back to be delivered again after ``delay`` seconds."""

    async def dead_letter(self, delivery: Delivery, reason: str) -> None:
        """Publish the delivery's original bytes to :data:`DEADLETTER`. Does not ack.

        Errors as :meth:`publish`: :class:`~schemas.errors.PublishRefused` if the
        broker will never take this dead letter (the original is too large for it even
        without our headers), a retryable TransportError if it may later."""

    @property
    def readiness(self) -> Readiness:
        """Current connection state, for ``/readyz``."""
        ...


def dead_letter_message(delivery: Delivery, reason: str) -> OutgoingMessage:
    """The message every transport publishes for a dead letter: same bytes, same
    headers, plus the reason and the original destination."""
    headers = dict(delivery.headers)
    headers[HEADER_REASON] = reason[:2000]
    headers[HEADER_ORIGIN] = delivery.destination
    message_id = headers.get(HEADER_MESSAGE_ID, "")
    return OutgoingMessage(
        destination=DEADLETTER,
        body=delivery.body,
        message_id=message_id,
        key=delivery.key,
        headers=headers,
    )


def in_binding(messages: Sequence[OutgoingMessage], binding: Binding) -> Sequence[OutgoingMessage]:
    """``messages`` as a broker of ``binding`` carries them: a CloudEvent in binary mode
    (an outbox row of ``--content-mode binary``, a client's publish) has its attribute
    headers renamed from the neutral form (``ce-id``) to the binding's (``ce_id`` on
    Kafka, ``cloudEvents_id`` on AMQP; see :mod:`schemas.binary`). Every other message,
    dead letters included (they keep the original's headers), is left as it is; a call
    with none to rename returns ``messages`` itself."""
    if not any(NEUTRAL_SPECVERSION in m.headers for m in messages):
        return messages
    return [
        replace(m, headers=to_binding(m.headers, binding))
        if NEUTRAL_SPECVERSION in m.headers and m.destination != DEADLETTER
        else m
        for m in messages
    ]


async def close_stream(stream: AsyncIterator[list[Delivery]]) -> None:
    """Close a ``consume()`` stream left before its end (``break``, an error), now rather
    than whenever it is garbage-collected: a transport stops fetching for it and
    cancels its waits at once, instead of leaving a pending task to be destroyed."""
    aclose = getattr(stream, "aclose", None)
    if aclose is not None:
        await aclose()
