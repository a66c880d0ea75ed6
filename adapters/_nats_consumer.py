"""The consuming half of the NATS transport: pumps that pull batches from JetStream.

One pump per durable consumer of a ``consume()`` call fetches the next batch while
the caller handles the current one, one batch queued per pump; it waits while the
connection is down and goes on after a reconnect, declares its consumer again if it
was deleted under it, and naks what it fetched but could not hand over. Every
fetched message is leased in ``leases`` (shared with the transport, which keeps the
leases alive: :mod:`adapters._nats_leases`) until acked, nacked or given back, so a
caller that stops taking batches for minutes loses nothing and
:meth:`~adapters.nats.NatsTransport.close` can give back what it still holds. (The
Kafka and RabbitMQ transports keep their consuming half in ``_kafka_consumer`` and
``_rabbitmq_consumer`` the same way.)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import nats.errors
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from adapters._nats_errors import is_not_found
from adapters._nats_leases import Leases
from adapters._util import Backoff
from schemas.errors import TransportError

__all__ = ["Fetching"]

STOP_GRACE = 0.25
"""Seconds a stopping pump may finish a fetch that is already receiving."""
_log = logging.getLogger("adapters.nats")  # the transport's logger: one name to filter


@dataclass(eq=False)
class Fetching:
    """The pumps' view of their transport: its connection state, the messages it holds
    unsettled (leased), how long one pull lingers, and how it names errors."""

    closed: asyncio.Event
    connected: asyncio.Event
    leases: Leases
    fetch_timeout: float
    error: Callable[[BaseException, str], TransportError]
    last_chance: Callable[[Msg], Awaitable[bool]]
    """Dead-letter (and ack) a message JetStream will not deliver again, instead of
    giving it back: a nak at ``max_deliver`` drops it. True if it did."""
    lost: asyncio.Event
    """Set when nats-py closed the connection for good (not by us): nothing more comes."""

    async def stop(self, pumps: set[asyncio.Task[None]]) -> None:
        """Once told to stop, let a fetch that is already receiving finish (its messages
        would otherwise be stranded until ack_wait), then cancel what still waits."""
        if pumps:
            _, waiting = await asyncio.wait(pumps, timeout=STOP_GRACE)
            for task in waiting:
                task.cancel()
            await asyncio.gather(*pumps, return_exceptions=True)

    async def pump(
        self,
        sub: JetStreamContext.PullSubscription,
        queue: asyncio.Queue[list[Msg]],
        max_batch: int,
        stop: asyncio.Event,
        redeclare: Callable[[], Awaitable[None]],
    ) -> None:
        """Fetch batches into ``queue`` until ``stop`` or close, surviving reconnects."""
        backoff = Backoff()
        while not (stop.is_set() or self.closed.is_set() or self.lost.is_set()):
            if not self.connected.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.connected.wait(), self.fetch_timeout)
                continue
            try:
                msgs = await sub.fetch(batch=max_batch, timeout=self.fetch_timeout)
            except (TimeoutError, nats.errors.TimeoutError):
                continue  # idle: nothing to fetch within fetch_timeout
            except Exception as exc:
                if stop.is_set() or self.closed.is_set():
                    return
                _log.warning("%s", self.error(exc, "fetch"))
                await asyncio.sleep(backoff.next_delay())
                if is_not_found(exc):  # consumer deleted under us: declare it again
                    with contextlib.suppress(Exception):
                        await redeclare()
                continue
            backoff.reset()
            self.leases.hold(msgs)
            if stop.is_set() or self.closed.is_set():
                await self.nak_quietly(msgs)
                return
            try:
                await queue.put(msgs)
            except asyncio.CancelledError:
                await self.nak_quietly(msgs)
                raise

    async def next(self, queue: asyncio.Queue[list[Msg]]) -> list[Msg] | None:
        """The next fetched batch, or None once the transport is closed. Raises a
        non-retryable TransportError once the connection is lost for good, so that the
        caller (the engine's run) ends instead of waiting for ever."""
        if not queue.empty():
            return queue.get_nowait()
        getter = asyncio.ensure_future(queue.get())
        closer = asyncio.ensure_future(self.closed.wait())
        lost = asyncio.ensure_future(self.lost.wait())
        try:
            await asyncio.wait({getter, closer, lost}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            closer.cancel()
            lost.cancel()
            if not getter.done():
                getter.cancel()
        if getter.done() and not getter.cancelled():
            return getter.result()
        if self.lost.is_set() and not self.closed.is_set():
            raise TransportError(
                "the NATS client closed the connection for good (it will not reconnect)",
                retryable=False,
            )
        return None

    async def give_back(self, queue: asyncio.Queue[list[Msg]]) -> None:
        """Nak batches fetched but never handed to the caller."""
        while not queue.empty():
            await self.nak_quietly(queue.get_nowait())

    async def nak_quietly(self, msgs: Sequence[Msg]) -> None:
        """Best-effort nak on the way out; what fails comes back after ack_wait. A
        message on its last delivery is dead-lettered instead (``last_chance``)."""
        for m in msgs:
            self.leases.release(m)
            with contextlib.suppress(Exception):  # each on its own: one failure skips none
                if not m.is_acked and not await self.last_chance(m):
                    await m.nak()
