"""Feeding a bench yardstick: an untimed warm-up lot, then the timed lot, through a window.

The relay (:mod:`orchestrator.bench_relay`) and the ring (:mod:`orchestrator.bench_ring`)
both publish their inputs in batches while at most ``window`` are unfinished, as the
engine run keeps ``concurrency`` sagas in flight, and both time only the second lot,
which starts from empty: nothing of it is sent before the warm-up lot is finished.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

__all__ = ["Lots"]

STALL_SECONDS = 600.0
"""The longest a yardstick may run before it is called stuck."""


class Lots:
    """``warmup`` then ``measured`` inputs; ``publish(first, count)`` sends inputs
    ``first .. first + count - 1``; the consumer reports finished ones with :meth:`done`."""

    def __init__(
        self,
        warmup: int,
        measured: int,
        window: int,
        max_batch: int,
        publish: Callable[[int, int], Awaitable[None]],
    ) -> None:
        self.warmup = warmup
        self.measured = measured
        self.total = warmup + measured
        self.window = window
        self.max_batch = max_batch
        self.publish = publish
        self.finished = 0
        self.began = 0.0
        self.ended = 0.0
        self._room = asyncio.Event()

    def done(self, n: int) -> None:
        """``n`` more inputs finished (may be 0: the consumer saw only strangers)."""
        self.finished += n
        if self.complete and not self.ended:
            self.ended = time.perf_counter()  # before the consumer closes its stream
        self._room.set()

    @property
    def complete(self) -> bool:
        return self.finished >= self.total

    def rate(self, per_input: int = 1) -> float:
        """The timed lot's ``per_input`` units per second, from its first publish to its
        last input finished (closing the stream after, a Kafka group leave and final
        commit, is not counted)."""
        return self.measured * per_input / ((self.ended or time.perf_counter()) - self.began)

    async def run(self, consume: Callable[[], Awaitable[None]]) -> None:
        """Feed while ``consume()`` takes the inputs until :attr:`complete`; either one
        failing stops the other, and a run past :data:`STALL_SECONDS` is an error."""
        feeding = asyncio.ensure_future(self._feed())
        consuming = asyncio.ensure_future(consume())
        try:
            async with asyncio.timeout(STALL_SECONDS):
                while not consuming.done():
                    await asyncio.wait({feeding, consuming}, return_when=asyncio.FIRST_COMPLETED)
                    if feeding.done() and feeding.exception() is not None:
                        raise feeding.exception()  # type: ignore[misc]
                consuming.result()
        finally:
            for task in (feeding, consuming):
                task.cancel()
            await asyncio.gather(feeding, consuming, return_exceptions=True)

    async def _feed(self) -> None:
        sent = 0
        while sent < self.total:
            if sent == self.warmup and self.finished < self.warmup:
                await self._wait()  # the timed lot starts from empty
                continue
            if sent == self.warmup and not self.began:
                self.began = time.perf_counter()
            end = self.warmup if sent < self.warmup else self.total
            free = min(self.window - (sent - self.finished), end - sent, self.max_batch)
            if free <= 0:
                await self._wait()
                continue
            await self.publish(sent, free)
            sent += free

    async def _wait(self) -> None:
        self._room.clear()
        await self._room.wait()
