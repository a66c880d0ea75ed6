"""Consuming from RabbitMQ: one channel per ``consume()`` iterator, in batches.

A :class:`Lane` is one consumer channel. Delivery tags only mean something on the
channel that delivered them, so every delivery's handle points at its lane; when
the connection drops the lane dies, and settling its deliveries becomes a no-op
(RabbitMQ redelivers them, the engine's inbox makes that harmless). A
:class:`Consumer` outlives lanes: after a reconnect it is attached to a new one
and keeps feeding the same buffer, so the iterator never notices.

``basic.qos`` (``prefetch``) bounds what is in flight per lane: a burst of 100,000
messages stays on the broker until acks open the window, so memory stays flat and
acks are never starved behind a full socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import partial
from itertools import islice

import aiormq.exceptions as amqp
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractIncomingMessage

__all__ = ["Consumer", "Handle", "Lane"]

log = logging.getLogger("sagawire.adapters.rabbitmq")

LINGER = 0.002
"""After the first delivery of a batch, wait this long for more before yielding."""

Item = tuple["Lane", AbstractIncomingMessage]


@dataclass(eq=False)
class Lane:
    """One consumer channel and the deliveries it holds unsettled, oldest first."""

    channel: AbstractChannel
    prefetch: int
    outstanding: dict[int, AbstractIncomingMessage] = field(default_factory=dict)
    dead: bool = False
    retiring: bool = False

    @property
    def alive(self) -> bool:
        return not self.dead and not self.channel.is_closed

    async def settle(self, tags: Iterable[int], *, requeue: bool | None) -> None:
        """Ack (``requeue=None``) or nack the tags; one ``multiple`` frame when they
        are exactly the oldest unsettled ones, which is the engine's usual case."""
        todo = sorted({t for t in tags if t in self.outstanding})
        if not todo:
            return
        try:
            if not self.alive:
                log.debug("rabbitmq: %d deliveries from a closed channel not settled", len(todo))
                return
            ch = await self.channel.get_underlay_channel()
            oldest = list(islice(self.outstanding, len(todo)))
            runs = (
                [(todo[-1], True)]
                if len(todo) > 1 and oldest == todo
                else ((t, False) for t in todo)
            )
            for tag, multiple in runs:
                if requeue is None:
                    await ch.basic_ack(tag, multiple=multiple)
                else:
                    await ch.basic_nack(tag, multiple=multiple, requeue=requeue)
            if requeue is None:
                # basic.ack has no reply; a round trip on the same channel proves the
                # broker processed it, so "acked" really means "never again".
                await ch.basic_qos(prefetch_count=self.prefetch)
        except (amqp.AMQPError, amqp.ChannelInvalidStateError, ConnectionError) as exc:
            # The channel died under us: the broker requeues what we could not settle.
            log.debug("rabbitmq: settling on a dead channel ignored: %r", exc)
        finally:
            for t in todo:
                self.outstanding.pop(t, None)
        if self.retiring and not self.outstanding:
            await self.close()

    async def close(self) -> None:
        self.dead = True
        with contextlib.suppress(Exception):
            await self.channel.close()


@dataclass(frozen=True, slots=True)
class Handle:
    """What :attr:`Delivery.handle` holds: the lane and the delivery tag on it."""

    lane: Lane
    tag: int


class Consumer:
    """Feeds one ``consume()`` iterator from whichever lane is current."""

    def __init__(self, queue_name: str, prefetch: int) -> None:
        self.queue_name = queue_name
        self.prefetch = prefetch
        self.active = True
        self.lane: Lane | None = None
        self._connection: AbstractConnection | None = None
        self._tag: str | None = None
        self._buffer: asyncio.Queue[Item | None] = asyncio.Queue()
        self._ended = False
        self._lock = asyncio.Lock()

    async def attach(self, conn: AbstractConnection) -> None:
        """Start consuming on ``conn`` (again); a no-op if already consuming there."""
        async with self._lock:
            if not self.active or (self._connection is conn and self.lane and self.lane.alive):
                return
            if self.lane is not None:
                self.lane.dead = True
            channel = await conn.channel(publisher_confirms=False)
            try:
                await channel.set_qos(prefetch_count=self.prefetch)
                queue = await channel.get_queue(self.queue_name, ensure=False)
                lane = Lane(channel, self.prefetch)
                self._tag = await queue.consume(partial(self._on_message, lane))
            except BaseException:
                with contextlib.suppress(Exception):
                    await channel.close()
                raise
            self.lane, self._connection = lane, conn

    async def _on_message(self, lane: Lane, message: AbstractIncomingMessage) -> None:
        if lane.dead:
            return  # the broker redelivers it on the new channel
        tag = message.delivery_tag or 0
        lane.outstanding[tag] = message
        if not self.active:
            await lane.settle([tag], requeue=True)  # arrived after we stopped: give back
            return
        self._buffer.put_nowait((lane, message))

    async def batch(self, max_batch: int) -> list[Item] | None:
        """The next batch (live deliveries only), or None once stopped."""
        while not self._ended:
            first = await self._buffer.get()
            if first is None:
                self._ended = True
                break
            items = [first]
            self._drain(items, max_batch)
            if len(items) < max_batch and not self._ended:
                await asyncio.sleep(LINGER)
                self._drain(items, max_batch)
            live = [(lane, m) for lane, m in items if lane.alive]
            if live:
                return live
        return None

    def _drain(self, items: list[Item], max_batch: int) -> None:
        while len(items) < max_batch and not self._buffer.empty():
            item = self._buffer.get_nowait()
            if item is None:
                self._ended = True
                return
            items.append(item)

    def stop(self) -> None:
        """End the iterator (the transport is closing)."""
        self.active = False
        self._buffer.put_nowait(None)

    async def retire(self) -> None:
        """The iterator ended: stop the broker consumer, give back what was buffered
        but never handed out, and close the channel once the rest is settled."""
        self.active = False
        lane = self.lane
        if lane is None:
            return
        with contextlib.suppress(Exception):
            if lane.alive and self._tag is not None:
                ch = await lane.channel.get_underlay_channel()
                await ch.basic_cancel(self._tag)
        unseen: list[int] = []
        while not self._buffer.empty():
            item = self._buffer.get_nowait()
            if item is not None and item[0] is lane:
                unseen.append(item[1].delivery_tag or 0)
        lane.retiring = True
        await lane.settle(unseen, requeue=True)
        if not lane.outstanding:
            await lane.close()
