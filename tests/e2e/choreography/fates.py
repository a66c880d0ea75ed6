"""The checkout scenario's data: each order's fate, and the bytes services publish.

Every fate is a pure function of the order's number, so a run is the same on every
broker and after any crash. A fate says which service fails its step (publishes its
failure event) or stays silent (publishes nothing: the step's deadline passes), and
how the services misbehave on the way: every event twice (same id), an event
published before the one it follows, a second, different reply for a step already
done, a failure event for a step after the checkout completed. From that follow what
sagawire must do: the compensations (the steps done, the last done first), the
outcome event and its reason, the step statuses and the deviations it records.

Bytes are built with nothing but orjson, as a service in another codebase would:
structured-mode CloudEvents. Events a service publishes on its own carry no
``correlationid`` (the saga correlates them by ``order_id``) and name the event they
react to as ``causationid``; replies to sagawire's compensation commands copy the
command's ``correlationid`` and name the command.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import orjson

from tests.e2e.clients import DEADLETTER

ORDERS = 39
"""Per broker: the three silent fates first (their deadlines start at once), then
four rounds of :data:`ROUND`."""

STEPS = ("inventory", "payment", "shipping")
"""The checkout's steps, in order; each is played by the service of the same name."""
INPUTS = {
    "inventory": ("order.placed", "inventory.release"),
    "payment": ("inventory.reserved", "payment.refund"),
    "shipping": ("payment.charged",),
}
"""What each service consumes (with a consumer of its own): the event it reacts to and
the compensation command sagawire may send it."""
SUCCESS = {
    "inventory": ("inventory.reserved", "reservation_id", "res"),
    "payment": ("payment.charged", "payment_id", "pay"),
    "shipping": ("shipping.scheduled", "tracking_id", "trk"),
}
"""A step's success event, the id it carries and that id's prefix (``res-<order>``)."""
FAILURE = {
    "inventory": ("inventory.rejected", "out of stock"),
    "payment": ("payment.declined", "card declined"),
    "shipping": ("shipping.failed", "no carrier"),
}
UNDO = {"inventory": "inventory.release", "payment": "payment.refund"}
"""Each step's compensation command (shipping, the last step, has none)."""
UNDONE = {"inventory.release": "inventory.released", "payment.refund": "payment.refunded"}
COMMANDS = tuple(UNDONE)
OUTCOMES = ("checkout.completed", "checkout.cancelled")
CONSUMED = (
    "order.placed",
    *(SUCCESS[s][0] for s in STEPS),
    *(FAILURE[s][0] for s in STEPS),
    *UNDONE.values(),
)
"""Every type the tracker consumes."""
EVERY = (*CONSUMED, *COMMANDS, *OUTCOMES, DEADLETTER)
"""Every destination of a run: the audit reads them all, to see everything published."""
SIDECAR = "sagawire/checkout"
"""The ``source`` of every message the tracker publishes."""
LATE_REASON = "parcel lost"

WORK = 0.2
"""Seconds a service takes to react to an event (a checkout that completes takes ~0.6 s)."""
REORDER_DELAY = 2.0
"""Seconds a reordered ``inventory.reserved`` is published after inventory reacted:
after the events that follow it, within the saga's grace period, and (for the first
reordered order) after a tracker killed in flight is back."""
SLOW_PAYMENT = 0.6
"""Seconds payment takes to charge an order inventory reserved twice, so that the second
reservation reaches sagawire while the checkout still waits for payment (a step
already done, not a checkout already over)."""


@dataclass(frozen=True)
class Fate:
    """What the services do with one order."""

    name: str
    fails: str | None = None  # the service that publishes its failure event
    silent: str | None = None  # the service that publishes nothing
    twice: bool = False  # every event (order.placed too) and reply published twice, same id
    reordered: bool = False  # payment and shipping publish before inventory.reserved
    second_reply: bool = False  # a second, different inventory.reserved; payment slow
    late: bool = False  # shipping.failed after checkout.completed

    @property
    def failing(self) -> str | None:
        return self.fails or self.silent

    @property
    def done(self) -> tuple[str, ...]:
        """The steps done before the checkout failed (all of them if it did not)."""
        return STEPS if self.failing is None else STEPS[: STEPS.index(self.failing)]

    @property
    def undo(self) -> tuple[str, ...]:
        """The compensation commands sagawire must send, in the order it must send them."""
        return tuple(UNDO[s] for s in reversed(self.done) if s in UNDO) if self.failing else ()

    @property
    def outcome(self) -> str:
        return "checkout.completed" if self.failing is None else "checkout.cancelled"

    def reason(self, deadline: float) -> str | None:
        """``checkout.cancelled``'s reason: the failure event's, or the missed deadline."""
        if self.fails is not None:
            return FAILURE[self.fails][1]
        if self.silent is not None:
            return f"step {self.silent!r} missed its deadline of {deadline:g}s"
        return None

    @property
    def steps(self) -> dict[str, str]:
        """The step statuses ``GET /instances`` shows at the end."""
        if self.failing is None:
            return dict.fromkeys(STEPS, "done")
        return {**dict.fromkeys(self.done, "undone"), self.failing: "failed"}

    def deviations(self, oid: str) -> dict[str, tuple[str, ...]]:
        """The deviations sagawire must record: message id -> the kinds it may have.
        The second reservation is ``repeated`` if it comes while the checkout runs (as
        it does live: payment is slow), ``late`` if the tracker reads it after the
        checkout ended (as it may when it reads a backlog, one topic ahead of another)."""
        found: dict[str, tuple[str, ...]] = {}
        if self.second_reply:
            found[event_id(oid, "inventory.reserved", "1")] = ("repeated", "late")
        if self.late:
            found[event_id("late", oid)] = ("late",)
        return found


COMPLETES = Fate("completes")
SILENT = (
    Fate("inventory silent", silent="inventory"),
    Fate("payment silent", silent="payment"),
    Fate("shipping silent", silent="shipping"),
)
ROUND = (
    COMPLETES,
    Fate("out of stock", fails="inventory"),
    Fate("card declined", fails="payment"),
    Fate("no carrier", fails="shipping"),
    Fate("completes, every event twice", twice=True),
    Fate("card declined, every event twice", fails="payment", twice=True),
    Fate("completes, reordered", reordered=True),
    Fate("completes, a second reservation", second_reply=True),
    Fate("completes, then shipping fails", late=True),
)


def fate(n: int) -> Fate:
    return SILENT[n] if n < len(SILENT) else ROUND[(n - len(SILENT)) % len(ROUND)]


def order_id(n: int) -> str:
    return f"co-{n:03d}"


def number(oid: str) -> int:
    return int(oid.removeprefix("co-"))


def event_id(*parts: str) -> str:
    """A stable id: the same event published again keeps it."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, "/".join(parts)))


def cloudevent(
    type_: str,
    data: dict[str, Any],
    *,
    id_: str,
    source: str,
    correlation: str | None = None,
    causation: str | None = None,
) -> bytes:
    attrs: dict[str, Any] = {
        "specversion": "1.0",
        "id": id_,
        "source": source,
        "type": type_,
        "datacontenttype": "application/json",
        "data": data,
    }
    if correlation is not None:
        attrs["correlationid"] = correlation
    if causation is not None:
        attrs["causationid"] = causation
    return orjson.dumps(attrs)


def placed(n: int) -> bytes:
    oid = order_id(n)
    data = {
        "order_id": oid,
        "customer_id": f"cust-{n % 7}",
        "items": [{"sku": f"sku-{n % 5}", "qty": 1 + n % 3}],
        "amount_cents": 1000 + n,
    }
    return cloudevent("order.placed", data, id_=f"placed-{oid}", source="e2e/shop")
