"""The data the stages pass along for one batch: items in, reads, units of work out.

An :class:`Item` is one thing to decide: a routed delivery, a parked message or a
fired timer. A :class:`Batch` is what one pass over a batch of deliveries produced:
the units of work (one per applied message, parked message or fired timer) with the
item, the decision and the versioned instance each came from, the dead letters, and
the deliveries not to acknowledge.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from adapters.base import Delivery
from orchestrator.engine.correlate import Routed
from orchestrator.engine.model import Decision, Instance
from orchestrator.store.base import InstanceKey, InstanceRecord, ParkedRecord, UnitOfWork

__all__ = ["Batch", "DeadLetter", "Item", "ParkedReads", "Reads"]

DeadLetter = tuple[Delivery, str, str]
"""A delivery to dead-letter, the reason (text) and its kind (the metric's label)."""


@dataclass(eq=False, slots=True)
class Item:
    routed: Routed
    delivery: Delivery | None = None
    parked: ParkedRecord | None = None
    timer: str | None = None
    late: bool = False
    """A parked message whose grace period ended (a deviation, for a tracking saga)."""


@dataclass(frozen=True, slots=True)
class Reads:
    """What the store said before deciding, plus what the batch still being committed
    knows and the store does not yet (taken at the same moment, before that commit
    can finish and forget it)."""

    seen: set[tuple[str, str]]
    records: dict[InstanceKey, InstanceRecord]
    waiting: dict[InstanceKey, list[Item]]
    """Parked messages of these instances, as items (the deciding may extend the lists)."""
    pending_parked: dict[InstanceKey, list[Item]]
    provisional: dict[InstanceKey, Instance]


@dataclass(frozen=True, slots=True)
class ParkedReads:
    """What deciding parked messages with no new message needs: the parked items per
    instance, which of them the inbox has seen, and the stored instances not cached."""

    waiting: dict[InstanceKey, list[Item]]
    seen: set[tuple[str, str]]
    records: dict[InstanceKey, InstanceRecord]


@dataclass(eq=False)
class Batch:
    """What one pass over a batch produced, before and after commit."""

    units: list[UnitOfWork] = field(default_factory=list)
    owners: list[Item] = field(default_factory=list)
    decisions: list[Decision | None] = field(default_factory=list)
    afters: list[Instance | None] = field(default_factory=list)  # with their new version
    dead: list[DeadLetter] = field(default_factory=list)
    rejected: dict[int, DeadLetter] = field(default_factory=dict)
    """Dead letters decided on an instance's state, by the index of the unit that checks
    that state: each joins ``dead`` only if its unit commits."""
    routed_to: dict[int, tuple[str, str]] = field(default_factory=dict)
    """``(saga, correlation id)`` of each dead letter decided on an instance, by
    ``id(delivery)``: the record names the saga that refused it, not a guess from its type
    (two sagas may take one type)."""
    failed: set[int] = field(default_factory=set)  # id(delivery) not to ack
    deliveries: list[Delivery] = field(default_factory=list)
    items: list[Item] = field(default_factory=list)
    parked_items: dict[InstanceKey, list[Item]] = field(default_factory=dict)
    serial: int = 0
    broken: bool = False
    """Not all of it committed (a unit conflicted, or the commit failed): a batch decided
    on its instances and marks must be decided again."""

    def add(
        self,
        unit: UnitOfWork,
        item: Item,
        decision: Decision | None,
        after: Instance | None = None,
    ) -> None:
        self.units.append(unit)
        self.owners.append(item)
        self.decisions.append(decision)
        self.afters.append(after)
