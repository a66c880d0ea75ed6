"""Which deliveries of each unit are still unsettled, so that a unit is handed over
only once what its replica read of it is settled.

Partitioned mode moves a unit between replicas by a lease (:mod:`ownership`). If the
lease went while batches of the unit were still queued or being committed here, the
next owner could apply an instance's later event before this replica applied its
earlier one. So every stage's transport calls pass through :class:`SettleWatch`, a
transport that counts, per unit, the deliveries handed out and not yet acknowledged
or given back; releasing a unit waits for its count to reach zero.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from typing import Any

from adapters.base import Delivery, OutgoingMessage, Readiness, Topology, Transport

__all__ = ["SettleWatch"]


class SettleWatch:
    """A :class:`~adapters.base.Transport` that passes every call through and counts."""

    def __init__(self, inner: Transport) -> None:
        self.inner = inner
        self._unit: dict[int, tuple[str, Delivery]] = {}
        """id(delivery) -> its unit, with the delivery itself, kept alive so the id
        cannot be reused while it is tracked."""
        self._count: dict[str, int] = {}
        self._zero: dict[str, asyncio.Event] = {}

    def track(self, unit: str, deliveries: Sequence[Delivery]) -> None:
        """``deliveries`` were read from ``unit`` and handed on."""
        for d in deliveries:
            self._unit[id(d)] = (unit, d)
        self._count[unit] = self._count.get(unit, 0) + len(deliveries)
        self._event(unit).clear()

    def retrack(self, unit: str, deliveries: Sequence[Delivery]) -> None:
        """``deliveries`` read from one unit are now another's to settle (a source's
        messages handed straight to this replica's partition)."""
        for d in deliveries:
            found = self._unit.pop(id(d), None)
            if found is not None:
                self._settle_one(found[0])
        self.track(unit, deliveries)

    def unsettled(self, unit: str) -> int:
        return self._count.get(unit, 0)

    async def settled(self, unit: str, within: float) -> bool:
        """Wait until nothing read from ``unit`` is unsettled; False on timeout."""
        if not self._count.get(unit):
            return True
        try:
            await asyncio.wait_for(self._event(unit).wait(), within)
        except TimeoutError:
            return False
        return True

    def _event(self, unit: str) -> asyncio.Event:
        event = self._zero.get(unit)
        if event is None:
            event = self._zero[unit] = asyncio.Event()
            event.set()
        return event

    def _settle(self, deliveries: Sequence[Delivery]) -> None:
        for d in deliveries:
            found = self._unit.pop(id(d), None)
            if found is not None:
                self._settle_one(found[0])

    def _settle_one(self, unit: str) -> None:
        left = self._count[unit] = self._count[unit] - 1
        if left <= 0:
            self._count[unit] = 0
            self._event(unit).set()

    # -- the transport, passed through ------------------------------------------------

    async def ack(self, deliveries: Sequence[Delivery]) -> None:
        try:
            await self.inner.ack(deliveries)
        finally:  # an ack that failed is redelivered by the broker: settled for us
            self._settle(deliveries)

    async def nack(self, deliveries: Sequence[Delivery], *, delay: float = 0.0) -> None:
        try:
            await self.inner.nack(deliveries, delay=delay)
        finally:
            self._settle(deliveries)

    async def start(self) -> None:
        await self.inner.start()

    async def close(self) -> None:
        await self.inner.close()

    async def declare(self, topology: Topology) -> None:
        await self.inner.declare(topology)

    def consume(self, topology: Topology, *, max_batch: int = 256) -> AsyncIterator[list[Delivery]]:
        return self.inner.consume(topology, max_batch=max_batch)

    async def publish(self, messages: Sequence[OutgoingMessage]) -> None:
        await self.inner.publish(messages)

    async def dead_letter(self, delivery: Delivery, reason: str) -> None:
        await self.inner.dead_letter(delivery, reason)

    @property
    def readiness(self) -> Readiness:
        return self.inner.readiness

    def __getattr__(self, name: str) -> Any:
        """What a particular transport offers beyond the protocol (``poll``...)."""
        return getattr(self.inner, name)
