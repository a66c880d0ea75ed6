"""The end of a batch: remember, publish, dead-letter, acknowledge, each retried while it fails.

:class:`~orchestrator.client.service.Service` decides what happened to each delivery
(answered with replies, handled with nothing to say, bad, failed) and hands the lists
to a :class:`Settler`, which carries them out in the one order that loses nothing:
the replies are remembered before they are published (a crash in between makes the
copy publish them), published before their message is acknowledged, and a message
whose reply the broker refuses for good is dead-lettered, named with the broker's
reason. Trouble that may pass (a retryable :class:`~schemas.errors.SagawireError`:
a broker or database away) is waited out with backoff, the deliveries held.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from adapters._util import Backoff
from adapters.base import Delivery, OutgoingMessage, Transport
from orchestrator.client.replies import Key, ReplyMemory, Sent
from schemas.errors import PublishRefused, SagawireError

__all__ = ["Settler"]

log = logging.getLogger("sagawire.client")


class Settler:
    """Settles the batches of service ``name`` on ``transport``, remembering in ``replies``."""

    def __init__(
        self,
        name: str,
        transport: Transport,
        replies: ReplyMemory,
        *,
        retry_delay: float,
        clock: Callable[[], float],
        on_dead_letter: Callable[[], None],
    ) -> None:
        self.name = name
        self.transport = transport
        self.replies = replies
        self.retry_delay = retry_delay
        self.clock = clock
        self.on_dead_letter = on_dead_letter

    async def __call__(
        self,
        answered: list[tuple[Delivery, Sent]],
        quiet: list[Delivery],
        dead: list[tuple[Delivery, str]],
        fresh: list[tuple[Key, Sent]],
        failed: list[tuple[Delivery, str]],
    ) -> None:
        """Remember, publish, dead-letter, then acknowledge: in that order, each retried
        while the trouble may pass. ``answered`` deliveries are acknowledged once their
        replies are published, ``quiet`` ones (nothing to send) right away."""
        if fresh:
            now = self.clock()
            await self.retrying("remember replies", lambda: self.replies.remember(fresh, now))
        done = quiet
        if answered:
            out = [m for _, sent in answered for m in sent]
            refused = await self._publish(out) if out else {}
            if not refused:
                done.extend([d for d, _ in answered])
            for d, sent in answered if refused else ():
                reason = next((refused[m.message_id] for m in sent if m.message_id in refused), "")
                if not reason:
                    done.append(d)
                else:  # the broker will never take this reply: said with its cause
                    dead.append((d, f"{self.name}: a reply was refused: {reason}"))
        retry: list[Delivery] = []
        for d, reason in failed:
            if d.final_attempt:
                dead.append((d, reason))
            else:
                retry.append(d)
        for d, reason in dead:
            await self._dead_letter(d, reason)
            done.append(d)
        if done:
            await self.retrying("acknowledge", lambda: self.transport.ack(done))
        if retry:
            delay = self.retry_delay
            await self.retrying("give back", lambda: self.transport.nack(retry, delay=delay))

    async def _dead_letter(self, d: Delivery, reason: str) -> None:
        self.on_dead_letter()
        log.warning("service %s: dead letter from %s: %s", self.name, d.destination, reason)

        async def send() -> None:
            await self.transport.dead_letter(d, reason)

        try:
            await self.retrying("dead-letter", send)
        except PublishRefused as exc:  # too large even for the dead letters: it goes
            log.warning("service %s: dead letter refused, message dropped: %s", self.name, exc)

    async def _publish(self, out: list[OutgoingMessage]) -> dict[str, str]:
        """Publish ``out``; the ids the broker refused for good, with its reasons."""
        try:
            await self.retrying("publish replies", lambda: self.transport.publish(out))
        except PublishRefused as exc:
            log.warning("service %s: the broker refused replies: %s", self.name, exc.refused)
            return exc.refused
        return {}

    async def retrying(self, what: str, op: Callable[[], Awaitable[Any]]) -> Any:
        """``op()``, again after a growing pause while it fails with a retryable error."""
        backoff = Backoff(initial=0.05, maximum=2.0)
        while True:
            try:
                return await op()
            except SagawireError as exc:
                if not exc.retryable:
                    raise
                delay = backoff.next_delay()
                log.warning(
                    "service %s: cannot %s (%s); again in %.2fs", self.name, what, exc, delay
                )
                await asyncio.sleep(delay)
