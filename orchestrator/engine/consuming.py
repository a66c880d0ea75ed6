"""The consume loop: batches from the transport into the pipeline, in order.

A reader task pulls from the transport one batch ahead, so the next batch is
there when the pipeline wants it. When no batch is waiting, the pending one is
committed rather than held: its commands may be what the participants wait for.
Batches that queued up while the last one was handled are merged into one (a
commit's fixed cost is most of it when batches are small).

The loop never blocks in a ``finally`` (a full queue there once hung SIGTERM under
load): it watches the reader itself to learn that the stream ended or failed, and
gives back what it read ahead but did not handle.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable

from adapters.base import Delivery, Topology, Transport, close_stream
from orchestrator.engine.pipeline import Pipeline

__all__ = ["Consumer"]


class Consumer:
    """Feeds the pipeline from the transport until told to stop."""

    def __init__(
        self,
        transport: Transport,
        topology: Topology,
        pipeline: Pipeline,
        max_batch: int,
        source: Callable[[], AsyncIterator[list[Delivery]]] | None = None,
    ) -> None:
        self.source = source or (lambda: transport.consume(topology, max_batch=max_batch))
        """Where batches come from: the group's consumer, or in partitioned mode the
        partitions this replica holds (:meth:`Ownership.stream`)."""
        self.transport = transport
        self.topology = topology
        self.pipeline = pipeline
        self.max_batch = max_batch
        self.consuming = False
        """Subscribed and taking batches (``/readyz``)."""
        self.handling = False
        """A batch is being handled now: stopping waits for it instead of cancelling."""
        self.idle = False
        """Waiting for a batch, none read ahead: what the broker held has been taken."""
        self.idle_at = float("-inf")
        """When it last began to wait so (loop time)."""

    async def run(self, stopping: asyncio.Event, stopped: Callable[[], bool]) -> None:
        """Consume until ``stopping`` is set (or ``stopped()`` says so), the stream ends
        or the transport fails (raised)."""
        stream = self.source()
        queue: asyncio.Queue[list[Delivery]] = asyncio.Queue(maxsize=4)
        unhandled: list[Delivery] = []  # read or taken, then stopped before handling
        pipeline = self.pipeline
        lock = pipeline.lock

        async def read() -> None:
            async for batch in stream:
                try:
                    await queue.put(batch)
                except asyncio.CancelledError:  # stopped with the queue full: not lost
                    unhandled.extend(batch)
                    raise

        reader = asyncio.ensure_future(read())

        async def next_batch() -> list[Delivery] | None:
            if not queue.empty():
                return queue.get_nowait()
            getter = asyncio.ensure_future(queue.get())
            self.idle, self.idle_at = True, asyncio.get_running_loop().time()
            try:
                await asyncio.wait({getter, reader}, return_when=asyncio.FIRST_COMPLETED)
            except BaseException:
                self.idle = False
                if getter.done() and not getter.cancelled():
                    unhandled.extend(getter.result())
                getter.cancel()  # no pending getter left behind to be destroyed
                raise
            self.idle = False
            if getter.done():
                return getter.result()
            getter.cancel()
            return queue.get_nowait() if not queue.empty() else None

        self.consuming = True
        try:
            while True:
                if queue.empty() and pipeline.pending is not None:
                    self.handling = True
                    try:
                        async with lock:
                            await asyncio.shield(pipeline.drain())
                    finally:
                        self.handling = False
                batch = await next_batch()
                if batch is None:
                    break
                while not queue.empty() and len(batch) < self.max_batch:
                    batch = batch + queue.get_nowait()
                self.handling = True
                try:
                    async with lock:
                        await asyncio.shield(pipeline.step(batch))
                finally:
                    self.handling = False
                if stopping.is_set() or stopped():
                    break
        finally:
            self.consuming = False
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reader
            while not queue.empty():  # read ahead but not handled: give it back now
                unhandled.extend(queue.get_nowait())
            if unhandled:
                with contextlib.suppress(Exception):
                    await self.transport.nack(unhandled)
            with contextlib.suppress(Exception):
                await close_stream(stream)
            async with lock:
                await pipeline.drain()
        if reader.done() and not reader.cancelled() and reader.exception() is not None:
            raise reader.exception()  # type: ignore[misc]
