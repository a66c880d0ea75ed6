"""The order saga of ``sagas/order.py`` with short step timeouts, for the lost-reply test.

Same name (``order``), events, commands and payloads as the shipped saga; only the
waiting differs: a step unanswered for :data:`STEP_TIMEOUT` seconds re-sends its
command (up to :data:`ATTEMPTS` sends), so a lost reply costs seconds, not minutes.
Loaded by the sidecar by path (``--sagas tests/faults/sagas_fast.py``).
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

STEP_TIMEOUT = 2.0
ATTEMPTS = 3
RETRY = Retry(attempts=ATTEMPTS, backoff=0.5)

order = StepSaga(
    "order",
    state=OrderState,
    start=Event("order.placed", OrderPlaced),
    correlate="order_id",
    steps=[
        Step(
            "inventory",
            send=Send("inventory.reserve", ReserveInventory),
            success=Event("inventory.reserved", InventoryReserved),
            failure=Event("inventory.rejected", InventoryRejected),
            compensate=Send("inventory.release", ReleaseInventory),
            compensated_by=Event("inventory.released", InventoryReleased),
            timeout=STEP_TIMEOUT,
            retry=RETRY,
        ),
        Step(
            "payment",
            send=Send("payment.charge", ChargePayment),
            success=Event("payment.charged", PaymentCharged),
            failure=Event("payment.declined", PaymentDeclined),
            compensate=Send("payment.refund", RefundPayment),
            compensated_by=Event("payment.refunded", PaymentRefunded),
            timeout=STEP_TIMEOUT,
            retry=RETRY,
        ),
        Step(
            "shipping",
            send=Send("shipping.schedule", ScheduleShipping),
            success=Event("shipping.scheduled", ShippingScheduled),
            failure=Event("shipping.failed", ShippingFailed),
            timeout=STEP_TIMEOUT,
            retry=RETRY,
        ),
    ],
    on_completed=Send("order.completed", OrderCompleted),
    on_compensated=Send("order.cancelled", OrderCancelled),
)
