"""Step 2 of the data flow: what the store must say before a batch is decided.

For each batch, in as few queries as the store allows: which of its messages the
inbox has seen, the instances not held in memory, and the parked messages of its
instances. Together with what the batch still being committed decided (the
:class:`~orchestrator.engine.working.WorkingSet`), taken at the same moment, this is
everything deciding needs: deciding itself does no I/O.
"""

from __future__ import annotations

from orchestrator.engine.batch import Item, ParkedReads, Reads
from orchestrator.engine.intake import Intake
from orchestrator.engine.working import WorkingSet
from orchestrator.store.base import InstanceKey, Store

__all__ = ["Reader"]


class Reader:
    """Store reads for a batch, and for the parked messages of some instances."""

    def __init__(self, store: Store, working: WorkingSet, intake: Intake) -> None:
        self.store = store
        self.working = working
        self.intake = intake

    async def read(self, items: list[Item]) -> Reads:
        """Inbox marks, instances not held in memory, parked messages of these instances."""
        working = self.working
        cache = working.cache
        provisional = working.provisional
        keys = list(dict.fromkeys([i.routed.key for i in items]))
        marks = [(i.routed.saga.name, i.routed.envelope.id) for i in items if i.timer is None]
        seen = await self.store.seen(marks) if marks else set()
        missing = [k for k in keys if k not in cache and k not in provisional]
        records = await self.store.load(missing) if missing else {}
        # Parked messages of the instances this engine knows to have some, and of those
        # about to be created: an early event may have been parked by another replica
        # (housekeeping refreshes the known keys from the store, for the rest).
        known = working.parked_keys
        new = {k for k in missing if k not in records}
        parked_keys = [k for k in keys if k in known or k in new]
        parked = await self.store.parked(parked_keys) if parked_keys else []
        waiting = self.intake.parked_items(parked) if parked else {}
        seen.update(working.inflight)  # decided by the pending batch, not yet committed
        held = {k: provisional[k][1] for k in keys if k in provisional}
        return Reads(seen, records, waiting, working.pending_parked, held)

    async def read_parked(self, keys: list[InstanceKey]) -> ParkedReads:
        """The parked messages of ``keys`` as items, and what deciding them needs."""
        waiting = self.intake.parked_items(await self.store.parked(keys))
        if not waiting:
            return ParkedReads({}, set(), {})
        marks = [(i.routed.saga.name, i.routed.envelope.id) for w in waiting.values() for i in w]
        seen = await self.store.seen(marks)
        missing = [k for k in waiting if k not in self.working.cache]
        records = await self.store.load(missing) if missing else {}
        return ParkedReads(waiting, seen, records)
