"""The sagas the console's sidecar loads: the order saga with waits a browser test can
outlast at both ends, and the checkout choreography as shipped.

The order saga here has the name (``order``), events, commands and payloads of
``sagas/order.py``; only its waits differ. Inventory and payment wait
:data:`QUICK_TIMEOUT` seconds per attempt (:data:`QUICK_RETRY`), so an unanswered
command or compensation fails within seconds and the fixture's orders reach
``compensated`` and ``compensation_failed`` before the first test runs. Shipping waits
:data:`SHIPPING_TIMEOUT` (ten minutes): an order whose shipping command goes unanswered
stays ``running`` for the whole session, so a test always has live orders to look at
and to abort; past :data:`STUCK_AFTER` seconds there it counts as stuck (the step's
SLO), so the console has stuck instances to highlight.

``checkout`` is ``sagas/checkout.py`` itself (imported, so the loader finds it here):
the same ``order.placed`` starts one of each, as a sidecar given the whole ``sagas/``
directory does, so the console has a choreography with deviations beside the order
saga. The two disagree at times (checkout gives up on an order waiting at shipping
after its own 10 s deadline and sends compensations the order saga did not ask for),
which leaves dead letters and deviations for the console to show.

Loaded by the sidecar by path (:data:`tests.console.rig.SAGAS`).
"""

from __future__ import annotations

from orchestrator import Event, Retry, Send, Step, StepSaga
from sagas.checkout import checkout
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

__all__ = [
    "QUICK_RETRY",
    "QUICK_TIMEOUT",
    "SHIPPING_TIMEOUT",
    "STUCK_AFTER",
    "checkout",
    "order",
]

QUICK_TIMEOUT = 1.5
QUICK_RETRY = Retry(attempts=2, backoff=0.5)
SHIPPING_TIMEOUT = 600.0
STUCK_AFTER = 5.0

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
            timeout=QUICK_TIMEOUT,
            retry=QUICK_RETRY,
        ),
        Step(
            "payment",
            send=Send("payment.charge", ChargePayment),
            success=Event("payment.charged", PaymentCharged),
            failure=Event("payment.declined", PaymentDeclined),
            compensate=Send("payment.refund", RefundPayment),
            compensated_by=Event("payment.refunded", PaymentRefunded),
            timeout=QUICK_TIMEOUT,
            retry=QUICK_RETRY,
        ),
        Step(
            "shipping",
            send=Send("shipping.schedule", ScheduleShipping),
            success=Event("shipping.scheduled", ShippingScheduled),
            failure=Event("shipping.failed", ShippingFailed),
            timeout=SHIPPING_TIMEOUT,
            retry=QUICK_RETRY,
            slo=STUCK_AFTER,
        ),
    ],
    on_completed=Send("order.completed", OrderCompleted),
    on_compensated=Send("order.cancelled", OrderCancelled),
)
