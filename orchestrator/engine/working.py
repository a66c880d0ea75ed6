"""What the engine knows that the store does not say yet, shared by its stages.

The pipeline decides batch N+1 while batch N commits, so for a moment the truth
about an instance is in N's decisions, not in the store: the instances N decided
(``provisional``) and the inbox marks it will write (``inflight``). Running
instances this engine committed are kept (``cache``) so the next message for them
needs no read. Housekeeping needs to know which instances have parked messages
(``parked_keys``) and which this engine moved since its last pass (``moved``), to
try their parked messages (``to_revive``). Ids published but not yet marked in the
store (``published``) are marked with the next commit, and never published again
meanwhile.

Every stage reads these by name; what changes them is a method here, so a reader
can find every writer of a field in this file.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from orchestrator.engine.model import Instance
from orchestrator.store.base import InstanceKey

if TYPE_CHECKING:
    from orchestrator.engine.batch import Batch, Item

__all__ = ["WorkingSet"]


class WorkingSet:
    """The engine's memory between and across batches (see the module docstring)."""

    def __init__(self, cache_size: int) -> None:
        self.cache_size = cache_size
        self.limit = cache_size
        """The cache's size now: ``cache_size``, or 0 while replicas compete (:meth:`share`)."""
        self.cache: dict[InstanceKey, Instance] = {}
        """Running instances as committed by this engine; insertion-ordered, oldest first.
        A stale entry (another replica moved the instance) is caught by the version
        check at commit and dropped."""
        self.provisional: dict[InstanceKey, tuple[int, Instance]] = {}
        """Instances decided by a batch not yet committed, by that batch's serial."""
        self.inflight: dict[tuple[str, str], int] = {}
        """Inbox marks a batch not yet committed will write, by its serial."""
        self.pending_parked: dict[InstanceKey, list[Item]] = {}
        """Messages the batch not yet committed parks: the next batch may apply them."""
        self.parked_keys: set[InstanceKey] = set()
        """Instances known to have parked messages (this engine's and the store's)."""
        self.moved: set[InstanceKey] = set()
        """Instances this engine wrote since the last housekeeping pass."""
        self.to_revive: set[InstanceKey] = set()
        """Instances whose parked messages housekeeping must still try."""
        self.published: list[str] = []
        """Outbox ids published and not yet marked in the store."""

    def current(self, key: InstanceKey) -> Instance | None:
        """The instance as this engine last committed it (None: read the store)."""
        return self.cache.get(key)

    def remember(self, key: InstanceKey, instance: Instance | None) -> None:
        """Keep a running instance just committed; forget a finished or unknown one."""
        cache = self.cache
        cache.pop(key, None)
        if instance is None or instance.status.final or self.limit <= 0:
            return
        cache[key] = instance
        if len(cache) > self.limit:
            del cache[next(iter(cache))]

    def forget(self, key: InstanceKey) -> None:
        """Drop one cached instance: another writer moved it."""
        self.cache.pop(key, None)

    def share(self, shared: bool) -> None:
        """Other replicas compete for this one's messages (``shared``), or no longer:
        while they do, any of them may move any instance, so nothing is cached (every
        cached copy would be stale for every other event, a version conflict each)."""
        limit = 0 if shared else self.cache_size
        if limit != self.limit:
            self.limit = limit
            self.cache.clear()

    def forget_where(self, stale: Callable[[InstanceKey], bool]) -> None:
        """Drop the cached instances ``stale`` picks: a partition taken over from
        another replica, which moved them since this one last did."""
        for key in [k for k in self.cache if stale(k)]:
            del self.cache[key]

    def distrust(self) -> None:
        """Drop every cached instance: a commit's outcome is unknown, trust the store."""
        self.cache.clear()

    def hold(self, batch: Batch) -> None:
        """Record what ``batch`` decided, for the next batch to decide on before it
        commits (its instances, its inbox marks, the messages it parks)."""
        serial = batch.serial
        provisional = self.provisional
        inflight = self.inflight
        for unit, item, after in zip(batch.units, batch.owners, batch.afters, strict=True):
            if after is not None:
                provisional[item.routed.key] = (serial, after)
            if unit.inbox is not None:
                inflight[unit.inbox] = serial
        self.pending_parked = batch.parked_items

    def release(self, batch: Batch) -> None:
        """Drop what ``batch`` held (committed now, or failed: either way the store and
        the cache say what is true)."""
        if self.pending_parked is batch.parked_items:
            self.pending_parked = {}
        serial = batch.serial
        provisional = self.provisional
        inflight = self.inflight
        for unit, item, after in zip(batch.units, batch.owners, batch.afters, strict=True):
            if after is not None:
                entry = provisional.get(item.routed.key)
                if entry is not None and entry[0] == serial:
                    del provisional[item.routed.key]
            if unit.inbox is not None and inflight.get(unit.inbox) == serial:
                del inflight[unit.inbox]

    def drop_provisional(self) -> None:
        """Forget every provisional instance: nothing is pending, decide on the store."""
        self.provisional.clear()

    def mark_parked(self, key: InstanceKey) -> None:
        self.parked_keys.add(key)

    def learn_parked(self, fresh: set[InstanceKey], before: set[InstanceKey]) -> None:
        """The store says ``fresh`` have parked messages; keep what this engine parked
        since ``before`` was taken (the read raced with it)."""
        self.parked_keys = fresh | (self.parked_keys - before)

    def restart(self, parked: set[InstanceKey]) -> None:
        """At start-up: what is parked in the store, each instance to be tried once."""
        self.parked_keys = set(parked)
        self.to_revive = set(parked)

    def due_for_revival(
        self, moved: set[InstanceKey], fresh: set[InstanceKey]
    ) -> list[InstanceKey]:
        """The instances whose parked messages to try now: those moved that have some,
        and those still left from an earlier pass (unless nothing is parked any more)."""
        self.to_revive |= moved & fresh
        self.to_revive &= fresh
        return sorted(self.to_revive)

    def revived(self, keys: list[InstanceKey]) -> None:
        self.to_revive.difference_update(keys)

    def mark_moved(self, key: InstanceKey) -> None:
        self.moved.add(key)

    def take_moved(self) -> set[InstanceKey]:
        """The instances moved since the last call (housekeeping's pass)."""
        moved, self.moved = self.moved, set()
        return moved

    def published_now(self, ids: list[str]) -> None:
        self.published.extend(ids)

    def take_published(self) -> list[str]:
        """The ids to mark in the store with the next write; forgotten here."""
        ids, self.published = self.published, []
        return ids
