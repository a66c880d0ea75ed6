"""In-memory store: the Store protocol in plain dicts, for tests and the demo.

Honest about the semantics the durable stores give (versions, inbox, outbox,
timers, parking, all-or-nothing per unit) so a saga tested against it behaves
the same on SQLite or PostgreSQL. It forgets everything when the process ends.
"""

from __future__ import annotations

import dataclasses
import heapq
import time
from collections import defaultdict
from collections.abc import Sequence

from orchestrator.store._admin_match import dead_letter_matches, instance_matches, instance_order
from orchestrator.store._census import cutoff
from orchestrator.store._leases_sql import FORGET_AFTER, check_ttl, requests
from orchestrator.store._plan import batch_time, unit_time
from orchestrator.store.base import (
    Census,
    DeadLetterQuery,
    DeadLetterRecord,
    FailedOutboxRecord,
    HistoryRecord,
    InstanceKey,
    InstanceQuery,
    InstanceRecord,
    LeaseView,
    OutboxRecord,
    Outcome,
    ParkedRecord,
    StuckRule,
    TimerRecord,
    UnitOfWork,
)
from schemas.errors import StoreError

__all__ = ["MemoryStore"]


class MemoryStore:
    """URL: ``memory://``."""

    def __init__(self) -> None:
        self._open = False
        self._instances: dict[InstanceKey, InstanceRecord] = {}
        self._inbox: dict[tuple[str, str], float] = {}  # mark -> when it was written
        self._history: dict[InstanceKey, list[HistoryRecord]] = defaultdict(list)
        self._outbox: dict[str, OutboxRecord] = {}
        self._failed: dict[str, FailedOutboxRecord] = {}  # outbox rows the broker refused
        self._timers: dict[tuple[str, str, str], TimerRecord] = {}
        self._timer_heap: list[tuple[float, tuple[str, str, str]]] = []
        self._parked: dict[tuple[str, str], ParkedRecord] = {}
        self._dead: dict[int, DeadLetterRecord] = {}
        self._dead_ids = 0  # never reused, as SQLite's AUTOINCREMENT and an identity
        self._members: dict[str, dict[str, float]] = {}  # group -> member -> heartbeat expiry
        self._leases: dict[str, dict[str, tuple[str, float]]] = {}  # group -> unit -> owner, expiry

    @classmethod
    def from_url(cls, url: str) -> MemoryStore:
        return cls()

    async def open(self) -> None:
        self._open = True

    async def close(self) -> None:
        self._open = False

    def _check(self) -> None:
        if not self._open:
            raise StoreError("memory store is not open; call open() first", retryable=False)

    async def ping(self) -> None:
        """Answers at once: memory does not go away while the process lives."""
        self._check()

    async def load(self, keys: Sequence[InstanceKey]) -> dict[InstanceKey, InstanceRecord]:
        self._check()
        return {k: self._instances[k] for k in keys if k in self._instances}

    async def seen(self, marks: Sequence[tuple[str, str]]) -> set[tuple[str, str]]:
        self._check()
        return {m for m in marks if m in self._inbox}

    async def commit(
        self, units: Sequence[UnitOfWork], *, published: Sequence[str] = ()
    ) -> list[Outcome]:
        self._check()
        outcomes: list[Outcome] = []
        fallback: list[float] = []  # the batch's latest time, worked out if a unit needs it
        unborn: set[tuple[InstanceKey, int]] = set()  # versions this batch did not write
        for unit in units:
            if unit.inbox is not None and unit.inbox in self._inbox:
                if unit.instance is not None:  # written by another: not ours to build on
                    unborn.add((unit.instance.key, unit.instance.version))
                outcomes.append(Outcome.DUPLICATE)
                continue
            expects = unit.expects()
            if expects is not None:
                current = self._instances.get(expects[0])
                if expects in unborn or (0 if current is None else current.version) != expects[1]:
                    if unit.instance is not None:
                        unborn.add((unit.instance.key, unit.instance.version))
                    outcomes.append(Outcome.CONFLICT)
                    continue
            self._apply(unit, units, fallback)
            outcomes.append(Outcome.COMMITTED)
        for mid in published:
            self._outbox.pop(mid, None)
        self._compact_timers()
        return outcomes

    def _apply(self, unit: UnitOfWork, units: Sequence[UnitOfWork], fallback: list[float]) -> None:
        if unit.inbox is not None:  # dated as the durable stores date it (_plan.unit_time)
            at = unit_time(unit)
            if at is None:
                if not fallback:
                    fallback.append(batch_time(units))
                at = fallback[0]
            self._inbox[unit.inbox] = at
        if unit.instance is not None:
            self._instances[unit.instance.key] = unit.instance
        for h in unit.history:
            self._history[(h.saga, h.correlation_id)].append(h)
        for o in unit.outbox:
            self._outbox[o.id] = o
        for key in unit.timers_cancelled:
            self._timers.pop(key, None)
        for t in unit.timers_set:
            self._timers[t.key] = t
            heapq.heappush(self._timer_heap, (t.due, t.key))
        for p in unit.parked:
            self._parked.setdefault((p.saga, p.message_id), p)
        for mark in unit.unparked:
            self._parked.pop(mark, None)

    async def pending_outbox(
        self, limit: int = 1000, *, exclude: Sequence[str] = ()
    ) -> list[OutboxRecord]:
        self._check()
        if exclude:
            skip = set(exclude)
            return [r for r in self._outbox.values() if r.destination not in skip][:limit]
        return list(self._outbox.values())[:limit]

    async def mark_published(self, ids: Sequence[str]) -> None:
        self._check()
        for mid in ids:
            self._outbox.pop(mid, None)

    async def mark_failed(self, failures: Sequence[tuple[str, str]], at: float) -> None:
        self._check()
        for mid, reason in failures:
            row = self._outbox.pop(mid, None)
            if row is not None:
                self._failed[mid] = FailedOutboxRecord(row, reason, at)

    async def failed_outbox(self, limit: int = 100) -> list[FailedOutboxRecord]:
        """Most recent first; rows failed at the same time by id, as the durable stores
        order them."""
        self._check()
        rows = sorted(self._failed.values(), key=lambda f: (-f.failed_at, f.row.id))
        return rows[:limit]

    def _compact_timers(self) -> None:
        """Rebuild the timer heap once it holds more than twice as many entries as there
        are live timers (and over a thousand stale ones): entries of moved or cancelled
        timers are dropped lazily, so a saga that moves one timer at every step would
        otherwise leave an entry per step until its old due time comes round."""
        heap = self._timer_heap
        if len(heap) > 2 * len(self._timers) + 1024:
            self._timer_heap = [(t.due, key) for key, t in self._timers.items()]
            heapq.heapify(self._timer_heap)

    def _drop_stale_heads(self) -> None:
        heap = self._timer_heap
        while heap:
            due, key = heap[0]
            timer = self._timers.get(key)
            if timer is not None and timer.due == due:
                return
            heapq.heappop(heap)

    async def due_timers(self, now: float, limit: int = 1000) -> list[TimerRecord]:
        """The earliest due timers, read off the heap: O(due x log n), not a scan of every
        timer on each housekeeping tick. What is popped is pushed back (a due timer stays
        until the engine's commit cancels it), except entries a move or cancel made stale."""
        self._check()
        heap, timers = self._timer_heap, self._timers
        due: list[TimerRecord] = []
        keep: list[tuple[float, tuple[str, str, str]]] = []
        while heap and heap[0][0] <= now and len(due) < limit:
            entry = heapq.heappop(heap)
            timer = timers.get(entry[1])
            if timer is None or timer.due != entry[0]:
                continue  # moved or cancelled since: dropped from the heap
            if not keep or keep[-1] != entry:  # set twice at the same time: once
                keep.append(entry)
                due.append(timer)
        for entry in keep:
            heapq.heappush(heap, entry)
        return due

    async def next_timer_due(self) -> float | None:
        self._check()
        self._drop_stale_heads()
        return self._timer_heap[0][0] if self._timer_heap else None

    async def parked(self, keys: Sequence[InstanceKey]) -> list[ParkedRecord]:
        self._check()
        wanted = set(keys)
        rows = [p for p in self._parked.values() if (p.saga, p.correlation_id) in wanted]
        return sorted(rows, key=lambda p: p.parked_at)

    async def parked_keys(self) -> set[InstanceKey]:
        self._check()
        return {(p.saga, p.correlation_id) for p in self._parked.values()}

    async def expired_parked(self, now: float, limit: int = 1000) -> list[ParkedRecord]:
        self._check()
        rows = sorted(
            (p for p in self._parked.values() if p.expires <= now), key=lambda p: p.expires
        )
        return rows[:limit]

    async def prune(self, *, inbox_before: float, history_before: float | None = None) -> int:
        """Forget inbox marks (and, if asked, history entries) older than the given times."""
        self._check()
        old = [m for m, at in self._inbox.items() if at < inbox_before]
        for m in old:
            del self._inbox[m]
        n = len(old)
        if history_before is not None:
            for key, rows in list(self._history.items()):
                kept = [h for h in rows if h.at >= history_before]
                n += len(rows) - len(kept)
                self._history[key] = kept
        return n

    async def history(self, key: InstanceKey) -> list[HistoryRecord]:
        self._check()
        return list(self._history.get(key, ()))

    async def instances(
        self, saga: str | None = None, status: str | None = None, limit: int = 100
    ) -> list[InstanceRecord]:
        self._check()
        rows = [
            r
            for r in self._instances.values()
            if (saga is None or r.saga == saga) and (status is None or r.status == status)
        ]
        rows.sort(key=lambda r: (-r.updated_at, r.saga, r.correlation_id))
        return rows[:limit]

    async def find(self, query: InstanceQuery) -> list[InstanceRecord]:
        self._check()
        rows = [r for r in self._instances.values() if instance_matches(query, r)]
        rows.sort(key=instance_order, reverse=True)
        return rows[: query.limit]

    async def timers_of(self, key: InstanceKey) -> list[TimerRecord]:
        self._check()
        rows = [t for t in self._timers.values() if (t.saga, t.correlation_id) == key]
        return sorted(rows, key=lambda t: (t.due, t.name))

    async def outbox_rows(self, ids: Sequence[str]) -> list[OutboxRecord]:
        self._check()
        wanted = set(ids)
        return [o for i, o in self._outbox.items() if i in wanted]  # dict keeps insertion order

    async def recent_deviations(self, limit: int = 20) -> list[HistoryRecord]:
        self._check()
        found = [h for hs in self._history.values() for h in hs if h.note.startswith("deviation ")]
        found.sort(key=lambda h: h.at, reverse=True)
        return found[:limit]

    async def keep_dead_letters(self, records: Sequence[DeadLetterRecord]) -> None:
        self._check()
        for d in records:
            self._dead_ids += 1
            self._dead[self._dead_ids] = dataclasses.replace(d, id=self._dead_ids)

    async def dead_letters(self, query: DeadLetterQuery) -> list[DeadLetterRecord]:
        self._check()
        rows = [d for d in reversed(self._dead.values()) if dead_letter_matches(query, d)]
        return rows[: query.limit]

    async def dead_letter(self, id: int) -> DeadLetterRecord | None:
        self._check()
        return self._dead.get(id)

    async def mark_redriven(
        self,
        id: int,
        at: float,
        by: str,
        inbox: Sequence[tuple[str, str]],
        copy: OutboxRecord,
    ) -> bool:
        self._check()
        d = self._dead.get(id)
        if d is None or d.redriven_at is not None:
            return False
        self._dead[id] = dataclasses.replace(d, redriven_at=at, redriven_by=by)
        for mark in inbox:
            self._inbox.pop(mark, None)
        self._outbox.setdefault(copy.id, copy)
        return True

    async def prune_dead_letters(self, before: float) -> int:
        self._check()
        gone = [i for i, d in self._dead.items() if d.at < before]
        for i in gone:
            del self._dead[i]
        return len(gone)

    async def counts(self) -> dict[str, int]:
        self._check()
        out: dict[str, int] = defaultdict(int)
        for r in self._instances.values():
            out[r.status] += 1
        return dict(out)

    async def census(self, now: float, stuck: StuckRule | None = None) -> Census:
        self._check()
        instances: dict[tuple[str, str, str], int] = defaultdict(int)
        late: dict[tuple[str, str], int] = {}
        for r in self._instances.values():
            if r.status != "running":  # by status only, as the durable stores count them
                instances[(r.saga, "", r.status)] += 1
                continue
            instances[(r.saga, r.state, r.status)] += 1
            at = cutoff(stuck, r.saga, r.state) if stuck is not None else None
            key = (r.saga, r.state)
            late[key] = late.get(key, 0) + (at is not None and r.updated_at < at)
        return Census(
            instances=dict(instances),
            outbox_backlog=len(self._outbox),
            outbox_oldest=min((o.created_at for o in self._outbox.values()), default=None),
            timers_pending=len(self._timers),
            timers_due=sum(t.due <= now for t in self._timers.values()),
            parked=len(self._parked),
            stuck=late,
        )

    # -- replicas sharing the store (the rules: orchestrator.store._leases_sql) ---------

    async def lease_round(
        self,
        group: str,
        member: str,
        *,
        claim: Sequence[str] = (),
        release: Sequence[str] = (),
        ttl: float,
    ) -> LeaseView:
        """A round on ``time.time()``, atomic since it never awaits: replicas sharing this
        store are tasks of one process."""
        self._check()
        ttl = check_ttl(ttl)
        wanted, given_up = requests(claim, release)
        now = time.time()
        until = now + ttl
        members = self._members.setdefault(group, {})
        leases = self._leases.setdefault(group, {})
        members[member] = until
        for unit in given_up:
            if unit in leases and leases[unit][0] == member:
                del leases[unit]
        for unit in wanted:
            held = leases.get(unit)
            if held is None or held[1] < now or held[0] == member:
                leases[unit] = (member, until)
        for unit, (owner, _) in leases.items():
            if owner == member:
                leases[unit] = (member, until)
        forget = now - FORGET_AFTER * ttl
        for name in [m for m, at in members.items() if at < forget]:
            del members[name]
        for unit in [u for u, (_, at) in leases.items() if at < forget]:
            del leases[unit]
        return LeaseView(
            owners={u: owner for u, (owner, at) in leases.items() if at >= now},
            members=tuple(sorted(m for m, at in members.items() if at >= now)),
            now=now,
        )

    async def leave(self, group: str, member: str) -> None:
        self._check()
        self._members.get(group, {}).pop(member, None)
        leases = self._leases.get(group, {})
        for unit in [u for u, (owner, _) in leases.items() if owner == member]:
            del leases[unit]
