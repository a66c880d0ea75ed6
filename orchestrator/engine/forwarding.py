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

A message bound for a partition this replica reads itself skips the broker once that
is safe (:class:`LocalRoute`): with one replica, no message makes the second hop.

Nothing is judged here. A message that does not decode or route goes to a partition
all the same (by a hash of its bytes), and that partition's engine dead-letters it
with the reason and keeps it in the store, the one place that does so. A broker
that is down is waited out holding the batch (the transport keeps it leased); a
forwarded copy the broker refuses for good (it grew past a limit by our header)
is dead-lettered as the original.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import zlib
from typing import Protocol

import structlog

from adapters.base import Delivery, OutgoingMessage, Transport
from orchestrator.engine.intake import Intake
from orchestrator.engine.outage import backoff
from orchestrator.engine.partitioning import (
    FORWARD_ID,
    FORWARDED_FROM,
    partition_destination,
    partition_of,
)
from schemas.errors import PublishRefused, TransportError

__all__ = ["Forwarder", "LocalRoute"]

log = structlog.get_logger("sagawire.engine")


class LocalRoute(Protocol):
    """The short cut to the partitions this replica reads (:class:`Ownership`).

    A message bound for a partition this replica reads need not make the round trip
    through the broker: it can go to the pipeline at once, as long as no earlier
    message of its type for that partition is still in the broker on its way, or it
    would overtake it. ``streamed`` tells the route each copy sent the long way (by
    ``FORWARD_ID``), and ``local`` says whether the short cut is open now."""

    def local(self, destination: str, k: int) -> bool: ...

    def streamed(self, destination: str, k: int, forward_id: str) -> None: ...

    async def hand(self, by_partition: dict[int, list[Delivery]]) -> None: ...


class Forwarder:
    """Reads nothing itself: the source unit's pump hands it batches."""

    def __init__(self, transport: Transport, intake: Intake, group: str, partitions: int) -> None:
        self.transport = transport
        self.intake = intake
        self.group = group
        self.partitions = partitions
        self.forwarded = 0
        """Messages published to their partition (a metric)."""
        self.handed = 0
        """Messages handed to this replica's own pipeline instead (a metric)."""
        self.route: LocalRoute | None = None
        """The short cut to this replica's own partitions (None: always publish)."""
        self._waiting: list[tuple[list[Delivery], asyncio.Future[bool]]] = []
        self._sender: asyncio.Future[None] | None = None
        self._ids = itertools.count()
        self._prefix = f"fwd-{os.urandom(6).hex()}-"

    def partition(self, d: Delivery) -> tuple[int, str | None]:
        """``d``'s partition, and the correlation id it was found by (None: ``d`` does
        not decode or route, and goes by a hash of its bytes)."""
        cid = self.intake.correlation_of(d)
        if cid is None:
            return zlib.crc32(d.body) % self.partitions, None
        return partition_of(cid, self.partitions), cid

    def copy(self, d: Delivery, k: int, cid: str | None) -> OutgoingMessage:
        """The forwarded copy of ``d``, bound for partition ``k``."""
        message_id = f"{self._prefix}{next(self._ids)}"
        headers = dict(d.headers)
        headers[FORWARDED_FROM] = d.destination
        headers[FORWARD_ID] = message_id
        return OutgoingMessage(
            destination=partition_destination(self.group, k),
            body=d.body,
            message_id=message_id,
            key=cid if cid is not None else d.key,
            headers=headers,
        )

    async def forward(self, batch: list[Delivery], stopping: asyncio.Event) -> bool:
        """Forward ``batch`` and settle it: what went to the broker is acknowledged once
        confirmed, what was handed to this replica's pipeline is the pipeline's to
        settle; False if ``stopping`` was set while the broker could not take it
        (then given back). Every delivery of ``batch`` is settled or handed on when
        this returns or raises.

        The batches of every source this replica reads wait here to go out together:
        one publish window and one acknowledgement for all of them, since a source's
        batch is small when its type is one of several (each source still has one
        batch at a time in flight, so its order holds)."""
        done: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._waiting.append((batch, done))
        if self._sender is None or self._sender.done():
            self._sender = asyncio.ensure_future(self._send(stopping))
        return await asyncio.shield(done)

    async def _send(self, stopping: asyncio.Event) -> None:
        """Send what is waiting, all of it at once, until nothing waits."""
        while self._waiting:
            jobs, self._waiting = self._waiting, []
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
        route = self.route
        copies: list[OutgoingMessage] = []
        originals: list[Delivery] = []
        direct: dict[int, list[Delivery]] = {}
        for d in batch:
            k, cid = self.partition(d)
            if route is not None and route.local(d.destination, k):
                direct.setdefault(k, []).append(d)
                continue
            c = self.copy(d, k, cid)
            if route is not None:  # before the publish: the partition may read it first
                route.streamed(d.destination, k, c.message_id)
            copies.append(c)
            originals.append(d)
        try:
            if direct:
                await route.hand(direct)  # type: ignore[union-attr]
        except BaseException:  # not handed on (one put, all or nothing): give all back
            await self._give_back(originals + [d for ds in direct.values() for d in ds])
            raise
        self.handed += len(batch) - len(originals)
        if not copies:
            return True
        try:
            return await self._publish(copies, originals, stopping)
        except BaseException:
            await self._give_back(originals)
            raise

    async def _give_back(self, deliveries: list[Delivery]) -> None:
        with contextlib.suppress(Exception):
            await self.transport.nack(deliveries)

    async def _publish(
        self, copies: list[OutgoingMessage], originals: list[Delivery], stopping: asyncio.Event
    ) -> bool:
        """Publish the copies, then acknowledge their originals; False, having given
        the originals back, if ``stopping`` was set while the broker could not take them."""
        by_id = {id(c): d for c, d in zip(copies, originals, strict=True)}
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
                await self._give_back(originals)
                return False
            else:
                todo = []
        self.forwarded += len(originals)
        await self.transport.ack(originals)
        return True

    async def _refused(self, originals: list[Delivery], reason: str) -> None:
        for d in originals:
            log.error(
                "forwarded copy refused by the broker; dead-lettering the original",
                destination=d.destination,
                refusal=reason,
            )
            await self.transport.dead_letter(d, f"could not be forwarded: {reason}")
