"""Turn a batch of units of work into the net writes one transaction must make.

Both durable stores decide outcomes the same way the in-memory store does —
walking the units in order, each one seeing what the earlier ones did — but they
must not pay one round trip per statement per unit. So the decision is made here,
in plain Python, from two facts read once per batch (which inbox marks already
exist, and the current version of each instance touched); the result is a
:class:`Plan` of per-table row lists that the store writes with one
``executemany`` or ``unnest`` statement each.

Collapsing to *net* effects is what makes set-based writes correct: a timer set
by one unit and cancelled by a later one must end up deleted, a message parked
and then un-parked must be gone, and an instance bumped twice in one batch must
hold the last record. The rules mirror ``MemoryStore._apply`` exactly.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from orchestrator.store.base import (
    HistoryRecord,
    InstanceKey,
    InstanceRecord,
    OutboxRecord,
    Outcome,
    ParkedRecord,
    TimerRecord,
    UnitOfWork,
)

__all__ = ["InboxRow", "Plan", "plan_batch", "unit_time"]

InboxRow = tuple[str, str, float]
"""``(saga, message_id, at)``."""

_KEEP_EXISTING = "keep"  # INSERT ... DO NOTHING: a row already stored wins
_REPLACE = "replace"  # delete the stored row, then insert this one
_DELETE = "delete"


@dataclass(slots=True)
class Plan:
    """Outcomes plus the net rows to write, each list in the order to write it."""

    outcomes: list[Outcome] = field(default_factory=list)
    inbox: list[InboxRow] = field(default_factory=list)
    instances: list[InstanceRecord] = field(default_factory=list)
    history: list[HistoryRecord] = field(default_factory=list)
    outbox: list[OutboxRecord] = field(default_factory=list)
    timer_deletes: list[tuple[str, str, str]] = field(default_factory=list)
    timer_upserts: list[TimerRecord] = field(default_factory=list)
    parked_deletes: list[tuple[str, str]] = field(default_factory=list)
    parked_inserts: list[ParkedRecord] = field(default_factory=list)


def unit_time(unit: UnitOfWork) -> float | None:
    """The engine-clock time of a unit, for its inbox mark.

    Units carry no timestamp of their own and stores never read a clock, so the
    time is borrowed from the records the unit writes."""
    if unit.instance is not None:
        return unit.instance.updated_at
    if unit.history:
        return unit.history[-1].at
    if unit.parked:
        return unit.parked[-1].parked_at
    if unit.outbox:
        return unit.outbox[-1].created_at
    return None


def batch_time(units: Sequence[UnitOfWork]) -> float:
    """Fallback inbox time for units that write nothing else: the batch's latest time."""
    times = [t for t in (unit_time(u) for u in units) if t is not None]
    return max(times, default=0.0)


def plan_batch(
    units: Sequence[UnitOfWork],
    existing_marks: set[tuple[str, str]],
    versions: dict[InstanceKey, int],
) -> Plan:
    """Decide each unit like ``MemoryStore.commit`` and collect the net writes.

    ``existing_marks`` are the batch's inbox marks already stored; ``versions``
    the stored version of each instance a unit writes or checks (absent means 0).
    Neither argument is modified."""
    plan = Plan()
    marks = set(existing_marks)
    current = dict(versions)
    fallback = batch_time(units)
    instances: dict[InstanceKey, InstanceRecord] = {}
    outbox: dict[str, OutboxRecord] = {}
    timers: dict[tuple[str, str, str], TimerRecord | None] = {}
    parked: dict[tuple[str, str], tuple[str, ParkedRecord | None]] = {}
    unborn: set[tuple[InstanceKey, int]] = set()  # versions this batch did not write

    for unit in units:
        if unit.inbox is not None and unit.inbox in marks:
            if unit.instance is not None:  # written by another: not ours to build on
                unborn.add((unit.instance.key, unit.instance.version))
            plan.outcomes.append(Outcome.DUPLICATE)
            continue
        expects = unit.expects()
        if expects is not None and (expects in unborn or current.get(expects[0], 0) != expects[1]):
            if unit.instance is not None:  # units chained on this one conflict too
                unborn.add((unit.instance.key, unit.instance.version))
            plan.outcomes.append(Outcome.CONFLICT)
            continue
        plan.outcomes.append(Outcome.COMMITTED)
        if unit.inbox is not None:
            marks.add(unit.inbox)
            at = unit_time(unit)
            plan.inbox.append((*unit.inbox, fallback if at is None else at))
        if unit.instance is not None:
            current[unit.instance.key] = unit.instance.version
            instances[unit.instance.key] = unit.instance
        plan.history.extend(unit.history)
        for o in unit.outbox:
            outbox[o.id] = o  # a repeated id keeps its first position, like a dict
        for tkey in unit.timers_cancelled:
            timers[tkey] = None
        for t in unit.timers_set:
            timers[t.key] = t
        for p in unit.parked:
            pkey = (p.saga, p.message_id)
            state = parked.get(pkey)
            if state is None:
                parked[pkey] = (_KEEP_EXISTING, p)
            elif state[0] == _DELETE:
                del parked[pkey]  # parked again: it takes its new place in the order
                parked[pkey] = (_REPLACE, p)
        for pkey in unit.unparked:
            parked[pkey] = (_DELETE, None)

    plan.instances = list(instances.values())
    plan.outbox = list(outbox.values())
    for tkey, timer in timers.items():
        if timer is None:
            plan.timer_deletes.append(tkey)
        else:
            plan.timer_upserts.append(timer)
    for pkey, (action, record) in parked.items():
        if action != _KEEP_EXISTING:
            plan.parked_deletes.append(pkey)
        if record is not None:
            plan.parked_inserts.append(record)
    return plan
