"""Step 5: commit a decided batch as one unit of work, publish its outbox, dead-letter
what can never be handled, acknowledge the rest; and keep the instance cache."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from adapters.base import HEADER_MESSAGE_ID, Delivery, OutgoingMessage
from orchestrator.engine.batch import Batch, log
from orchestrator.engine.deciding import Deciding
from orchestrator.engine.model import Instance
from orchestrator.engine.outage import backoff
from orchestrator.engine.persist import outgoing
from orchestrator.store.base import (
    InstanceKey,
    Outcome,
)
from schemas.errors import PublishRefused, TransportError

__all__ = ["Committing"]


class Committing(Deciding):
    """Commit, publish, dead-letter, ack."""

    async def _commit(self, batch: Batch) -> list[Delivery]:
        if not batch.units:
            return []
        try:
            outcomes = await self.store.commit(batch.units, published=self._published)
        except BaseException:
            batch.broken = True
            self._cache.clear()  # the outcome is unknown: trust only the store
            self.relay.needed()  # and its outbox rows may be committed, unpublished
            raise
        self._published = []
        # One bound logger per batch: each call through the module's lazy proxy binds a
        # new one (~3 us, even for a filtered-out line), and "saga finished" is per saga.
        logger = log.bind()
        debug = logger.is_enabled_for(logging.DEBUG)
        retry: dict[int, Delivery] = {}
        committed: list[OutgoingMessage] = []
        rejected = batch.rejected
        for i, (unit, item, decision, after, outcome) in enumerate(
            zip(batch.units, batch.owners, batch.decisions, batch.afters, outcomes, strict=True)
        ):
            if after is not None:
                self._remember(after if outcome is Outcome.COMMITTED else None, item.routed.key)
            if outcome is Outcome.CONFLICT:  # decided on a state that moved: reread it
                batch.broken = True
                self.stats.conflicts += 1
                self._cache.pop(item.routed.key, None)
            if rejected and i in rejected and outcome is Outcome.COMMITTED:
                batch.dead.append(rejected[i])
            if outcome is Outcome.COMMITTED:
                if unit.parked:
                    self.stats.parked += 1
                    self._parked_keys.add(item.routed.key)
                if decision is not None and decision.instance is not None:
                    self.stats.transitions += 1
                    self._moved.add(item.routed.key)
                    committed.extend(outgoing(o) for o in unit.outbox)
                    if debug:
                        logger.debug(
                            "transition",
                            saga=item.routed.saga.name,
                            correlation_id=item.routed.correlation_id,
                            message_id=item.routed.envelope.id,
                            message_type=item.routed.envelope.type,
                            from_state=decision.from_state,
                            state=decision.instance.state,
                            status=decision.instance.status.value,
                            sent=[m.type for m in decision.messages],
                        )
                    if decision.instance.status.final:
                        logger.info(
                            "saga finished",
                            saga=item.routed.saga.name,
                            correlation_id=item.routed.correlation_id,
                            state=decision.instance.state,
                            status=decision.instance.status.value,
                            failure=decision.instance.meta.failure,
                        )
                    for observe in self.observers:
                        observe(decision.instance, decision)
            elif outcome is Outcome.DUPLICATE:
                self.stats.duplicates += 1
            elif item.delivery is not None:  # a version conflict: decide again
                retry[id(item.delivery)] = item.delivery
                batch.failed.add(id(item.delivery))
        if committed:
            try:
                await self.transport.publish(committed)
                self._published.extend(m.message_id for m in committed)
            except PublishRefused as exc:  # the rest were published
                self._published.extend(
                    m.message_id for m in committed if m.message_id not in exc.refused
                )
                await self.relay.refuse(exc)
            except TransportError as exc:
                self.relay.needed()
                log.warning("publish failed; the outbox relay will retry", error=str(exc))
        return list(retry.values())

    def _remember(self, instance: Instance | None, key: InstanceKey) -> None:
        """Keep running instances this engine committed, so the next message for them
        needs no store read; finished ones leave memory. A stale entry (another
        sidecar moved the instance) is caught by the version check at commit."""
        cache = self._cache
        cache.pop(key, None)
        if instance is None or instance.status.final or self.config.cache_size <= 0:
            return
        cache[key] = instance
        if len(cache) > self.config.cache_size:
            del cache[next(iter(cache))]

    async def _finish(self, deliveries: Sequence[Delivery], batch: Batch) -> None:
        """Dead-letter what can never be handled, then acknowledge every delivery that
        was settled. A dead letter the broker cannot take now is tried again (held, with
        a growing pause) until it can: acknowledging it first would lose the message."""
        for d, reason, kind in batch.dead:
            if id(d) in batch.failed:  # to be decided again: dead-lettered then, if still so
                continue
            if not await self._dead_letter(d, reason, kind):
                batch.failed.add(id(d))  # stopping: left unsettled, the broker redelivers
        done = [d for d in deliveries if id(d) not in batch.failed]
        if done:
            await self.transport.ack(done)

    async def _dead_letter(self, d: Delivery, reason: str, kind: str) -> bool:
        """Publish one dead letter, retrying while the broker is unavailable; False if the
        engine stops first."""
        pauses = backoff(self.config.retry_backoff_first, self.config.retry_backoff_max)
        while True:
            try:
                await self.transport.dead_letter(d, reason)
            except PublishRefused as exc:  # the broker will never take it: say so, loudly
                log.error(
                    "dead letter refused by the broker; the message is dropped",
                    reason=reason,
                    refusal=str(exc),
                    destination=d.destination,
                    message_id=d.headers.get(HEADER_MESSAGE_ID, ""),
                )
                self.stats.dead_lettered("refused")
                return True
            except TransportError as exc:
                log.warning("dead-letter failed; trying again", error=str(exc))
                if await self._health.pause(next(pauses)):
                    return False
                continue
            self.stats.dead_lettered(kind)
            log.warning(
                "dead-lettered",
                reason=reason,
                destination=d.destination,
                message_id=d.headers.get(HEADER_MESSAGE_ID, ""),
            )
            return True
