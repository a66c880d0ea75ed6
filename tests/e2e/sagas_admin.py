"""The order saga of ``sagas/order.py`` as the admin end-to-end tests need it.

Same name (``order``), events, commands and payloads as the shipped saga; two
waits differ:

* a step waits :data:`STEP_TIMEOUT` (ten minutes) and is never re-sent by itself,
  so an order whose payment is never answered stays in ``payment`` until an
  operator acts on it: nothing but the admin API moves it during a test;
* an early reply is parked for :data:`PARK_FOR` seconds, not a minute, so a reply
  to an order that does not exist yet is dead-lettered (kind ``expired``) within
  a test's time, ready to be redriven once the order exists.

Loaded by the sidecar by path (``--sagas tests/e2e/sagas_admin.py``).
"""

from __future__ import annotations

from orchestrator import Event, Retry, Send, Step, StepSaga
from sagas.order import (
    ChargePayment,
    InventoryRejected,
    InventoryReleased,
    InventoryReserved,
    OrderCancelled,
    OrderCompleted,
    OrderPlaced,
    OrderState,
    PaymentCharged,
    PaymentDeclined,
    PaymentRefunded,
    RefundPayment,
    ReleaseInventory,
    ReserveInventory,
    ScheduleShipping,
    ShippingFailed,
    ShippingScheduled,
)

STEP_TIMEOUT = 600.0
PARK_FOR = 1.0
ONCE = Retry(attempts=1)

order = StepSaga(
    "order",
    state=OrderState,
    start=Event("order.placed", OrderPlaced),
    correlate="order_id",
    park_for=PARK_FOR,
    steps=[
        Step(
            "inventory",
            send=Send("inventory.reserve", ReserveInventory),
            success=Event("inventory.reserved", InventoryReserved),
            failure=Event("inventory.rejected", InventoryRejected),
            compensate=Send("inventory.release", ReleaseInventory),
            compensated_by=Event("inventory.released", InventoryReleased),
            timeout=STEP_TIMEOUT,
            retry=ONCE,
        ),
        Step(
            "payment",
            send=Send("payment.charge", ChargePayment),
            success=Event("payment.charged", PaymentCharged),
            failure=Event("payment.declined", PaymentDeclined),
            compensate=Send("payment.refund", RefundPayment),
            compensated_by=Event("payment.refunded", PaymentRefunded),
            timeout=STEP_TIMEOUT,
            retry=ONCE,
        ),
        Step(
            "shipping",
            send=Send("shipping.schedule", ScheduleShipping),
            success=Event("shipping.scheduled", ShippingScheduled),
            failure=Event("shipping.failed", ShippingFailed),
            timeout=STEP_TIMEOUT,
            retry=ONCE,
        ),
    ],
    on_completed=Send("order.completed", OrderCompleted),
    on_compensated=Send("order.cancelled", OrderCancelled),
)
