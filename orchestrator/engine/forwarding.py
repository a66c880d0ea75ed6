"""The forwarding hop of partitioned mode: a type's messages to their partitions.

A replica holding a source unit (:mod:`orchestrator.engine.partitioning`) reads that
event type in batches and, for each message, publishes its bytes and headers
unchanged to the partition of its correlation id, with one header added naming the
type; once the broker has confirmed the whole batch, in order, it acknowledges the
batch. A crash between the two forwards the batch again: the copies reach the same
partition and the engine's inbox makes them no-ops. Each forwarded copy gets a
broker message id of its own (this process's prefix and a counter): a publish
retried after a lost confirm is de-duplicated by JetStream, while a redriven dead
letter, a new message with the old event's id, is forwarded afresh.

Nothing is judged here. A message that does not decode or route goes to a partition
all the same (by a hash of its bytes), and that partition's engine dead-letters it
with the reason and keeps it in the store, the one place that does so. A broker
that is down is waited out holding the batch (the transport keeps it leased); a
forwarded copy the broker refuses for good (it grew past a limit by our header)
is dead-lettered as the original.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import zlib

import structlog

from adapters.base import Delivery, OutgoingMessage, Transport
from orchestrator.engine.intake import Intake
from orchestrator.engine.outage import backoff
from orchestrator.engine.partitioning import FORWARDED_FROM, partition_destination, partition_of
from schemas.errors import PublishRefused, TransportError

__all__ = ["Forwarder"]

log = structlog.get_logger("sagawire.engine")


class Forwarder:
    """Reads nothing itself: the source unit's pump hands it batches."""

    def __init__(self, transport: Transport, intake: Intake, group: str, partitions: int) -> None:
        self.transport = transport
        self.intake = intake
        self.group = group
        self.partitions = partitions
        self.forwarded = 0
        """Messages forwarded (a metric)."""
        self._waiting: list[tuple[list[Delivery], asyncio.Future[bool]]] = []
        self._sender: asyncio.Future[None] | None = None
        self._more = asyncio.Event()
        self._ids = itertools.count()
        self._prefix = f"fwd-{os.urandom(6).hex()}-"

    def copy(self, d: Delivery) -> OutgoingMessage:
        """The forwarded copy of ``d``, bound for its instance's partition."""
        cid = self.intake.correlation_of(d)
        k = (
            partition_of(cid, self.partitions)
            if cid is not None
            else zlib.crc32(d.body) % self.partitions
        )
        headers = dict(d.headers)
        headers[FORWARDED_FROM] = d.destination
        return OutgoingMessage(
            destination=partition_destination(self.group, k),
            body=d.body,
            message_id=f"{self._prefix}{next(self._ids)}",
            key=cid if cid is not None else d.key,
            headers=headers,
        )

    async def forward(self, batch: list[Delivery], stopping: asyncio.Event) -> bool:
        """Forward ``batch`` and acknowledge it; False if ``stopping`` was set while
        the broker could not take it (the caller gives the batch back).

        The batches of every source this replica reads wait here to go out together:
        one publish window and one acknowledgement for all of them, since a source's
        batch is small when its type is one of several (each source still has one
        batch at a time in flight, so its order holds)."""
        done: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._waiting.append((batch, done))
        if self._sender is None or self._sender.done():
            self._sender = asyncio.ensure_future(self._send(stopping))
        else:
            self._more.set()
        return await asyncio.shield(done)

    async def _send(self, stopping: asyncio.Event) -> None:
        """Send what is waiting, all of it at once, until nothing waits."""
        while self._waiting:
            jobs, self._waiting = self._waiting, []
            self._more.clear()
            batch = [d for b, _ in jobs for d in b]
            try:
                ok = await self._forward(batch, stopping)
            except BaseException as exc:
                for _, done in jobs:
                    if not done.done():
                        done.set_exception(exc)
                raise
            for _, done in jobs:
                if not done.done():
                    done.set_result(ok)

    async def _forward(self, batch: list[Delivery], stopping: asyncio.Event) -> bool:
        copies = [self.copy(d) for d in batch]
        by_id = {id(c): d for c, d in zip(copies, batch, strict=True)}
        pauses = backoff(0.05, 1.0)
        todo = copies
        while todo:
            try:
                await self.transport.publish(todo)
            except PublishRefused as exc:
                refused = [c for c in todo if c.message_id in exc.refused]
                await self._refused([by_id[id(c)] for c in refused], str(exc))
                todo = []
            except TransportError as exc:
                if not exc.retryable:
                    raise
                log.warning("forwarding failed; trying again", error=str(exc))
                try:
                    await asyncio.wait_for(stopping.wait(), next(pauses))
                except TimeoutError:
                    continue
                return False
            else:
                todo = []
        self.forwarded += len(batch)
        await self.transport.ack(batch)
        return True

    async def _refused(self, originals: list[Delivery], reason: str) -> None:
        for d in originals:
            log.error(
                "forwarded copy refused by the broker; dead-lettering the original",
                destination=d.destination,
                refusal=reason,
            )
            await self.transport.dead_letter(d, f"could not be forwarded: {reason}")
