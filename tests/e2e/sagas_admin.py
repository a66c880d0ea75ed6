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

from orchestrator import Retry
from sagas.order import order_saga

__all__ = ["PARK_FOR", "STEP_TIMEOUT", "order"]

STEP_TIMEOUT = 600.0
PARK_FOR = 1.0

order = order_saga(timeout=STEP_TIMEOUT, retry=Retry(attempts=1), park_for=PARK_FOR)
