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
from orchestrator.batch import Batch, Item, Reads, log
from orchestrator.committing import Committing
from orchestrator.correlate import Routed
from schemas.codec import decode
from schemas.errors import MessageError, StoreError, TransportError

__all__ = ["Pipeline"]


class Pipeline(Committing):
    """Batches in, acknowledgements out: the serial path and the pipelined one."""

    # -- the batch ------------------------------------------------------------

    async def handle(self, deliveries: Sequence[Delivery]) -> None:
        """Handle one batch of deliveries end to end (ack or nack each), unpipelined."""
        async with self._lock:
            await self._drain()
            self.stats.deliveries += len(deliveries)
            batch = self._parse(list(deliveries))
            reads = await self._read_or_nack(batch)
            if reads is None:
                return
            self._decide_batch(batch, reads, self.clock.now())
            await self._retry(await self._complete(batch))

    async def _read_or_nack(self, batch: Batch) -> Reads | None:
        """The batch's reads; None, with its deliveries nacked for redelivery, if the store
        is unavailable for now (the engine goes on, as after a failed commit)."""
        try:
            return await self._read(batch.items)
        except StoreError as exc:
            if not exc.retryable:
                raise
            log.warning("store unavailable; deliveries will be redelivered", error=str(exc))
            await self._give_back(batch.deliveries, str(exc))
            return None

    async def _retry(self, conflicted: list[Delivery]) -> None:
        """Decide again, serially and in order, what met a version conflict (another
        writer moved the instance); give up to redelivery after ``conflict_retries``."""
        pending = conflicted
        for _ in range(self.config.conflict_retries - 1):  # the first attempt counts
            if not pending:
                return
            self.stats.conflicts += len(pending)
            self._provisional.clear()
            batch = self._parse(pending)
            reads = await self._read_or_nack(batch)
            if reads is None:
                return
            self._decide_batch(batch, reads, self.clock.now())
            pending = await self._complete(batch)
        if pending:
            tries = self.config.conflict_retries
            await self._give_back(pending, f"version conflicts in {tries} tries in a row")

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
        reads = await self._read_or_nack(batch)
        if reads is None:
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
            await self._retry(retry + batch.deliveries)
            return
        self._pending = batch

    async def _drain(self) -> None:
        """Complete the batch the pipeline decided but has not committed yet."""
        batch, self._pending = self._pending, None
        if batch is not None:
            await self._retry(await self._complete(batch))

    def _parse(self, deliveries: list[Delivery]) -> Batch:
        self._serial += 1
        batch = Batch(deliveries=deliveries, serial=self._serial)
        for d in deliveries:
            try:
                env = decode(d.body)
            except MessageError as exc:
                batch.dead.append((d, exc.reason))
                continue
            for r in self.router.route(env):
                if isinstance(r, Routed):
                    batch.items.append(Item(r, delivery=d))
                else:
                    batch.dead.append((d, str(r)))
        return batch

    async def _complete(self, batch: Batch) -> list[Delivery]:
        """Commit, publish, dead-letter, ack. Returns deliveries to retry (conflicts)."""
        try:
            retry = await self._commit(batch)
        except StoreError as exc:  # _commit marked the batch broken
            self._forget(batch)
            if not exc.retryable:
                raise
            log.warning("store unavailable; deliveries will be redelivered", error=str(exc))
            await self._give_back(batch.deliveries, str(exc))
            return []
        self._forget(batch)
        await self._finish(batch.deliveries, batch)
        return retry

    async def _give_back(self, deliveries: list[Delivery], why: str) -> None:
        """Nack ``deliveries`` for redelivery, but dead-letter (with ``why``) those the
        broker would not deliver again. A broker failing here too is logged: what was
        left unsettled comes back once the broker's own timeout passes, except a last
        delivery whose dead letter failed as well, which a broker that limits deliveries
        (NATS) then drops."""
        try:
            final = [d for d in deliveries if d.final_attempt]
            for d in final:  # the broker would drop it after this: keep it, with why
                await self.transport.dead_letter(
                    d, f"not handled after {d.delivery_count} deliveries: {why}"
                )
            if final:
                await self.transport.ack(final)
            rest = [d for d in deliveries if not d.final_attempt]
            await self.transport.nack(rest, delay=self.config.transient_retry_delay)
        except TransportError as down:
            log.warning("broker unavailable too; deliveries left unsettled", error=str(down))

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
