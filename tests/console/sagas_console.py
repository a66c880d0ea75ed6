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

from orchestrator import Retry
from sagas.checkout import checkout
from sagas.order import order_saga

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

order = order_saga(
    timeout={"inventory": QUICK_TIMEOUT, "payment": QUICK_TIMEOUT, "shipping": SHIPPING_TIMEOUT},
    retry=QUICK_RETRY,
    slo={"shipping": STUCK_AFTER},
)
