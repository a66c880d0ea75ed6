"""The checkout choreography: services react to each other's events; sagawire watches.

Nobody commands anyone here. Inventory reserves when it sees ``order.placed``,
payment charges when it sees ``inventory.reserved``, shipping schedules when it sees
``payment.charged``. sagawire observes each step against its deadline, and when a
step fails (or its deadline passes) it sends the compensations of the steps that
were done, the last done first, and announces the outcome. While a checkout goes
well it publishes nothing but ``checkout.completed``.

This module is a wire contract, like :mod:`sagas.order`, with the same event
payloads: participants depend on these names and fields. Every message sagawire
emits carries the checkout's ``correlationid`` (the order id) and a ``causationid``.

    order.placed
      inventory (observed, 10 s): inventory.reserved | inventory.rejected
                                  (undo: inventory.release -> inventory.released)
      payment   (observed, 10 s): payment.charged    | payment.declined
                                  (undo: payment.refund    -> payment.refunded)
      shipping  (observed, 10 s): shipping.scheduled | shipping.failed
    -> checkout.completed, or, after a failure and its compensations, checkout.cancelled

An event that breaks this flow (shipping before payment, beyond the few seconds a
broker may reorder them; a second, different reply for a step already done) is a
deviation: recorded in the checkout's history and counted, not dead-lettered.
"""

from __future__ import annotations

from pydantic import BaseModel

from orchestrator import Event, Send, Step, StepSaga
from sagas.order import (
    InventoryRejected,
    InventoryReleased,
    InventoryReserved,
    OrderPlaced,
    PaymentCharged,
    PaymentDeclined,
    PaymentRefunded,
    RefundPayment,
    ReleaseInventory,
    ShippingFailed,
    ShippingScheduled,
)

DEADLINE = 10.0
GRACE = 5.0
"""Seconds an event that came before its step may wait for it (broker reordering)."""


class CheckoutCompleted(BaseModel):
    order_id: str
    tracking_id: str


class CheckoutCancelled(BaseModel):
    order_id: str
    reason: str


class Checkout(BaseModel):
    order_id: str
    customer_id: str
    amount_cents: int
    reservation_id: str | None = None
    payment_id: str | None = None
    tracking_id: str | None = None


checkout = StepSaga(
    "checkout",
    state=Checkout,
    start=Event("order.placed", OrderPlaced),
    correlate="order_id",
    steps=[
        Step(
            "inventory",
            success=Event("inventory.reserved", InventoryReserved),
            failure=Event("inventory.rejected", InventoryRejected),
            compensate=Send("inventory.release", ReleaseInventory),
            compensated_by=Event("inventory.released", InventoryReleased),
            timeout=DEADLINE,
        ),
        Step(
            "payment",
            success=Event("payment.charged", PaymentCharged),
            failure=Event("payment.declined", PaymentDeclined),
            compensate=Send("payment.refund", RefundPayment),
            compensated_by=Event("payment.refunded", PaymentRefunded),
            timeout=DEADLINE,
        ),
        Step(
            "shipping",
            success=Event("shipping.scheduled", ShippingScheduled),
            failure=Event("shipping.failed", ShippingFailed),
            timeout=DEADLINE,
        ),
    ],
    on_completed=Send("checkout.completed", CheckoutCompleted),
    on_compensated=Send("checkout.cancelled", CheckoutCancelled),
    park_for=GRACE,
)
