"""Steps 2-4 for a whole batch: read what the store knows, then decide every item,
per instance in arrival order, with parked messages retried after each change.
Calls the pure :func:`orchestrator.engine.decide.decide` for each message; does no I/O
itself once the reads are in."""

from __future__ import annotations

from pydantic import ValidationError

from adapters.base import Delivery
from orchestrator.engine.batch import Batch, EngineState, Item, Reads, log
from orchestrator.engine.correlate import Routed
from orchestrator.engine.decide import decide
from orchestrator.engine.model import Decision, Instance
from orchestrator.engine.persist import instance_from_record, parked_unit, unit_for
from orchestrator.language.definition import SagaDefinition
from orchestrator.store.base import (
    InstanceKey,
    InstanceRecord,
    ParkedRecord,
    TimerRecord,
    UnitOfWork,
)
from schemas.codec import decode, describe_validation_error
from schemas.errors import MessageError

UNLOADABLE_TIMER_RETRY = 60.0
"""Seconds before a timer of an instance whose state does not load is tried again."""

__all__ = ["Deciding"]


class Deciding(EngineState):
    """Reads and decisions for one batch."""

    async def _decide_all(self, items: list[Item], batch: Batch, now: float) -> None:
        batch.items = items
        self._decide_batch(batch, await self._read(items), now)

    async def _read(self, items: list[Item]) -> Reads:
        """Everything the store must say before deciding: inbox marks, instances not
        held in memory, parked messages of these instances."""
        keys = list(dict.fromkeys(i.routed.key for i in items))
        marks = [(i.routed.saga.name, i.routed.envelope.id) for i in items if i.timer is None]
        seen = await self.store.seen(marks) if marks else set()
        missing = [k for k in keys if k not in self._cache and k not in self._provisional]
        records = await self.store.load(missing) if missing else {}
        # Parked messages of the instances this engine knows to have some, and of those
        # about to be created: an early event may have been parked by another replica
        # (housekeeping refreshes the known keys from the store, for the rest).
        known = self._parked_keys
        new = {k for k in missing if k not in records}
        parked_keys = [k for k in keys if k in known or k in new]
        parked = await self.store.parked(parked_keys) if parked_keys else []
        seen.update(self._inflight)  # decided by the pending batch, not yet committed
        provisional = {k: self._provisional[k][1] for k in keys if k in self._provisional}
        return Reads(seen, records, parked, self._pending_parked, provisional)

    def _decide_batch(self, batch: Batch, reads: Reads, now: float) -> None:
        """Decide every item of the batch, per instance in arrival order. No I/O."""
        by_key: dict[InstanceKey, list[Item]] = {}
        for item in batch.items:
            by_key.setdefault(item.routed.key, []).append(item)
        seen = reads.seen
        records = reads.records
        waiting = self._waiting(reads.parked)
        prev = reads.pending_parked
        for key in by_key:
            if key in prev:
                waiting.setdefault(key, []).extend(prev[key])
        for key, key_items in by_key.items():
            saga = key_items[0].routed.saga
            current = reads.provisional.get(key) or self._cache.get(key)
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
                    continue
                decision = decide(saga, current, item.routed, now)
                if decision.kind == "applied":
                    after = self._applied(item, decision, batch, now)
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
        serial = batch.serial
        for unit, item, after in zip(batch.units, batch.owners, batch.afters, strict=True):
            if after is not None:
                self._provisional[item.routed.key] = (serial, after)
            if unit.inbox is not None:
                self._inflight[unit.inbox] = serial
        self._pending_parked = batch.parked_items

    async def _settle_parked(self, keys: list[InstanceKey], batch: Batch, now: float) -> None:
        """Decide the parked messages of ``keys`` against their instances as they are,
        with no new message: what applies now is applied (and unparked), what is
        rejected now is dead-lettered, the rest stays parked. Reads, then no I/O."""
        waiting = self._waiting(await self.store.parked(keys))
        if not waiting:
            return
        marks = [(i.routed.saga.name, i.routed.envelope.id) for w in waiting.values() for i in w]
        seen = await self.store.seen(marks)
        missing = [k for k in waiting if k not in self._cache]
        records = await self.store.load(missing) if missing else {}
        for key, waits in waiting.items():
            current = self._cache.get(key)
            if current is None:
                record = records.get(key)
                if record is None:  # not started yet: its start reads what is parked
                    continue
                current = self._load(waits[0].routed.saga, record, [], batch, seen, now)
            self._settle(current, waits, batch, seen, now)

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
                    after = self._applied(item, decision, batch, now)
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
            else:
                self._reject(item, reason, batch, record.version, "unloadable")
        return None

    def _applied(self, item: Item, decision: Decision, batch: Batch, now: float) -> Instance | None:
        """Add the unit of work of an applied decision; None (and the event rejected) if
        its records cannot be made, say a state value that has no JSON form."""
        try:
            unit = unit_for(item.routed, decision, now, fired_timer=item.timer)
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
                p = item.parked
                d = Delivery(destination=p.destination, body=p.body, headers={})
        if d is not None:
            batch.rejected[len(batch.units)] = (d, reason, kind)
        batch.add(unit, item, None)

    def _waiting(self, parked: list[ParkedRecord]) -> dict[InstanceKey, list[Item]]:
        """Parked messages as items, per instance, in the order read (parked order);
        those of sagas not loaded here, or that no longer decode, are left parked."""
        waiting: dict[InstanceKey, list[Item]] = {}
        for p in parked:
            item = self._from_parked(p)
            if item is not None:
                waiting.setdefault(item.routed.key, []).append(item)
        return waiting

    def _from_parked(self, p: ParkedRecord) -> Item | None:
        saga = self.router.sagas.get(p.saga)
        if saga is None:
            return None
        try:
            env = decode(p.body)
        except MessageError:
            return None
        for r in self.router.route(env):
            if isinstance(r, Routed) and r.saga.name == p.saga:
                return Item(r, parked=p)
        return None


def _version(instance: Instance | None) -> int:
    """The version a decision was made on (0: no instance), for its unit's check."""
    return 0 if instance is None else instance.version
