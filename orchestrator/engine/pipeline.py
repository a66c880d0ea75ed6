"""Steps 1 and 6 of the data flow, and the pipeline between them.

Deliveries are parsed (decoded, routed, correlated), decided (``deciding``), committed
and acknowledged (``committing``). The pipeline decides batch N+1 while batch N
commits: store reads for N+1 happen before N's commit starts, instances N decided
but has not committed are read from ``_provisional`` and its inbox marks from
``_inflight``; commits, publishes and acks stay in batch order.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from adapters.base import Delivery
from orchestrator.engine.batch import Batch, Item, Reads, log
from orchestrator.engine.committing import Committing
from orchestrator.engine.correlate import Routed
from orchestrator.engine.outage import backoff
from schemas.codec import decode
from schemas.errors import MessageError, StoreError, TransportError

__all__ = ["Pipeline"]


class Pipeline(Committing):
    """Batches in, acknowledgements out: the serial path and the pipelined one."""

    # -- the batch ------------------------------------------------------------

    async def handle(self, deliveries: Sequence[Delivery]) -> None:
        """Handle one batch of deliveries end to end (ack each), unpipelined."""
        async with self._lock:
            await self._drain()
            self.stats.deliveries += len(deliveries)
            await self._serially(list(deliveries))

    async def _serially(self, deliveries: list[Delivery]) -> None:
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
            if rounds >= self.config.conflict_retries and await self._health.pause(next(pauses)):
                await self._release(pending)
                return
            rounds += 1
            self._provisional.clear()
            batch = self._parse(pending)
            reads = await self._read_held(batch)
            if reads is None:
                return
            self._decide_batch(batch, reads, self.clock.now())
            pending = await self._complete(batch)

    async def _read_held(self, batch: Batch) -> Reads | None:
        """The batch's reads, waiting out a store outage with its deliveries held; None
        (deliveries released) if the engine stops first."""
        while True:
            try:
                reads = await self._read(batch.items)
            except StoreError as exc:
                if not await self._health.wait(exc):
                    await self._release(batch.deliveries)
                    return None
                continue
            self._health.answered()
            return reads

    async def _release(self, deliveries: list[Delivery]) -> None:
        """Give deliveries back at once: the engine stops with them unhandled."""
        if deliveries:
            try:
                await self.transport.nack(deliveries)
            except TransportError as exc:
                log.warning("broker unavailable; deliveries left unsettled", error=str(exc))

    async def _step(self, deliveries: list[Delivery]) -> None:
        """The pipelined path: decide this batch while the previous one commits.

        The store reads for this batch happen *before* the previous commit starts (one
        writer thread serves both); instances the previous batch decided but has not
        yet committed are read from ``_provisional``, its inbox marks from
        ``_inflight``. Commits stay in batch order, so an instance's transitions are
        persisted, published and acknowledged in arrival order. If the previous batch
        met a version conflict, this one, decided on it, is dropped and both are decided
        again serially, in order."""
        self.stats.deliveries += len(deliveries)
        batch = self._parse(deliveries)
        try:
            reads = await self._read(batch.items)
        except StoreError as exc:
            if not exc.retryable:
                raise
            self._health.failed(exc)
            await self._drain()  # the batch before first, then this one, in order
            await self._serially(deliveries)
            return
        prev, self._pending = self._pending, None
        committing = asyncio.ensure_future(self._complete(prev)) if prev is not None else None
        if committing is not None:
            await asyncio.sleep(0)  # let the commit reach the store thread before we decide
        try:
            self._decide_batch(batch, reads, self.clock.now())
        finally:
            retry = await committing if committing is not None else []
        if prev is not None and prev.broken:
            # decided on the previous batch's instances and marks, which did not all
            # commit (a conflict, a store failure): committing this one would build on
            # a state that never was, so it is decided again, after what must be
            self._forget(batch)
            await self._serially(retry + batch.deliveries)
            return
        self._pending = batch

    async def _drain(self) -> None:
        """Complete the batch the pipeline decided but has not committed yet."""
        batch, self._pending = self._pending, None
        if batch is not None:
            await self._serially(await self._complete(batch))

    def _parse(self, deliveries: list[Delivery]) -> Batch:
        self._serial += 1
        batch = Batch(deliveries=deliveries, serial=self._serial)
        limits = self.config.limits
        for d in deliveries:
            try:
                env = decode(d.body, limits)
            except MessageError as exc:
                batch.dead.append((d, exc.reason, exc.kind))
                continue
            for r in self.router.route(env):
                if isinstance(r, Routed):
                    batch.items.append(Item(r, delivery=d))
                else:
                    batch.dead.append((d, r.reason, r.kind))
        return batch

    async def _complete(self, batch: Batch, *, wait: bool = True) -> list[Delivery]:
        """Commit, publish, dead-letter, ack. Returns the deliveries to decide again: those
        that met a version conflict, or all of them after a store outage (waited out
        here; the commit may or may not have happened, and the inbox tells). With
        ``wait=False`` (an operator's request, which should fail fast) the store's
        error is raised instead."""
        try:
            retry = await self._commit(batch)
        except StoreError as exc:  # _commit marked the batch broken
            self._forget(batch)
            if not wait:
                self._health.failed(exc)
                raise
            if not await self._health.wait(exc):
                await self._release(batch.deliveries)
                return []
            return list(batch.deliveries)
        self._health.answered()
        self._forget(batch)
        await self._finish(batch.deliveries, batch)
        return retry

    def _forget(self, batch: Batch) -> None:
        """Drop this batch's provisional instances and in-flight marks (committed now,
        or failed: either way the store and the cache say what is true)."""
        if self._pending_parked is batch.parked_items:
            self._pending_parked = {}
        serial = batch.serial
        for unit, item, after in zip(batch.units, batch.owners, batch.afters, strict=True):
            if after is not None:
                entry = self._provisional.get(item.routed.key)
                if entry is not None and entry[0] == serial:
                    del self._provisional[item.routed.key]
            if unit.inbox is not None and self._inflight.get(unit.inbox) == serial:
                del self._inflight[unit.inbox]
