"""What the NATS transport holds unsettled, kept alive with in-progress acks.

JetStream redelivers a message whose ack has not come within the consumer's
``ack_wait`` and counts that redelivery against ``max_deliver``. The engine may hold
a delivery for minutes (it stops taking work while its store is down and keeps what
it has), so every message this transport holds unsettled, handed out or fetched
ahead, is leased: once its lease is a third of ``ack_wait`` old it gets an
in-progress ack (``+WPI``), which restarts its ack_wait without counting a delivery.
A sweep runs every sixth of ``ack_wait``, so a lease is renewed at the latest when
half of ``ack_wait`` has gone, leaving the other half for a busy event loop or a slow
link. Messages settled within a third of ``ack_wait``, the usual case, cost nothing.

That is what lets ``ack_wait`` be short (:mod:`adapters._nats_options`): it no longer
bounds how long the engine may hold a message, only how long the messages of a
process that died (kill -9, a lost host) wait before another consumer gets them.
While the connection is down no lease can be renewed; one that lapses meanwhile is
redelivered, as for a dead process, and the engine's inbox absorbs the copy.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable

import nats.errors
from nats.aio.msg import Msg

__all__ = ["Leases"]

_log = logging.getLogger("adapters.nats")


class Leases:
    """Unsettled messages by reply subject, each with when its lease last started."""

    def __init__(self, ack_wait: float) -> None:
        self.ack_wait = ack_wait
        self._held: dict[str, tuple[Msg, float]] = {}

    def hold(self, msgs: Iterable[Msg]) -> None:
        """Fetched messages: their lease started with their delivery."""
        now = asyncio.get_running_loop().time()
        for m in msgs:
            self._held[m.reply] = (m, now)

    def release(self, msg: Msg) -> None:
        """Settled (acked, nacked, given back): nothing more to keep."""
        self._held.pop(msg.reply, None)

    def held(self) -> list[Msg]:
        return [m for m, _ in self._held.values()]

    def __len__(self) -> int:
        return len(self._held)

    async def renew(self, now: float) -> int:
        """Send an in-progress ack for every message whose lease is a third of
        ``ack_wait`` old; how many were renewed. Stops at the first that cannot be
        sent (the connection is going): the next sweep tries again."""
        due_after = self.ack_wait / 3
        due = [m for m, since in self._held.values() if now - since >= due_after]
        renewed = 0
        for m in due:
            if m.is_acked or m.reply not in self._held:
                continue  # settled meanwhile
            try:
                await m.in_progress()
            except nats.errors.Error as exc:
                _log.debug("in-progress ack not sent (%r); retried next sweep", exc)
                break
            self._held[m.reply] = (m, now)
            renewed += 1
        return renewed

    async def keep(self, connected: asyncio.Event, closed: asyncio.Event) -> None:
        """Renew leases until ``closed``; while disconnected, wait for the link."""
        loop = asyncio.get_running_loop()
        sweep = self.ack_wait / 6
        while not closed.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(sweep):
                    await closed.wait()
            if connected.is_set() and not closed.is_set():
                await self.renew(loop.time())
