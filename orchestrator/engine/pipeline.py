"""The batch's path through the stages: intake -> reading -> deciding -> committing.

Two ways through. :meth:`Pipeline.handle` takes a batch end to end. :meth:`Pipeline.step`,
what the consumer calls, decides batch N+1 while batch N commits: the store reads
for N+1 happen before N's commit starts, instances N decided but has not committed
are read from the working set's ``provisional`` and its inbox marks from
``inflight``; commits, publishes and acks stay in batch order. If N did not fully
commit (a version conflict, a store failure), N+1 was decided on a state that never
was: both are decided again, serially, in order.

Nothing goes back to the broker for a failure of the world: a store outage is
waited out holding the deliveries (:mod:`orchestrator.engine.outage`), a conflict is
decided again at once on the stored state. Only a stop gives held deliveries back.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import structlog

from adapters.base import Delivery, Transport
from orchestrator.engine.batch import Batch, Item, Reads
from orchestrator.engine.clock import Clock
from orchestrator.engine.committing import Committer
from orchestrator.engine.config import EngineConfig, Stats
from orchestrator.engine.deciding import Decider
from orchestrator.engine.intake import Intake
from orchestrator.engine.outage import StoreHealth, backoff
from orchestrator.engine.reading import Reader
from orchestrator.engine.working import WorkingSet
from schemas.errors import StoreError, TransportError

__all__ = ["Pipeline"]

log = structlog.get_logger("sagawire.engine")


class Pipeline:
    """Batches in, acknowledgements out: the serial path and the pipelined one."""

    def __init__(
        self,
        intake: Intake,
        reader: Reader,
        decider: Decider,
        committer: Committer,
        working: WorkingSet,
        health: StoreHealth,
        transport: Transport,
        lock: asyncio.Lock,
        clock: Clock,
        stats: Stats,
        config: EngineConfig,
    ) -> None:
        self.intake = intake
        self.reader = reader
        self.decider = decider
        self.committer = committer
        self.working = working
        self.health = health
        self.transport = transport
        self.lock = lock
        """The engine's lock: one batch, timer pass or admin action at a time."""
        self.clock = clock
        self.stats = stats
        self.config = config
        self.pending: Batch | None = None
        """Decided by :meth:`step`, not yet committed."""

    async def handle(self, deliveries: Sequence[Delivery]) -> None:
        """Handle one batch of deliveries end to end (ack each), unpipelined."""
        async with self.lock:
            await self.drain()
            self.stats.deliveries += len(deliveries)
            await self.serially(list(deliveries))

    async def step(self, deliveries: list[Delivery]) -> None:
        """The pipelined path (the caller holds the lock): decide this batch while the
        previous one commits, then keep it pending (see the module docstring)."""
        self.stats.deliveries += len(deliveries)
        batch = self.intake.parse(deliveries)
        try:
            reads = await self.reader.read(batch.items)
        except StoreError as exc:
            if not exc.retryable:
                raise
            self.health.failed(exc)
            await self.drain()  # the batch before first, then this one, in order
            await self.serially(deliveries)
            return
        prev, self.pending = self.pending, None
        committing = asyncio.ensure_future(self.complete(prev)) if prev is not None else None
        if committing is not None:
            await asyncio.sleep(0)  # let the commit reach the store thread before we decide
        try:
            self.decider.decide_batch(batch, reads, self.clock.now())
        finally:
            retry = await committing if committing is not None else []
        if prev is not None and prev.broken:
            # decided on the previous batch's instances and marks, which did not all
            # commit (a conflict, a store failure): committing this one would build on
            # a state that never was, so it is decided again, after what must be
            self.working.release(batch)
            await self.serially(retry + batch.deliveries)
            return
        self.pending = batch

    async def drain(self) -> None:
        """Complete the batch :meth:`step` decided but has not committed yet."""
        batch, self.pending = self.pending, None
        if batch is not None:
            await self.serially(await self.complete(batch))

    async def serially(self, deliveries: list[Delivery]) -> None:
        """Decide and commit ``deliveries`` in order, one batch after another, until each
        is settled: what met a version conflict (another writer moved the instance) is
        decided again at once on the stored state, and after ``conflict_retries`` rounds
        with a growing pause; a store outage is waited out holding them. Nothing goes
        back to the broker (which would count a delivery against the message) unless
        the engine stops meanwhile."""
        pending = deliveries
        pauses = backoff(self.config.retry_backoff_first, self.config.retry_backoff_max)
        rounds = 0
        while pending:
            if rounds >= self.config.conflict_retries and await self.health.pause(next(pauses)):
                await self.release(pending)
                return
            rounds += 1
            self.working.drop_provisional()
            batch = self.intake.parse(pending)
            reads = await self._read_held(batch)
            if reads is None:
                return
            self.decider.decide_batch(batch, reads, self.clock.now())
            pending = await self.complete(batch)

    async def decide_items(self, items: list[Item], batch: Batch) -> None:
        """Read for and decide ``items`` (fired timers, an operator's action) into ``batch``."""
        batch.items = items
        self.decider.decide_batch(batch, await self.reader.read(items), self.clock.now())

    async def complete(self, batch: Batch, *, wait: bool = True) -> list[Delivery]:
        """Commit, publish, dead-letter, ack. Returns the deliveries to decide again: those
        that met a version conflict, or all of them after a store outage (waited out
        here; the commit may or may not have happened, and the inbox tells). With
        ``wait=False`` (an operator's request, which should fail fast) the store's
        error is raised instead."""
        try:
            retry = await self.committer.commit(batch)
        except StoreError as exc:  # the committer marked the batch broken
            self.working.release(batch)
            if not wait:
                self.health.failed(exc)
                raise
            if not await self.health.wait(exc):
                await self.release(batch.deliveries)
                return []
            return list(batch.deliveries)
        self.health.answered()
        self.working.release(batch)
        await self.committer.finish(batch)
        return retry

    async def release(self, deliveries: list[Delivery]) -> None:
        """Give deliveries back at once: the engine stops with them unhandled."""
        if deliveries:
            try:
                await self.transport.nack(deliveries)
            except TransportError as exc:
                log.warning("broker unavailable; deliveries left unsettled", error=str(exc))

    async def _read_held(self, batch: Batch) -> Reads | None:
        """The batch's reads, waiting out a store outage with its deliveries held; None
        (deliveries released) if the engine stops first."""
        while True:
            try:
                reads = await self.reader.read(batch.items)
            except StoreError as exc:
                if not await self.health.wait(exc):
                    await self.release(batch.deliveries)
                    return None
                continue
            self.health.answered()
            return reads
