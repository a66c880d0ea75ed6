"""Step 3 for a whole batch: decide every item, per instance in arrival order, with
parked messages retried after each change.

Calls the pure :func:`orchestrator.engine.decide.decide` for each message and turns
each applied decision into its unit of work (:mod:`orchestrator.engine.persist`);
does no I/O (the reads are in, from :mod:`orchestrator.engine.reading`). What it
decided is held in the :class:`~orchestrator.engine.working.WorkingSet` until the
batch commits, so that the next batch can be decided meanwhile.
"""

from __future__ import annotations

import structlog
from pydantic import ValidationError

from orchestrator.engine.batch import Batch, Item, ParkedReads, Reads
from orchestrator.engine.config import Stats
from orchestrator.engine.decide import decide
from orchestrator.engine.model import Decision, Instance
from orchestrator.engine.persist import (
    instance_from_record,
    parked_delivery,
    parked_unit,
    unit_for,
)
from orchestrator.engine.working import WorkingSet
from orchestrator.language.definition import SagaDefinition
from orchestrator.store.base import InstanceKey, InstanceRecord, TimerRecord, UnitOfWork
from schemas.codec import describe_validation_error

UNLOADABLE_TIMER_RETRY = 60.0
"""Seconds before a timer of an instance whose state does not load is tried again."""

__all__ = ["UNLOADABLE_TIMER_RETRY", "Decider"]

log = structlog.get_logger("sagawire.engine")


class Decider:
    """Decisions for one batch; the units of work they make."""

    def __init__(self, working: WorkingSet, stats: Stats, *, binary: bool = False) -> None:
        self.working = working
        self.stats = stats
        self.binary = binary
        """Units send their messages in CloudEvents binary content mode."""

    def decide_batch(self, batch: Batch, reads: Reads, now: float) -> None:
        """Decide every item of the batch, per instance in arrival order. No I/O."""
        cache = self.working.cache
        by_key: dict[InstanceKey, list[Item]] = {}
        for item in batch.items:
            by_key.setdefault(item.routed.key, []).append(item)
        seen = reads.seen
        records = reads.records
        waiting = reads.waiting
        prev = reads.pending_parked
        for key in by_key:
            if key in prev:
                waiting.setdefault(key, []).extend(prev[key])
        for key, key_items in by_key.items():
            saga = key_items[0].routed.saga
            current = reads.provisional.get(key) or cache.get(key)
            if current is None:
                record = records.get(key)
                if record is not None:
                    current = self._load(saga, record, key_items, batch, seen, now)
                    if current is None:
                        continue
            waits = waiting.get(key)  # _settle only where something waits: this runs per event
            if waits:
                current = self._settle(current, waits, batch, seen, now)
            held: list[Item] = []
            for item in key_items:
                mark = (saga.name, item.routed.envelope.id)
                if item.timer is None and mark in seen:
                    self.stats.duplicates += 1
                    if item.delivery is not None:
                        self.stats.handled(saga.name, item.routed.envelope.type, "duplicate")
                    if item.parked is not None:  # applied meanwhile: its row goes
                        batch.add(UnitOfWork(unparked=(mark,)), item, None)
                    continue
                decision = decide(saga, current, item.routed, now, late=item.late)
                if decision.kind == "applied":
                    after = self._applied(item, decision, batch, now, current)
                    if after is None:
                        continue
                    current = after
                    seen.add(mark)
                    if held:
                        current = self._settle(current, held, batch, seen, now)
                    if waits:
                        current = self._settle(current, waits, batch, seen, now)
                elif decision.kind == "park":
                    held.append(item)
                elif decision.kind == "reject":
                    self._reject(item, decision.reason, batch, _version(current))
                elif item.timer is not None:  # ignored: its row goes, if the state still holds
                    unit = UnitOfWork(
                        timers_cancelled=((saga.name, key[1], item.timer),),
                        check=(key, _version(current)),
                    )
                    batch.add(unit, item, None)
                elif item.delivery is not None:  # ignored (a flow's event of no step)
                    self.stats.handled(saga.name, item.routed.envelope.type, "ignored")
            for item in held:
                assert item.delivery is not None
                reason = f"parked: {decide(saga, current, item.routed, now).reason}"
                unit = parked_unit(
                    item.routed,
                    item.delivery.body,
                    item.delivery.destination,
                    now,
                    reason,
                    saga.park_for,
                )
                unit.check = (key, _version(current))  # parked on this state, not another's
                batch.add(unit, item, None)
                batch.parked_items.setdefault(key, []).append(
                    Item(item.routed, parked=unit.parked[0])
                )
        self.working.hold(batch)

    def settle_parked(self, batch: Batch, reads: ParkedReads, now: float) -> None:
        """Decide parked messages against their instances as they are, with no new
        message: what applies now is applied (and unparked), what is rejected now is
        dead-lettered, the rest stays parked. No I/O."""
        cache = self.working.cache
        for key, waits in reads.waiting.items():
            current = cache.get(key)
            if current is None:
                record = reads.records.get(key)
                if record is None:  # not started yet: its start reads what is parked
                    continue
                current = self._load(waits[0].routed.saga, record, [], batch, reads.seen, now)
            self._settle(current, waits, batch, reads.seen, now)

    def _settle(
        self,
        current: Instance | None,
        waiting: list[Item],
        batch: Batch,
        seen: set[tuple[str, str]],
        now: float,
    ) -> Instance | None:
        """Apply waiting (parked) items that the instance can now take, until none can."""
        progress = True
        while progress and waiting and current is not None:
            progress = False
            for item in list(waiting):
                saga = item.routed.saga
                mark = (saga.name, item.routed.envelope.id)
                if mark in seen:
                    waiting.remove(item)
                    if item.parked is not None:
                        batch.add(UnitOfWork(unparked=(mark,)), item, None)
                    continue
                decision = decide(saga, current, item.routed, now)
                if decision.kind == "park":
                    continue
                waiting.remove(item)
                progress = True
                if decision.kind == "applied":
                    after = self._applied(item, decision, batch, now, current)
                    if after is not None:
                        current = after
                        seen.add(mark)
                else:
                    self._reject(item, decision.reason, batch, _version(current))
        return current

    def _load(
        self,
        saga: SagaDefinition,
        record: InstanceRecord,
        items: list[Item],
        batch: Batch,
        seen: set[tuple[str, str]],
        now: float,
    ) -> Instance | None:
        """The stored instance, or None when its state no longer loads (the state model
        changed incompatibly, say). Then each message for it is dead-lettered with why,
        and each timer tried again later: the engine goes on with every other instance,
        and nothing is lost while an operator mends the model."""
        try:
            return instance_from_record(saga, record)
        except Exception as exc:
            detail = (
                describe_validation_error(exc, "field")
                if isinstance(exc, ValidationError)
                else f"{type(exc).__name__}: {exc}"
            )
        reason = (
            f"saga {saga.name!r} instance {record.correlation_id!r}: its stored state"
            f" (version {record.version}) does not load as {saga.state_model.__name__}: {detail}"
        )
        log.error("stored instance does not load", reason=reason)
        for item in items:
            if item.timer is not None:
                due = now + UNLOADABLE_TIMER_RETRY
                timer = TimerRecord(saga.name, record.correlation_id, item.timer, due)
                check = (item.routed.key, record.version)
                batch.add(UnitOfWork(timers_set=(timer,), check=check), item, None)
            elif (saga.name, item.routed.envelope.id) in seen:
                self.stats.duplicates += 1  # handled before the state stopped loading
                if item.delivery is not None:
                    self.stats.handled(saga.name, item.routed.envelope.type, "duplicate")
            else:
                self._reject(item, reason, batch, record.version, "unloadable")
        return None

    def _applied(
        self, item: Item, decision: Decision, batch: Batch, now: float, before: Instance | None
    ) -> Instance | None:
        """Add the unit of work of an applied decision on ``before``; None (and the event
        rejected) if its records cannot be made, say a state value that has no JSON form."""
        if before is not None:
            decision.since = before.updated_at
        try:
            unit = unit_for(item.routed, decision, now, item.timer, self.binary)
        except Exception as exc:
            env = item.routed.envelope
            reason = (
                f"saga {item.routed.saga.name!r} on {env.type} {env.id}: the new state or"
                f" a command cannot be written: {type(exc).__name__}: {exc}"
            )
            assert decision.instance is not None
            self._reject(item, reason, batch, decision.instance.version - 1, "unwritable")
            return None
        if item.parked is not None:
            unit.unparked = ((item.parked.saga, item.parked.message_id),)
        after = decision.instance
        assert after is not None
        batch.add(unit, item, decision, after)
        return after

    def _reject(
        self, item: Item, reason: str, batch: Batch, version: int, kind: str = "rejected"
    ) -> None:
        """What the instance at ``version`` cannot take: a message is dead-lettered (and
        unparked, if it was parked), a timer's row deleted. Both only once the unit
        commits, that is if the instance is still at that version: decided on a state
        another replica has moved on (a stale cache), it is decided again instead."""
        check = (item.routed.key, version)
        if item.timer is not None:
            saga, cid = item.routed.key
            unit = UnitOfWork(timers_cancelled=((saga, cid, item.timer),), check=check)
            batch.add(unit, item, None)
            return
        d = item.delivery
        unit = UnitOfWork(check=check)
        if item.parked is not None:
            unit.unparked = ((item.parked.saga, item.parked.message_id),)
            if d is None:
                d = parked_delivery(item.parked)
        if d is not None:
            batch.rejected[len(batch.units)] = (d, reason, kind)
        batch.add(unit, item, None)


def _version(instance: Instance | None) -> int:
    """The version a decision was made on (0: no instance), for its unit's check."""
    return 0 if instance is None else instance.version
