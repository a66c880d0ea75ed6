"""What happens without a delivery: timers falling due, parked messages expiring,
outbox rows left by a crash or an outage being relayed."""

from __future__ import annotations

from adapters.base import Delivery
from orchestrator.batch import Batch, Item, log
from orchestrator.correlate import Routed
from orchestrator.definition import timer_event
from orchestrator.persist import (
    outgoing,
)
from orchestrator.pipeline import Pipeline
from orchestrator.store.base import (
    InstanceKey,
    TimerRecord,
    UnitOfWork,
)
from schemas.envelope import Envelope

__all__ = ["Housekeeping"]


class Housekeeping(Pipeline):
    """Timers, parked-message expiry and the outbox relay."""

    # -- timers, parking, relay ---------------------------------------------

    async def fire_due(self) -> int:
        """Fire due timers and expire parked messages. Returns timers fired."""
        async with self._lock:
            await self._drain()
            now = self.clock.now()
            timers = await self.store.due_timers(now, limit=self.config.max_batch)
            if timers:
                batch = Batch()
                items = [i for i in (self._timer_item(t) for t in timers) if i is not None]
                stale = [t for t in timers if t.saga not in self.router.sagas]
                await self._decide_all(items, batch, now)
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
                await self._complete(batch)
                self.stats.timers_fired += len(items)
            await self._expire_parked(now)
        # Which instances have parked messages: this engine's own are added as it parks
        # them, another replica's learned here (read outside the lock: consuming goes on).
        before = set(self._parked_keys)
        fresh = await self.store.parked_keys()
        self._parked_keys = fresh | (self._parked_keys - before)  # and any parked meanwhile
        learned = sorted(fresh - before)
        for at in range(0, len(learned), self.config.max_batch):
            await self._revive(learned[at : at + self.config.max_batch])
        return len(timers)

    async def _revive(self, keys: list[InstanceKey]) -> None:
        """Try, once, the parked messages of instances another replica parked them for.

        Why: this engine may have moved such an instance to the state that takes them
        before it learned they exist (another replica parked an early reply while this
        one still held the instance a step behind). Waiting for the instance's next
        message would wait for the very reply that is parked, until the step timed out
        and the saga was compensated. What still does not apply stays parked: it is
        tried with the instance's next change, as this engine's own parked messages."""
        async with self._lock:
            await self._drain()
            for _ in range(self.config.conflict_retries):
                batch = Batch()
                await self._settle_parked(keys, batch, self.clock.now())
                if not batch.units:
                    return
                await self._complete(batch)
                if not batch.broken:  # a conflict: decided on a stale state, so again
                    return

    def _timer_item(self, t: TimerRecord) -> Item | None:
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

    async def _expire_parked(self, now: float) -> None:
        expired = await self.store.expired_parked(now, limit=self.config.max_batch)
        if not expired:
            return
        # unparked first: if that fails, nothing was dead-lettered and the next pass
        # tries again (the other order dead-lettered the same messages on every pass)
        await self.store.commit(
            [UnitOfWork(unparked=tuple((p.saga, p.message_id) for p in expired))]
        )
        for p in expired:
            d = Delivery(destination=p.destination, body=p.body, headers={})
            await self.transport.dead_letter(
                d,
                f"saga {p.saga!r}: {p.reason or 'parked'}; still not applicable after"
                f" {p.expires - p.parked_at:g}s, instance {p.correlation_id!r}",
            )
            self.stats.dead_letters += 1

    async def relay_pending(self) -> int:
        """Publish outbox rows left unpublished (a crash, a broker outage), ids intact."""
        async with self._lock:
            await self._drain()
            total = 0
            while True:
                rows = await self.store.pending_outbox(limit=1000)
                sent = set(self._published)  # published, not yet marked: not again
                rows = [r for r in rows if r.id not in sent]
                if not rows:
                    break
                await self.transport.publish([outgoing(r) for r in rows])
                await self.store.mark_published([r.id for r in rows])
                total += len(rows)
            self._relay_needed = False
            return total

    async def _flush_marks(self) -> None:
        if self._published:
            await self.store.mark_published(self._published)
            self._published = []
