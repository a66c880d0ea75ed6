"""What the simulated services answer: the order saga's contract, their fates, the first order.

:mod:`orchestrator.tooling.participants` runs the services; this module holds what
they are made of: which commands each handles and how it answers (:data:`SERVICES`),
how badly they behave (:class:`Behaviour`, and the fate of each command attempt, a pure
function of the seed), and the ``order.placed`` event a shop sends to start a saga.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from adapters.base import HEADER_CONTENT_TYPE, HEADER_MESSAGE_ID, OutgoingMessage
from schemas.codec import encode
from schemas.envelope import CONTENT_TYPE, Envelope

__all__ = [
    "BENCH",
    "SERVICES",
    "Behaviour",
    "order_placed",
    "uniform",
]


@dataclass(frozen=True)
class Behaviour:
    """How badly the simulated services behave; probabilities are per command attempt.

    ``refuse``: a reserve/charge/schedule is answered negatively (rejected,
    declined, failed). ``silent``: it is not answered at all. ``undo_silent``: a
    release/refund is not answered (two silent attempts in a row end the saga in
    ``compensation_failed``). ``delay``: replies come after a uniform delay in this
    range (seconds). ``lost``: a command answered (any of the above but silence) is
    carried out but its reply is lost, so the saga times out and re-sends it, and the
    re-send gets the first reply. ``always_succeed`` skips all of it: the bench's mode.

    ``remember``: a service keeps the replies to its last ``remember`` commands (up to
    twice that, ~0.6 KB each) to answer duplicates; a command it has forgotten would be
    carried out again. The order saga re-sends within about a minute, so the default
    covers ~150 commands a second per service.
    """

    refuse: float = 0.06
    silent: float = 0.05
    undo_silent: float = 0.45
    delay: tuple[float, float] = (0.02, 0.4)
    always_succeed: bool = False
    lost: float = 0.0
    remember: int = 10_000


BENCH = Behaviour(
    refuse=0.0, silent=0.0, undo_silent=0.0, delay=(0.0, 0.0), always_succeed=True, remember=1024
)
"""Answer every command at once, successfully, with as little work as possible. A
command is never re-sent here (no silence), only redelivered, soon: a short memory
keeps the bench's inline services out of the engine's measured memory."""


@dataclass(frozen=True)
class Reply:
    ok: str  # event type on success
    refused: str | None  # event type of a negative answer; None for compensations
    field: str | None  # the id field a success carries (reservation_id, ...)
    reason: str = ""


SERVICES: dict[str, dict[str, Reply]] = {
    "inventory": {
        "inventory.reserve": Reply(
            "inventory.reserved", "inventory.rejected", "reservation_id", "out of stock"
        ),
        "inventory.release": Reply("inventory.released", None, None),
    },
    "payment": {
        "payment.charge": Reply(
            "payment.charged", "payment.declined", "payment_id", "card declined"
        ),
        "payment.refund": Reply("payment.refunded", None, None),
    },
    "shipping": {
        "shipping.schedule": Reply(
            "shipping.scheduled", "shipping.failed", "tracking_id", "no carrier available"
        ),
    },
}
"""Service name -> the commands it handles -> how it answers (the order saga's contract)."""


def uniform(seed: int, order_id: str, command: str, attempt: int) -> tuple[float, float]:
    """Two numbers in [0, 1) fixed by the arguments: the fate and the delay of a reply."""
    digest = hashlib.blake2b(
        f"{seed}|{order_id}|{command}|{attempt}".encode(), digest_size=16
    ).digest()
    scale = float(1 << 64)
    return (int.from_bytes(digest[:8], "big") / scale, int.from_bytes(digest[8:], "big") / scale)


def order_placed(
    order_id: str,
    *,
    source: str,
    message_id: str | None = None,
    customer_id: str = "bench",
    items: Sequence[dict[str, Any]] = ({"sku": "sku-1", "qty": 1},),
    amount_cents: int = 1000,
    time: datetime | None = None,
) -> OutgoingMessage:
    """The ``order.placed`` CloudEvent a shop sends to start an order saga, ready to
    publish (keyed by the order id). The demo, the bench and the soak tests all place
    their orders through this one function."""
    mid = message_id or f"{order_id}/placed"
    env = Envelope.new(
        "order.placed",
        {
            "order_id": order_id,
            "customer_id": customer_id,
            "items": list(items),
            "amount_cents": amount_cents,
        },
        id=mid,
        source=source,
        time=time,
        correlationid=order_id,
    )
    return OutgoingMessage(
        "order.placed",
        encode(env),
        mid,
        order_id,
        {HEADER_CONTENT_TYPE: CONTENT_TYPE, HEADER_MESSAGE_ID: mid},
    )
