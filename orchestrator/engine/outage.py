"""Waiting out a store that went away: hold what was received, back off, resume.

Why hold instead of giving deliveries back: a broker counts every redelivery
against the message (JetStream's ``max_deliver``, a quorum queue's delivery
limit), so nacking through an outage spends a good message's budget on a world
that is briefly broken, and its last delivery used to be dead-lettered like a
bad message. Instead the engine keeps what it holds, unacknowledged (the
transports keep such deliveries alive: NATS with in-progress acks), stops taking
new ones (the consume loop waits here, so the read-ahead fills and the transport
stops fetching), and probes the store with capped exponential backoff and
jitter until it answers. Then the held deliveries are decided again, serially:
whatever a commit cut short may or may not have committed, and the inbox tells.

:class:`StoreHealth` is also what ``/readyz`` and ``POST /events`` read: the
store is down from the first failed operation until a probe or an operation
succeeds again.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Iterator

import structlog

from orchestrator.store.base import Store
from schemas.errors import StoreError

__all__ = ["StoreHealth", "backoff"]

log = structlog.get_logger("sagawire.engine")


def backoff(first: float, cap: float) -> Iterator[float]:
    """Delays that double from ``first`` up to ``cap``, each with "equal jitter" (half
    fixed, half random): replicas that met the same outage do not retry in step, and
    no delay is near zero, so a long outage is probed at about ``cap`` per second."""
    ceiling = first
    while True:
        yield ceiling / 2 + random.uniform(0, ceiling / 2)
        ceiling = min(cap, ceiling * 2)


class StoreHealth:
    """Whether the store answers, and the wait for it to answer again."""

    def __init__(self, store: Store, *, first: float = 0.05, cap: float = 1.0) -> None:
        self.store = store
        self.first = first
        self.cap = cap
        self.reason = ""
        """Why the store is unavailable; empty while it answers."""
        self.outages = 0
        """Outages seen since start (for metrics)."""
        self.stopping = asyncio.Event()
        """Set by the engine when it stops: a wait in progress gives up."""
        self._since = 0.0

    @property
    def up(self) -> bool:
        return not self.reason

    def failed(self, exc: StoreError) -> None:
        """Record a failed store operation (the first of an outage is logged)."""
        if not self.reason:
            self.outages += 1
            self._since = time.monotonic()
            log.warning("store unavailable; holding deliveries until it answers", error=str(exc))
        self.reason = f"store unavailable: {exc}"

    def answered(self) -> None:
        """Record a store operation that succeeded (ends an outage, if one was on)."""
        if self.reason:
            log.warning("store answers again", down_s=round(time.monotonic() - self._since, 2))
            self.reason = ""

    async def wait(self, exc: StoreError) -> bool:
        """Back off and probe until the store answers (True) or the engine stops (False).

        Raises a non-retryable StoreError at once: that is not an outage."""
        if not exc.retryable:
            raise exc
        self.failed(exc)
        for delay in backoff(self.first, self.cap):
            if await self.pause(delay):
                return False
            try:
                await self.store.ping()
            except StoreError as again:
                if not again.retryable:
                    raise
                self.failed(again)
                continue
            self.answered()
            return True
        raise AssertionError("unreachable: backoff() never ends")  # pragma: no cover

    async def pause(self, delay: float) -> bool:
        """Sleep ``delay`` seconds unless stopping first; True if stopping."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stopping.wait(), delay)
        return self.stopping.is_set()
