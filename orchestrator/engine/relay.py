"""The outbox relay: publishes what the publish after a commit left behind.

After each commit the engine publishes the batch's outbox rows at once
(``committing``). What that did not publish (a crash between commit and publish, a
broker outage, a destination the broker would not take for a while) stays in the
store's outbox, and the relay publishes it here, ids intact, so a participant can
de-duplicate a copy.

Why it runs apart from the engine's batches, destination by destination: a row
that cannot be published must not hold up anything else. The relay reads the
outbox under the engine's lock (so it never sees a row whose inline publish is
still in flight), then publishes outside it while the engine goes on consuming.
Each destination is published on its own, concurrently; one that fails for now
backs off alone (capped exponential backoff with jitter) and the others go on.
A row the broker refuses for good (too large, an invalid subject or header:
:class:`~schemas.errors.PublishRefused`) is taken out of the outbox as *failed*,
with the broker's reason (``Store.failed_outbox``, counted in
``sagawire_publish_refused_total``), and never blocks the rows behind it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Collection, Iterator

import structlog

from adapters.base import Transport
from orchestrator.engine.clock import Clock
from orchestrator.engine.outage import StoreHealth, backoff
from orchestrator.engine.persist import outgoing
from orchestrator.store.base import OutboxRecord, Store
from schemas.errors import PublishRefused, StoreError, TransportError

__all__ = ["Relay"]

log = structlog.get_logger("sagawire.relay")


class Relay:
    """Publishes pending outbox rows, destination by destination, off the engine's lock."""

    def __init__(
        self,
        store: Store,
        transport: Transport,
        lock: asyncio.Lock,
        published: Callable[[], Collection[str]],
        clock: Clock,
        health: StoreHealth,
        *,
        batch: int = 1000,
        first: float = 0.2,
        cap: float = 30.0,
    ) -> None:
        self.store = store
        self.transport = transport
        self.lock = lock
        self.published = published
        """Ids the engine published and has not yet marked in the store: not again."""
        self.clock = clock
        self.health = health
        self.batch = batch
        self.first = first
        self.cap = cap
        self.refused = 0
        """Rows the broker refused for good since start (for metrics)."""
        self._wanted = asyncio.Event()
        self._wanted.set()  # a crash's leftovers are relayed at start
        self._waits: dict[str, tuple[float, Iterator[float]]] = {}
        """Destinations backing off: when to try again, and the next delays."""

    def needed(self) -> None:
        """Something may be left in the outbox (a failed publish, a failed commit)."""
        self._wanted.set()

    async def refuse(self, refused: PublishRefused) -> None:
        """Take the rows the broker refused for good out of the outbox, with its reason.
        A store failure here leaves them pending: the next pass meets the refusal again."""
        self.refused += len(refused.refused)
        for message_id, reason in refused.refused.items():
            log.error("broker refused a message for good", message_id=message_id, reason=reason)
        try:
            await self.store.mark_failed(list(refused.refused.items()), self.clock.now())
        except StoreError as exc:
            if not exc.retryable:
                raise
            self.health.failed(exc)
            self.needed()

    async def run(self, stopping: asyncio.Event, interval: float) -> None:
        """Relay whenever asked to, and at least every ``interval`` seconds while a
        destination backs off, until ``stopping``."""
        while not stopping.is_set():
            wake = asyncio.ensure_future(self._wanted.wait())
            stop = asyncio.ensure_future(stopping.wait())
            try:
                await asyncio.wait(
                    {wake, stop},
                    timeout=self._next_wait(interval),
                    return_when=asyncio.FIRST_COMPLETED,
                )
            finally:
                wake.cancel()
                stop.cancel()
            if stopping.is_set():
                return
            try:
                await self.relay()
            except StoreError as exc:
                if not exc.retryable:
                    raise
                self.health.failed(exc)
                self.needed()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stopping.wait(), interval)

    def _next_wait(self, interval: float) -> float | None:
        if not self._waits:
            return None
        soonest = min(at for at, _ in self._waits.values())
        return max(0.0, min(interval, soonest - time.monotonic()))

    async def relay(self) -> int:
        """Publish pending rows until none is left that can go now; returns how many."""
        total = 0
        while True:
            now = time.monotonic()
            resting = [d for d, (at, _) in self._waits.items() if at > now]
            async with self.lock:
                self._wanted.clear()
                rows = await self.store.pending_outbox(limit=self.batch, exclude=resting)
                sent = set(self.published())
            self.health.answered()
            by_destination: dict[str, list[OutboxRecord]] = {}
            for row in rows:
                if row.id not in sent:
                    by_destination.setdefault(row.destination, []).append(row)
            if not by_destination:
                return total
            done = await asyncio.gather(
                *(self._publish(d, batch) for d, batch in by_destination.items())
            )
            total += sum(done)
            if len(rows) < self.batch or not sum(done):
                return total

    async def _publish(self, destination: str, rows: list[OutboxRecord]) -> int:
        """Publish one destination's rows in order; returns how many left the outbox."""
        try:
            await self.transport.publish([outgoing(r) for r in rows])
        except PublishRefused as exc:
            await self.refuse(exc)
            gone = [r.id for r in rows if r.id not in exc.refused]
        except TransportError as exc:
            self._back_off(destination, exc)
            return 0
        else:
            gone = [r.id for r in rows]
        self._waits.pop(destination, None)
        if gone:
            await self.store.mark_published(gone)
        return len(rows)

    def _back_off(self, destination: str, exc: TransportError) -> None:
        wait = self._waits.get(destination)
        delays = wait[1] if wait is not None else backoff(self.first, self.cap)
        delay = next(delays)
        if wait is None:
            log.warning(
                "relay: publish failed; this destination backs off, the others go on",
                destination=destination,
                error=str(exc),
            )
        self._waits[destination] = (time.monotonic() + delay, delays)
