"""The scenario's data: 100 orders, each one's fate, and the bytes participants send.

Every fate is a pure function of the order's number, so a run is the same on
every broker and after any crash. Bytes are built here with nothing but orjson,
as a participant in another codebase would: structured-mode CloudEvents.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from tests.e2e.clients import DEADLETTER

ORDERS = 100
COMMANDS = (
    "inventory.reserve",
    "inventory.release",
    "payment.charge",
    "payment.refund",
    "shipping.schedule",
)
OUTCOMES = ("order.completed", "order.cancelled")
WATCHED = (*COMMANDS, *OUTCOMES, DEADLETTER)


# -- fates ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Fate:
    """What the participants do with one order, and what the saga must then do."""

    name: str
    commands: tuple[str, ...]  # in the order the saga must send them
    outcome: str
    reason: str | None = None  # of order.cancelled
    refuse: str | None = None  # the command the participants refuse


COMPLETES = Fate(
    "completes", ("inventory.reserve", "payment.charge", "shipping.schedule"), "order.completed"
)
NO_STOCK = Fate(
    "no stock", ("inventory.reserve",), "order.cancelled", "out of stock", "inventory.reserve"
)
DECLINED = Fate(
    "declined",
    ("inventory.reserve", "payment.charge", "inventory.release"),
    "order.cancelled",
    "card declined",
    "payment.charge",
)
NO_COURIER = Fate(
    "no courier",
    (
        "inventory.reserve",
        "payment.charge",
        "shipping.schedule",
        "payment.refund",
        "inventory.release",
    ),
    "order.cancelled",
    "no courier available",
    "shipping.schedule",
)


def fate(n: int) -> Fate:
    return {0: NO_STOCK, 1: NO_STOCK, 2: DECLINED, 3: DECLINED, 4: NO_COURIER}.get(
        n % 10, COMPLETES
    )


def order_id(n: int) -> str:
    return f"ord-{n:03d}"


def placed_twice(n: int) -> bool:
    return n % 9 == 0


def replies_twice(n: int) -> bool:
    """Every reply to this order's commands is published twice in a row."""
    return n % 7 == 3


def repeats_after_end(n: int) -> bool:
    """The first reply is published again once the order's outcome arrived."""
    return n % 7 == 5


def placed_over_http(n: int) -> bool:
    return n % 20 == 19


# What participants answer: success event (with its id field) and refusal event.
REPLIES: dict[str, tuple[str, str | None, str | None]] = {
    "inventory.reserve": ("inventory.reserved", "reservation_id", "inventory.rejected"),
    "payment.charge": ("payment.charged", "payment_id", "payment.declined"),
    "shipping.schedule": ("shipping.scheduled", "tracking_id", "shipping.failed"),
    "inventory.release": ("inventory.released", None, None),
    "payment.refund": ("payment.refunded", None, None),
}
ID_PREFIX = {"reservation_id": "res", "payment_id": "pay", "tracking_id": "trk"}


def cloudevent(
    type_: str, data: Any, *, id_: str, correlation: str | None = None, causation: str | None = None
) -> bytes:
    attrs: dict[str, Any] = {
        "specversion": "1.0",
        "id": id_,
        "source": "e2e/participants",
        "type": type_,
        "time": "2024-05-01T12:00:00Z",
        "datacontenttype": "application/json",
        "data": data,
    }
    if correlation is not None:
        attrs["correlationid"] = correlation
    if causation is not None:
        attrs["causationid"] = causation
    return orjson.dumps(attrs)


def placed(n: int) -> bytes:
    data = {
        "order_id": order_id(n),
        "customer_id": f"cust-{n % 13}",
        "items": [{"sku": f"sku-{n % 5}", "qty": 1 + n % 3}],
        "amount_cents": 1000 + n,
    }
    # No correlationid: the saga correlates order.placed by its order_id.
    return cloudevent("order.placed", data, id_=f"placed-{order_id(n)}")


def malformed() -> list[tuple[str, bytes]]:
    """(destination, bytes) of messages that can never be handled; each unique."""
    bad_order = {
        "order_id": "ord-bad",
        "customer_id": "c",
        "items": [{"sku": "s", "qty": 1}],
        "amount_cents": "lots",
    }
    return [
        ("order.placed", b"\x00\xffthis is not JSON {"),
        ("payment.charged", b'{"hello": "world", "note": "JSON, but not a CloudEvent"}'),
        ("inventory.reserved", b"[1, 2, 3]"),
        ("order.placed", cloudevent("order.placed", bad_order, id_="placed-ord-bad")),
        ("shipping.scheduled", cloudevent("order.unknown", {"order_id": "x"}, id_="unknown-1")),
    ]
