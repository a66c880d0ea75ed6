"""What happens without a delivery: timers falling due, parked messages expiring or
becoming applicable. (Outbox rows left by a crash or an outage: ``relay``.)

Each pass takes the engine's lock only for what writes (firing timers, expiring
parked messages, a revival), through the same stages a delivery goes through.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import structlog

from orchestrator.engine.batch import Batch
from orchestrator.engine.clock import Clock
from orchestrator.engine.committing import Committer
from orchestrator.engine.config import EngineConfig, Stats
from orchestrator.engine.deciding import Decider
from orchestrator.engine.intake import Intake
from orchestrator.engine.persist import parked_delivery
from orchestrator.engine.pipeline import Pipeline
from orchestrator.engine.reading import Reader
from orchestrator.engine.working import WorkingSet
from orchestrator.store.base import InstanceKey, Store, UnitOfWork
from schemas.errors import StoreError

__all__ = ["Housekeeper"]

log = structlog.get_logger("sagawire.engine")


class Housekeeper:
    """Timers, parked-message expiry and revival."""

    def __init__(
        self,
        store: Store,
        intake: Intake,
        reader: Reader,
        decider: Decider,
        pipeline: Pipeline,
        committer: Committer,
        working: WorkingSet,
        lock: asyncio.Lock,
        clock: Clock,
        stats: Stats,
        config: EngineConfig,
    ) -> None:
        self.store = store
        self.intake = intake
        self.reader = reader
        self.decider = decider
        self.pipeline = pipeline
        self.committer = committer
        self.working = working
        self.lock = lock
        self.clock = clock
        self.stats = stats
        self.config = config
        self.owns: Callable[[InstanceKey], bool] | None = None
        """In partitioned mode, whether this replica reads an instance's partition: it
        fires only those instances' timers (every replica firing every timer would
        meet a version conflict on all but one)."""
        self.skipped = False
        """The last pass left due timers to the replicas that own them."""

    async def fire_due(self) -> int:
        """Fire due timers, expire parked messages, and try the parked messages of the
        instances this engine moved since the last pass. Returns timers fired."""
        async with self.lock:
            await self.pipeline.drain()
            now = self.clock.now()
            timers = await self.store.due_timers(now, limit=self.config.max_batch)
            owns = self.owns
            self.skipped = False
            if owns is not None and timers:  # partitioned: the other replicas fire theirs
                mine = [t for t in timers if owns((t.saga, t.correlation_id))]
                self.skipped = len(mine) < len(timers)
                timers = mine
            if timers:
                batch = Batch()
                items = [i for i in map(self.intake.timer_item, timers) if i is not None]
                stale = [t for t in timers if t.saga not in self.intake.router.sagas]
                await self.pipeline.decide_items(items, batch)
                if stale:
                    for t in stale:
                        log.warning(
                            "timer of an unloaded saga dropped",
                            saga=t.saga,
                            correlation_id=t.correlation_id,
                            timer=t.name,
                        )
                    await self.store.commit(
                        [UnitOfWork(timers_cancelled=tuple(t.key for t in stale))]
                    )
                await self.pipeline.complete(batch)
                self.stats.timers_fired += len(items)
            await self._expire_parked(now)
        # Which instances have parked messages: this engine's own are added as it parks
        # them, another replica's learned here (read outside the lock: consuming goes on).
        working = self.working
        before = set(working.parked_keys)
        moved = working.take_moved()
        fresh = await self.store.parked_keys()
        working.learn_parked(fresh, before)
        await self._revive_parked(fresh, moved)
        return len(timers)

    async def _revive_parked(self, fresh: set[InstanceKey], moved: set[InstanceKey]) -> None:
        """Try the parked messages of the instances this engine moved since the last
        pass, against the stored state; what still does not apply stays parked.

        Why: a message parked by another replica is read by this one only for an
        instance it knew to have parked messages when it read its batch. A reply parked
        on replica B while this one moved the instance to the state that takes it (or
        created it) waited for the instance's next message: the very reply that was
        parked, until the step timed out and the saga was compensated. Any park that
        such a move did not see committed on a version at or before the move's (parks
        carry a version check), so it is in ``fresh`` by this pass, after the move.
        Keys stay in ``to_revive`` until their revive commits: a store error or a
        conflict (another replica moved the instance: the cache entry is dropped, so
        the next try reads the store) is tried again on the next pass. After a restart
        every parked-for instance is tried once (``Engine.prepare``)."""
        pending = self.working.due_for_revival(moved, fresh)
        step = self.config.max_batch
        for at in range(0, len(pending), step):
            keys = pending[at : at + step]
            try:
                revived = await self._revive(keys)
            except StoreError as exc:
                if not exc.retryable:
                    raise
                log.warning("store unavailable; parked messages tried again later", error=str(exc))
                return
            if revived:
                self.working.revived(keys)

    async def _revive(self, keys: list[InstanceKey]) -> bool:
        """Decide the parked messages of ``keys`` and commit, deciding again on a
        conflict (``conflict_retries`` in all); False if it must wait for a next pass."""
        async with self.lock:
            await self.pipeline.drain()
            for _ in range(self.config.conflict_retries):
                batch = Batch()
                reads = await self.reader.read_parked(keys)
                self.decider.settle_parked(batch, reads, self.clock.now())
                if not batch.units:
                    return True
                await self.pipeline.complete(batch)
                if not batch.broken:
                    return True
            return False

    async def _expire_parked(self, now: float) -> None:
        """Parked messages that waited their time: for a saga that tracks deviations
        from its flow, each is decided once more as one (recorded, never a dead letter:
        :mod:`orchestrator.engine.flow`); any other is dead-lettered, then unparked. In
        this order so that no message is lost between the two: a dead letter the broker
        cannot take now is tried again (held); an unpark that fails after the dead
        letter went out only means the message is dead-lettered again next pass."""
        expired = await self.store.expired_parked(now, limit=self.config.max_batch)
        if not expired:
            return
        sagas = self.intake.router.sagas
        late = []
        for p in expired:
            saga = sagas.get(p.saga)
            item = self.intake.late_item(p) if saga and saga.deviations is not None else None
            if item is not None:
                late.append(item)
        if late:
            batch = Batch()
            await self.pipeline.decide_items(late, batch)
            await self.pipeline.complete(batch)
            taken = {id(i.parked) for i in late}
            expired = [p for p in expired if id(p) not in taken]
        done: list[tuple[str, str]] = []
        for p in expired:
            d = parked_delivery(p)
            reason = (
                f"saga {p.saga!r}: {p.reason or 'parked'}; still not applicable after"
                f" {p.expires - p.parked_at:g}s, instance {p.correlation_id!r}"
            )
            routed_to = (p.saga, p.correlation_id)
            if not await self.committer.dead_letter(d, reason, "expired", routed_to):
                break  # stopping: the rest stay parked, and expire on the next start
            done.append((p.saga, p.message_id))
        if done:
            await self.store.commit([UnitOfWork(unparked=tuple(done))])
