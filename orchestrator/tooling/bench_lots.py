"""Feeding the bench: an untimed warm-up lot, then the timed lot, through a window.

The engine run (:mod:`orchestrator.tooling.bench`) and its two yardsticks, the relay
(:mod:`orchestrator.tooling.bench_relay`) and the ring (:mod:`orchestrator.tooling.bench_ring`), all
publish their inputs in batches while at most ``window`` are unfinished (the sagas in
flight), and all time only the second lot, which starts from empty: nothing of it is
sent before the warm-up lot is finished.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from orchestrator.tooling.bench_cpu import CpuClock, CpuSpent

__all__ = ["Lots", "Timed"]

STALL_SECONDS = 60.0
"""The longest a run may go without any input finishing before it is called stuck."""


@dataclass(frozen=True, slots=True)
class Timed:
    """What a timed lot measured: units per second, how many units, and the CPU spent."""

    per_s: float
    units: int
    cpu: CpuSpent


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
        self.sent = 0
        self.finished = 0
        self.began = 0.0
        self.ended = 0.0
        self.cpu = CpuSpent(0.0, None)  # over the timed lot, once complete
        self._clock: CpuClock | None = None
        self._room = asyncio.Event()
        self._complete = asyncio.Event()

    def done(self, n: int) -> None:
        """``n`` more inputs finished (may be 0: the consumer saw only strangers)."""
        self.finished += n
        if self.complete and not self.ended:
            self.ended = time.perf_counter()  # before the consumer closes its stream
            if self._clock is not None:
                self.cpu = self._clock.spent()
            self._complete.set()
        self._room.set()

    async def wait_complete(self) -> None:
        """Return once every input finished (for a consumer that never ends by itself)."""
        await self._complete.wait()

    @property
    def complete(self) -> bool:
        return self.finished >= self.total

    def rate(self, per_input: int = 1) -> float:
        """The timed lot's ``per_input`` units per second over :attr:`elapsed` (closing
        the stream after, a Kafka group leave and final commit, is not counted)."""
        return self.measured * per_input / self.elapsed

    def timed(self, per_input: int = 1) -> Timed:
        """The timed lot's rate (as :meth:`rate`), its units and its CPU."""
        return Timed(self.rate(per_input), self.measured * per_input, self.cpu)

    @property
    def elapsed(self) -> float:
        """Wall time of the timed lot, from its first publish to its last input finished."""
        return (self.ended or time.perf_counter()) - self.began

    async def run(self, consume: Callable[[], Awaitable[None]], name: str = "the consumer") -> None:
        """Feed while ``consume()`` takes the inputs and returns once :attr:`complete`.
        Either one failing stops the other; the consumer ending early, or no input
        finishing for :data:`STALL_SECONDS`, is an error too."""
        feeding = asyncio.ensure_future(self._feed())
        consuming = asyncio.ensure_future(consume())
        pending: set[asyncio.Future[None]] = {feeding, consuming}
        try:
            while not consuming.done():
                before = self.finished
                done, pending = await asyncio.wait(
                    pending, timeout=STALL_SECONDS, return_when=asyncio.FIRST_COMPLETED
                )
                for task in done:
                    task.result()  # re-raise a failure of the feeder or the consumer
                if not done and self.finished == before:
                    raise RuntimeError(
                        f"bench stalled: nothing finished in {STALL_SECONDS:g}s;"
                        f" {self.sent - self.finished} in flight"
                    )
            if not self.complete:
                raise RuntimeError(f"{name} stopped before every input finished")
        finally:
            for task in (feeding, consuming):
                task.cancel()
            await asyncio.gather(feeding, consuming, return_exceptions=True)

    async def _feed(self) -> None:
        while self.sent < self.total:
            sent = self.sent
            if sent == self.warmup and self.finished < self.warmup:
                await self._wait()  # the timed lot starts from empty
                continue
            if sent == self.warmup and not self.began:
                self.began, self._clock = time.perf_counter(), CpuClock()
            end = self.warmup if sent < self.warmup else self.total
            free = min(self.window - (sent - self.finished), end - sent, self.max_batch)
            if free <= 0:
                await self._wait()
                continue
            await self.publish(sent, free)
            self.sent += free

    async def _wait(self) -> None:
        self._room.clear()
        await self._room.wait()
