"""Which Kafka offsets may be committed: per partition, the contiguous acked prefix.

Kafka remembers one position per partition, not one flag per message, while the
engine acks messages individually and out of order (batches run concurrently).
Committing the highest acked offset would skip an unacked one before it and lose
it on a crash, so this tracker commits only up to the first offset that is not yet
acked. Pure bookkeeping, no I/O and no clock (``now`` is passed in), so the rules
are unit-testable without a broker.

It also implements nack for a log: Kafka cannot redeliver one message, so a nacked
partition is paused and later rewound (seek) to its lowest nacked offset. When the
records come again, only the nacked ones are delivered again; those acked or still
held by the engine are skipped, so a rewind never hands out a second live copy.
A partition has one rewind, due at the latest of its nacks' delays: a short delay
behind a longer one on the same partition waits for the longer (the engine gives every
nack the same delay, ``transient_retry_delay``).
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Hashable, Iterable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

__all__ = ["OffsetTracker", "Ticket"]

TP = TypeVar("TP", bound=Hashable)


class _Status(enum.Enum):
    OUT = "out"  # handed to the engine, not settled
    ACKED = "acked"
    NACKED = "nacked"  # waiting to be delivered again after a rewind


@dataclass(eq=False, slots=True)
class _Partition:
    """One assigned partition. A new object per assignment, so tickets from an
    earlier assignment (before a rebalance) are recognised and ignored."""

    order: deque[int] = field(default_factory=deque)  # unsettled-prefix offsets, ascending
    status: dict[int, _Status] = field(default_factory=dict)
    counts: dict[int, int] = field(default_factory=dict)
    commit_to: int | None = None  # next offset to commit (last contiguous acked + 1)
    committed: int | None = None


@dataclass(frozen=True, slots=True)
class Ticket(Generic[TP]):
    """The ack token of one delivery (stored in ``Delivery.handle``)."""

    tracker: OffsetTracker[TP]
    partition: _Partition
    tp: TP
    offset: int


class OffsetTracker(Generic[TP]):
    """Per-partition delivery state of one consumer; see the module docstring."""

    def __init__(self) -> None:
        self._parts: dict[TP, _Partition] = {}
        self._rewinds: dict[TP, tuple[int, float]] = {}  # tp -> (offset, due time)
        self.outstanding = 0
        """Deliveries handed out and neither acked nor nacked: the in-flight window."""

    # -- assignment -------------------------------------------------------------
    def assign(self, tps: Iterable[TP]) -> None:
        for tp in tps:
            self._parts.setdefault(tp, _Partition())

    def revoke(self, tps: Iterable[TP]) -> dict[TP, int]:
        """Forget ``tps``; returns the offsets to commit for them first."""
        final: dict[TP, int] = {}
        for tp in tps:
            part = self._parts.pop(tp, None)
            self._rewinds.pop(tp, None)
            if part is None:
                continue
            # deliveries still OUT stay in the window until the engine settles them (it
            # holds them): their ack or nack, ignored for the partition, frees the slot
            if part.commit_to is not None and part.commit_to != part.committed:
                final[tp] = part.commit_to
        return final

    @property
    def assigned(self) -> set[TP]:
        return set(self._parts)

    # -- delivery ---------------------------------------------------------------
    def accept(self, tp: TP, offset: int) -> Ticket[TP] | None:
        """A fetched record: its ticket if it should be delivered now, else ``None``
        (unassigned partition, or a rewind brought back a record that is acked or
        still held by the engine)."""
        part = self._parts.get(tp)
        if part is None:
            return None
        status = part.status.get(offset)
        if status is None:
            if part.commit_to is not None and offset < part.commit_to:
                return None  # already acked and dropped from tracking
            part.order.append(offset)
        elif status is not _Status.NACKED:
            return None
        part.status[offset] = _Status.OUT
        part.counts[offset] = part.counts.get(offset, 0) + 1
        self.outstanding += 1
        return Ticket(self, part, tp, offset)

    def delivery_count(self, ticket: Ticket[TP]) -> int:
        return ticket.partition.counts.get(ticket.offset, 1)

    def ack(self, ticket: Ticket[TP]) -> bool:
        """Settle one delivery; ``True`` when the commit position moved."""
        part = self._live(ticket)
        if part is None:
            self._settle_revoked(ticket)
            return False
        if part.status.get(ticket.offset) is _Status.ACKED:
            return False
        if part.status.get(ticket.offset) is _Status.OUT:
            self.outstanding -= 1
        part.status[ticket.offset] = _Status.ACKED
        moved = False
        while part.order and part.status[part.order[0]] is _Status.ACKED:
            done = part.order.popleft()
            del part.status[done]
            part.counts.pop(done, None)
            part.commit_to = done + 1
            moved = True
        return moved

    def nack(self, ticket: Ticket[TP], due: float) -> None:
        """Give one delivery back: its partition pauses and, at ``due``, rewinds."""
        part = self._live(ticket)
        if part is None:
            self._settle_revoked(ticket)
            return
        if part.status.get(ticket.offset) is not _Status.OUT:
            return
        self.outstanding -= 1
        part.status[ticket.offset] = _Status.NACKED
        # to the lowest offset still waiting to come back, not only the lowest of the
        # rewinds pending: one already sought (its record not fetched again yet, say
        # while the window is full) must not be forgotten by a later nack
        lowest = min(o for o in part.order if part.status[o] is _Status.NACKED)
        _, when = self._rewinds.get(ticket.tp, (lowest, due))
        self._rewinds[ticket.tp] = (lowest, max(when, due))

    @property
    def rewinding(self) -> set[TP]:
        """Partitions paused until their rewind is due."""
        return set(self._rewinds)

    def due_rewinds(self, now: float) -> dict[TP, int]:
        """Partitions whose rewind is due, with the offset to seek to; forgotten here."""
        due = {tp: off for tp, (off, when) in self._rewinds.items() if when <= now}
        for tp in due:
            del self._rewinds[tp]
        return due

    # -- committing -------------------------------------------------------------
    def pending_commits(self) -> dict[TP, int]:
        return {
            tp: p.commit_to
            for tp, p in self._parts.items()
            if p.commit_to is not None and p.commit_to != p.committed
        }

    def mark_committed(self, offsets: dict[TP, int]) -> None:
        for tp, offset in offsets.items():
            part = self._parts.get(tp)
            if part is not None:
                part.committed = offset

    def _settle_revoked(self, ticket: Ticket[TP]) -> None:
        """A delivery from before a revoke, settled now: its slot in the window frees
        (the record itself is the new owner's, or ours again under a new ticket). Its
        partition object is the revoked one, which only such tickets still hold."""
        part = ticket.partition
        if part.status.get(ticket.offset) is _Status.OUT:
            part.status[ticket.offset] = _Status.ACKED  # settled, as far as this ticket goes
            self.outstanding -= 1

    def _live(self, ticket: Ticket[TP]) -> _Partition | None:
        part = self._parts.get(ticket.tp)
        return part if part is ticket.partition else None
