"""Step 1 of the data flow: bytes become items to decide.

A delivery's bytes are decoded into an envelope (:mod:`schemas.codec`, within the
configured limits) and routed to the instance of each saga that consumes its type
(:mod:`orchestrator.engine.correlate`). What cannot be decoded or routed becomes a
dead letter with its reason and kind, here, before anything reads the store. Parked
messages and fired timers come back into the engine through here too, as items.
"""

from __future__ import annotations

from adapters.base import Delivery
from orchestrator.engine.batch import Batch, Item
from orchestrator.engine.correlate import Routed, Router
from orchestrator.language.definition import timer_event
from orchestrator.store.base import InstanceKey, ParkedRecord, TimerRecord
from schemas.codec import decode
from schemas.envelope import Envelope
from schemas.errors import MessageError
from schemas.limits import Limits

__all__ = ["Intake"]


class Intake:
    """Deliveries, parked rows and timer rows in; :class:`Item` objects out."""

    def __init__(self, router: Router, limits: Limits) -> None:
        self.router = router
        self.limits = limits
        self._serial = 0

    def parse(self, deliveries: list[Delivery]) -> Batch:
        """A new batch of ``deliveries``: its items, and its dead letters."""
        self._serial += 1
        batch = Batch(deliveries=deliveries, serial=self._serial)
        limits = self.limits
        route = self.router.route
        items = batch.items
        dead = batch.dead
        for d in deliveries:
            try:
                env = decode(d.body, limits)
            except MessageError as exc:
                dead.append((d, exc.reason, exc.kind))
                continue
            for r in route(env):
                if isinstance(r, Routed):
                    items.append(Item(r, d))
                else:
                    dead.append((d, r.reason, r.kind))
        return batch

    def parked_items(self, parked: list[ParkedRecord]) -> dict[InstanceKey, list[Item]]:
        """Parked messages as items, per instance, in the order read (parked order);
        those of sagas not loaded here, or that no longer decode, are left parked."""
        waiting: dict[InstanceKey, list[Item]] = {}
        for p in parked:
            item = self._from_parked(p)
            if item is not None:
                waiting.setdefault(item.routed.key, []).append(item)
        return waiting

    def _from_parked(self, p: ParkedRecord, late: bool = False) -> Item | None:
        if p.saga not in self.router.sagas:
            return None
        try:
            env = decode(p.body)
        except MessageError:
            return None
        for r in self.router.route(env):
            if isinstance(r, Routed) and r.saga.name == p.saga:
                return Item(r, parked=p, late=late)
        return None

    def late_item(self, p: ParkedRecord) -> Item | None:
        """A parked message whose grace period ended, to be decided as a deviation by a
        saga that tracks them (None if it no longer decodes or routes)."""
        return self._from_parked(p, late=True)

    def timer_item(self, t: TimerRecord) -> Item | None:
        """A fired timer as an item (None if its saga is not loaded here)."""
        saga = self.router.sagas.get(t.saga)
        if saga is None:
            return None
        env = Envelope.new(
            timer_event(t.name),
            {},
            id=f"timer:{t.saga}:{t.correlation_id}:{t.name}:{t.due!r}",
            source="sagawire/timer",
            correlationid=t.correlation_id,
        )
        return Item(Routed(saga, None, env, t.correlation_id, {}), timer=t.name)
