"""The order saga of ``sagas/order.py`` with short step timeouts, for the lost-reply test.

Same name (``order``), events, commands and payloads as the shipped saga; only the
waiting differs: a step unanswered for :data:`STEP_TIMEOUT` seconds re-sends its
command (up to :data:`ATTEMPTS` sends), so a lost reply costs seconds, not minutes.
Loaded by the sidecar by path (``--sagas tests/faults/sagas_fast.py``).
"""

from __future__ import annotations

from orchestrator import Retry
from sagas.order import order_saga

__all__ = ["ATTEMPTS", "STEP_TIMEOUT", "order"]

STEP_TIMEOUT = 2.0
ATTEMPTS = 3

order = order_saga(timeout=STEP_TIMEOUT, retry=Retry(attempts=ATTEMPTS, backoff=0.5))
