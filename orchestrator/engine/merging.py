"""Batches waiting for the pipeline in partitioned mode, taken merged.

Each partition a replica reads hands over its own small batches (and a forwarder its
direct hand-offs); the pipeline's cycle costs about the same for one delivery as for a
hundred (docs/performance.md), so whatever waits is taken as one batch, up to the
pipeline's size. Bounded, so a slow pipeline holds the readers back.
"""

from __future__ import annotations

import asyncio
from collections import deque

from adapters.base import Delivery

__all__ = ["Batches"]


class Batches:
    """Batches waiting for the pipeline, at most ``bound`` of them, taken merged: a
    pipeline step's commit costs about the same for one delivery as for a hundred."""

    def __init__(self, bound: int) -> None:
        self._bound = bound
        self._items: deque[list[Delivery]] = deque()
        self._ready = asyncio.Event()
        self._room = asyncio.Event()

    async def put(self, batch: list[Delivery]) -> None:
        while len(self._items) >= self._bound:
            self._room.clear()
            await self._room.wait()
        self._items.append(batch)
        self._ready.set()

    async def take(self, most: int) -> list[Delivery]:
        items = self._items
        while not items:
            self._ready.clear()
            await self._ready.wait()
        batch = items.popleft()
        while items and len(batch) + len(items[0]) <= most:
            batch = batch + items.popleft()
        self._room.set()
        return batch

    def drain(self) -> list[list[Delivery]]:
        taken = list(self._items)
        self._items.clear()
        self._room.set()
        return taken
