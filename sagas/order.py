"""The order saga: reserve inventory, charge payment, schedule shipping.

This module is a wire contract: participants depend on these exact event and
command names and payload fields. Every message the saga emits carries the
instance's ``correlationid`` (the order id unless the placer gave another) and
a ``causationid``. A message whose data misses or mistypes a field declared
below is dead-lettered, never half-applied.

    order.placed
      1. inventory.reserve  -> inventory.reserved | inventory.rejected
                               (undo: inventory.release -> inventory.released)
      2. payment.charge     -> payment.charged    | payment.declined
                               (undo: payment.refund    -> payment.refunded)
      3. shipping.schedule  -> shipping.scheduled | shipping.failed
    -> order.completed, or, after a failure and all compensations, order.cancelled
"""

from __future__ import annotations

from collections.abc import Mapping

from pydantic import BaseModel, Field

from orchestrator import Event, Retry, SagaDefinition, Send, Step, StepSaga

STEP_TIMEOUT = 30.0
RETRY = Retry(attempts=2, backoff=1.0)


class Item(BaseModel):
    sku: str = Field(min_length=1)
    qty: int = Field(gt=0)


# -- events the saga consumes ---------------------------------------------------


class OrderPlaced(BaseModel):
    order_id: str = Field(min_length=1)
    customer_id: str = Field(min_length=1)
    items: list[Item] = Field(min_length=1)
    amount_cents: int = Field(ge=0)


class InventoryReserved(BaseModel):
    order_id: str
    reservation_id: str


class InventoryRejected(BaseModel):
    order_id: str
    reason: str


class InventoryReleased(BaseModel):
    order_id: str


class PaymentCharged(BaseModel):
    order_id: str
    payment_id: str


class PaymentDeclined(BaseModel):
    order_id: str
    reason: str


class PaymentRefunded(BaseModel):
    order_id: str


class ShippingScheduled(BaseModel):
    order_id: str
    tracking_id: str


class ShippingFailed(BaseModel):
    order_id: str
    reason: str


# -- commands and events the saga sends -----------------------------------------


class ReserveInventory(BaseModel):
    order_id: str
    items: list[Item]


class ReleaseInventory(BaseModel):
    order_id: str
    reservation_id: str


class ChargePayment(BaseModel):
    order_id: str
    customer_id: str
    amount_cents: int


class RefundPayment(BaseModel):
    order_id: str
    payment_id: str


class ScheduleShipping(BaseModel):
    order_id: str
    reservation_id: str


class OrderCompleted(BaseModel):
    order_id: str
    tracking_id: str


class OrderCancelled(BaseModel):
    order_id: str
    reason: str


# -- the saga's own state -------------------------------------------------------


class OrderState(BaseModel):
    order_id: str
    customer_id: str
    items: list[Item]
    amount_cents: int
    reservation_id: str | None = None
    payment_id: str | None = None
    tracking_id: str | None = None


def order_saga(
    *,
    timeout: float | Mapping[str, float] = STEP_TIMEOUT,
    retry: Retry = RETRY,
    park_for: float = 60.0,
    slo: Mapping[str, float] | None = None,
) -> SagaDefinition:
    """The order saga (``order`` below), with other waits where a test or a demo cannot
    wait 30 s a step: ``timeout`` for every step or by step name, the ``retry`` policy,
    how long an early event is parked, and each step's ``slo``. The contract (names,
    events, commands, payloads) is the same whatever the waits."""

    def wait(step: str) -> float:
        return timeout if isinstance(timeout, int | float) else timeout[step]

    slos = slo or {}

    return StepSaga(
        "order",
        state=OrderState,
        start=Event("order.placed", OrderPlaced),
        correlate="order_id",  # when a message has no correlationid attribute
        park_for=park_for,
        steps=[
            Step(
                "inventory",
                send=Send("inventory.reserve", ReserveInventory),
                success=Event("inventory.reserved", InventoryReserved),
                failure=Event("inventory.rejected", InventoryRejected),
                compensate=Send("inventory.release", ReleaseInventory),
                compensated_by=Event("inventory.released", InventoryReleased),
                timeout=wait("inventory"),
                retry=retry,
                slo=slos.get("inventory"),
            ),
            Step(
                "payment",
                send=Send("payment.charge", ChargePayment),
                success=Event("payment.charged", PaymentCharged),
                failure=Event("payment.declined", PaymentDeclined),
                compensate=Send("payment.refund", RefundPayment),
                compensated_by=Event("payment.refunded", PaymentRefunded),
                timeout=wait("payment"),
                retry=retry,
                slo=slos.get("payment"),
            ),
            Step(
                "shipping",
                send=Send("shipping.schedule", ScheduleShipping),
                success=Event("shipping.scheduled", ShippingScheduled),
                failure=Event("shipping.failed", ShippingFailed),
                timeout=wait("shipping"),
                retry=retry,
                slo=slos.get("shipping"),
            ),
        ],
        on_completed=Send("order.completed", OrderCompleted),
        on_compensated=Send("order.cancelled", OrderCancelled),
    )


order = order_saga()
