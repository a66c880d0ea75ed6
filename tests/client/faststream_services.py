"""Services written with FastStream, taking part in sagawire's sagas over NATS JetStream.

What a team that already runs FastStream writes: a subscriber per message type, the
body read as a CloudEvent with :func:`schemas.codec.decode` (FastStream decodes JSON
only for ``content-type: application/json``, and sagawire's messages say
``application/cloudevents+json``, so the handler takes the raw ``bytes``), the reply
built with :func:`orchestrator.client.reply_event` (correlation, causation, a derived
id) and published with ``broker.publish`` in structured mode.
Each service subscribes with a durable consumer of its own on sagawire's stream, so
it receives every message it filters for, beside the sidecar's consumer.

Two sets, one per shipped saga:

* :func:`order_services`: inventory and payment answer the order saga's commands
  (``inventory.reserve`` / ``release``, ``payment.charge`` / ``refund``);
* :func:`checkout_services`: inventory reacts to ``order.placed``, payment to
  ``inventory.reserved``, and both carry out sagawire's compensations.

Payment declines an order whose id ends in ``-declined``. FastStream does not remember
what it handled: these keep a dict of first replies (:class:`Replies`), as the
participant's contract asks; :class:`orchestrator.client.Service` does it for you.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from faststream.nats import JStream, NatsBroker

from orchestrator.client import Emit, reply_event
from schemas.codec import decode, encode
from schemas.envelope import CONTENT_TYPE, Envelope


class Replies:
    """First replies by command ``(source, id)``, and what each service did."""

    def __init__(self) -> None:
        self.first: dict[tuple[str, str], Envelope] = {}
        self.done: Counter[str] = Counter()


def _publisher(broker: NatsBroker, stream: str, source: str, replies: Replies) -> Any:
    async def answer(cause: Envelope, emit: Emit) -> None:
        key = (cause.source, cause.id)
        reply = replies.first.get(key)
        if reply is None:  # first time: do the work, remember the reply
            reply = reply_event(cause, emit, source=source)
            replies.first[key] = reply
            replies.done[f"{source}:{cause.type}"] += 1
        await broker.publish(
            encode(reply),
            subject=reply.type,
            headers={"content-type": CONTENT_TYPE, "Nats-Msg-Id": f"{reply.type}/{reply.id}"},
            stream=stream,
        )

    return answer


def order_services(broker: NatsBroker, stream: str, tag: str) -> Replies:
    """Inventory and payment for ``sagas/order.py`` (they answer its commands)."""
    replies = Replies()
    js = JStream(stream, declare=False)
    inventory = _publisher(broker, stream, "fs/inventory", replies)
    payment = _publisher(broker, stream, "fs/payment", replies)

    @broker.subscriber(
        "inventory.reserve", stream=js, durable=f"fs-inv-reserve-{tag}", pull_sub=True
    )
    async def reserve(body: bytes) -> None:
        event = decode(body)
        oid = event.data["order_id"]
        await inventory(
            event, Emit("inventory.reserved", {"order_id": oid, "reservation_id": f"r-{oid}"})
        )

    @broker.subscriber(
        "inventory.release", stream=js, durable=f"fs-inv-release-{tag}", pull_sub=True
    )
    async def release(body: bytes) -> None:
        event = decode(body)
        await inventory(event, Emit("inventory.released", {"order_id": event.data["order_id"]}))

    @broker.subscriber("payment.charge", stream=js, durable=f"fs-pay-charge-{tag}", pull_sub=True)
    async def charge(body: bytes) -> None:
        event = decode(body)
        await payment(event, _charge(event.data["order_id"]))

    @broker.subscriber("payment.refund", stream=js, durable=f"fs-pay-refund-{tag}", pull_sub=True)
    async def refund(body: bytes) -> None:
        event = decode(body)
        await payment(event, Emit("payment.refunded", {"order_id": event.data["order_id"]}))

    return replies


def checkout_services(broker: NatsBroker, stream: str, tag: str) -> Replies:
    """Inventory and payment for ``sagas/checkout.py`` (they react to events)."""
    replies = Replies()
    js = JStream(stream, declare=False)
    inventory = _publisher(broker, stream, "fs/inventory", replies)
    payment = _publisher(broker, stream, "fs/payment", replies)

    @broker.subscriber("order.placed", stream=js, durable=f"fs-inv-placed-{tag}", pull_sub=True)
    async def placed(body: bytes) -> None:
        event = decode(body)
        oid = event.data["order_id"]
        await inventory(
            event, Emit("inventory.reserved", {"order_id": oid, "reservation_id": f"r-{oid}"})
        )

    @broker.subscriber(
        "inventory.release", stream=js, durable=f"fs-inv-release-{tag}", pull_sub=True
    )
    async def release(body: bytes) -> None:
        event = decode(body)
        await inventory(event, Emit("inventory.released", {"order_id": event.data["order_id"]}))

    @broker.subscriber(
        "inventory.reserved", stream=js, durable=f"fs-pay-reserved-{tag}", pull_sub=True
    )
    async def reserved(body: bytes) -> None:
        event = decode(body)
        await payment(event, _charge(event.data["order_id"]))

    @broker.subscriber("payment.refund", stream=js, durable=f"fs-pay-refund-{tag}", pull_sub=True)
    async def refund(body: bytes) -> None:
        event = decode(body)
        await payment(event, Emit("payment.refunded", {"order_id": event.data["order_id"]}))

    return replies


def _charge(order_id: str) -> Emit:
    if order_id.endswith("-declined"):
        return Emit("payment.declined", {"order_id": order_id, "reason": "card declined"})
    return Emit("payment.charged", {"order_id": order_id, "payment_id": f"p-{order_id}"})
