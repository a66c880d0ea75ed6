"""Competing replicas: whether this one is alone, so that it knows if its cache holds.

Where replicas compete for a group's messages (NATS or RabbitMQ without
``--partitions``, or a broker that cannot carry partitioned mode), any replica may
move any instance, and a cached instance is stale for every event another replica
handled: each such commit meets a version conflict and is decided again. So each
replica keeps a heartbeat in the store (the same rounds as partitioned mode's leases,
with nothing to claim) and caches nothing while it sees another live one; alone, it
caches as usual. A replica that starts sees the others at its first round, before
it has cached anything; one that sees a newcomer drops its cache at once.
"""

from __future__ import annotations

import asyncio
import contextlib

import structlog

from orchestrator.engine.working import WorkingSet
from orchestrator.store.base import Store
from schemas.errors import StoreError

__all__ = ["Peers"]

log = structlog.get_logger("sagawire.engine")


class Peers:
    """This replica's heartbeat, and the live replicas of its group."""

    def __init__(
        self, store: Store, group: str, replica: str, ttl: float, working: WorkingSet
    ) -> None:
        self.store = store
        self.group = group
        self.me = replica
        self.ttl = ttl
        self.working = working
        self.members: tuple[str, ...] = ()

    def status(self) -> dict[str, object]:
        return {"replica": self.me, "members": list(self.members)}

    async def round(self) -> None:
        """One heartbeat; the cache follows what it says."""
        view = await self.store.lease_round(self.group, self.me, ttl=self.ttl)
        alone = view.members == (self.me,)
        if self.members and (len(self.members) == 1) != alone:
            log.info("replicas compete for messages" if not alone else "alone again",
                     members=list(view.members))  # fmt: skip
        self.members = view.members
        self.working.share(not alone)

    async def run(self, stopping: asyncio.Event) -> None:
        """Heartbeats every third of the ttl until ``stopping``; then leave the group.
        Until the store answers, the cache stays off (someone may be there)."""
        self.working.share(True)
        try:
            while not stopping.is_set():
                try:
                    await self.round()
                except StoreError as exc:
                    if not exc.retryable:
                        raise
                    self.working.share(True)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stopping.wait(), self.ttl / 3)
        finally:
            with contextlib.suppress(StoreError):
                await self.store.leave(self.group, self.me)
