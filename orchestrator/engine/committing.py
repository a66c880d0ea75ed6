"""Step 4 (and 6): commit a decided batch as one unit of work, publish its outbox,
dead-letter what can never be handled, acknowledge the rest.

One store transaction writes every unit of the batch (state, inbox mark, history,
outbox rows, timers, parked messages). Then the outbox rows of what committed are
published at once, and the ids marked published with the next write; what could
not be published now is left to the relay (:mod:`orchestrator.engine.relay`).
Dead letters go out before acknowledgements: a delivery is acknowledged only once
what it caused is stored or its dead letter is published.
"""

from __future__ import annotations

import logging
from time import perf_counter

import structlog

from adapters.base import HEADER_MESSAGE_ID, Delivery, OutgoingMessage, Transport
from orchestrator.engine.batch import Batch, DeadLetter
from orchestrator.engine.config import EngineConfig, Observer, Stats
from orchestrator.engine.deadletters import DeadLetterKeeper
from orchestrator.engine.outage import StoreHealth, backoff
from orchestrator.engine.persist import outgoing
from orchestrator.engine.relay import Relay
from orchestrator.engine.working import WorkingSet
from orchestrator.store.base import Outcome, Store
from schemas.errors import PublishRefused, StoreError, TransportError

__all__ = ["Committer"]

log = structlog.get_logger("sagawire.engine")


class Committer:
    """Commit, publish, dead-letter, acknowledge."""

    def __init__(
        self,
        store: Store,
        transport: Transport,
        working: WorkingSet,
        relay: Relay,
        health: StoreHealth,
        stats: Stats,
        observers: list[Observer],
        config: EngineConfig,
        keeper: DeadLetterKeeper | None = None,
    ) -> None:
        self.keeper = keeper
        """Keeps each dead letter in the store before it is published (None: only
        published, as in unit tests of this stage alone)."""
        self.store = store
        self.transport = transport
        self.working = working
        self.relay = relay
        self.health = health
        self.stats = stats
        self.observers = observers
        self.config = config

    async def commit(self, batch: Batch) -> list[Delivery]:
        """Write the batch's units in one transaction and publish what they send.
        Returns the deliveries to decide again (their instance moved: a conflict).
        Raises the store's error (the batch is then marked broken)."""
        if not batch.units:
            return []
        working = self.working
        started = perf_counter()
        try:
            outcomes = await self.store.commit(batch.units, published=working.published)
        except BaseException:
            batch.broken = True
            working.distrust()  # the outcome is unknown: trust only the store
            self.relay.needed()  # and its outbox rows may be committed, unpublished
            raise
        stats = self.stats
        stats.commit_seconds.observe(perf_counter() - started)
        working.take_published()  # marked by that commit
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
            key = item.routed.key
            delivered = item.delivery is not None  # from the broker (not a timer, not parked)
            if after is not None:
                working.remember(key, after if outcome is Outcome.COMMITTED else None)
            if outcome is Outcome.CONFLICT:  # decided on a state that moved: reread it
                batch.broken = True
                stats.conflicts += 1
                working.forget(key)
            if rejected and i in rejected and outcome is Outcome.COMMITTED:
                batch.dead.append(rejected[i])
                batch.routed_to[id(rejected[i][0])] = key
                if delivered:
                    stats.handled(item.routed.saga.name, item.routed.envelope.type, "dead_lettered")
            if outcome is Outcome.COMMITTED:
                if unit.parked:
                    stats.parked += 1
                    working.mark_parked(key)
                    if delivered:
                        stats.handled(item.routed.saga.name, item.routed.envelope.type, "parked")
                if decision is not None and decision.instance is not None:
                    stats.transitions += 1
                    stats.moved(item.routed.saga, decision, decision.instance)
                    if delivered:
                        stats.handled(item.routed.saga.name, item.routed.envelope.type, "applied")
                    if decision.deviation:
                        stats.deviated(item.routed.saga.name, decision.deviation.split(":", 1)[0])
                    working.mark_moved(key)
                    committed.extend([outgoing(o) for o in unit.outbox])
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
                stats.duplicates += 1
                if delivered:
                    stats.handled(item.routed.saga.name, item.routed.envelope.type, "duplicate")
            elif item.delivery is not None:  # a version conflict: decide again
                retry[id(item.delivery)] = item.delivery
                batch.failed.add(id(item.delivery))
        if committed:
            await self.publish(committed)
        return list(retry.values())

    async def publish(self, messages: list[OutgoingMessage]) -> None:
        """Publish what a commit stored; what cannot go now is left to the relay."""
        try:
            await self.transport.publish(messages)
            self.working.published_now([m.message_id for m in messages])
        except PublishRefused as exc:  # the rest were published
            self.working.published_now(
                [m.message_id for m in messages if m.message_id not in exc.refused]
            )
            await self.relay.refuse(exc)
        except TransportError as exc:
            self.relay.needed()
            log.warning("publish failed; the outbox relay will retry", error=str(exc))

    async def finish(self, batch: Batch) -> None:
        """Dead-letter what can never be handled, then acknowledge every delivery that
        was settled. A dead letter the broker cannot take now is tried again (held, with
        a growing pause) until it can: acknowledging it first would lose the message."""
        # what is to be decided again is dead-lettered then, if still so
        letters = [dead for dead in batch.dead if id(dead[0]) not in batch.failed]
        if letters and not await self._keep(letters, batch.routed_to):
            letters = []  # stopping before the store took them: left unsettled
            batch.failed.update(id(d) for d, _, _ in batch.dead)
        for d, reason, kind in letters:
            if not await self.dead_letter(d, reason, kind, kept=True):
                batch.failed.add(id(d))  # stopping: left unsettled, the broker redelivers
        failed = batch.failed
        done = [d for d in batch.deliveries if id(d) not in failed] if failed else batch.deliveries
        if done:
            try:
                await self.transport.ack(done)
            except TransportError as exc:
                # What they caused is committed: the broker delivers them again once it
                # is back, and the inbox makes each a duplicate. A broker cut mid-ack
                # must not stop the engine (a NATS flush timing out did).
                log.warning(
                    "acknowledgement failed; the broker will redeliver (the inbox skips them)",
                    deliveries=len(done),
                    error=str(exc),
                )

    async def _keep(self, letters: list[DeadLetter], routed_to: dict[int, tuple[str, str]]) -> bool:
        """Keep a batch's dead letters in the store, in one transaction, retrying while
        the store is down; False if the engine stops first."""
        if self.keeper is None:
            return True
        pauses = backoff(self.config.retry_backoff_first, self.config.retry_backoff_max)
        while True:
            try:
                await self.keeper.keep(
                    [(d, reason, kind, routed_to.get(id(d))) for d, reason, kind in letters]
                )
            except StoreError as exc:
                log.warning("keeping dead letters failed; trying again", error=str(exc))
                if await self.health.pause(next(pauses)):
                    return False
                continue
            return True

    async def dead_letter(
        self,
        d: Delivery,
        reason: str,
        kind: str,
        routed_to: tuple[str, str] | None = None,
        *,
        kept: bool = False,
    ) -> bool:
        """Keep one dead letter in the store (unless ``kept`` already), then publish it,
        retrying while the store or the broker is unavailable; False if the engine stops
        first. ``routed_to``: the instance that refused it, if one did."""
        if not kept and not await self._keep(
            [(d, reason, kind)], {id(d): routed_to} if routed_to else {}
        ):
            return False
        pauses = backoff(self.config.retry_backoff_first, self.config.retry_backoff_max)
        while True:
            try:  # kept first, so that a crash after the publish loses no record
                await self.transport.dead_letter(d, reason)
            except PublishRefused as exc:  # the broker will never take it: say so, loudly
                log.error(  # noqa: TRY400 - the refusal is the news, not a traceback
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
                if await self.health.pause(next(pauses)):
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

    async def flush_marks(self) -> None:
        """Mark published ids in the store without waiting for the next commit."""
        if self.working.published:
            await self.store.mark_published(self.working.published)
            self.working.take_published()
