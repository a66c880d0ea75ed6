"""What a service remembers of the messages it handled: their first replies, by message.

The participant's contract (README): act on a message once, and answer every copy of
it (a redelivery, a re-publish, a saga's re-send after a timeout) with the *first*
replies, the same bytes. So a service keeps, per handled message ``(source, id)``,
the messages it sent for it (none is an answer too). :class:`ReplyMemory` is that
memory, a small protocol with two implementations:

* :class:`RecentReplies` (the default): in the process, bounded. Two generations of
  ``limit`` entries each; when the newer is full it becomes the older and the older
  is dropped, so the last ``limit`` to ``2 * limit`` messages are remembered, for a
  dict lookup each. A restart forgets them: a copy that comes after it is handled
  again (and its replies keep their ids, see :func:`~orchestrator.client.events.reply_id`).
* :class:`~orchestrator.client.durable.DurableReplies` (``replies="sqlite:///..."`` or
  ``"postgresql://..."``): a table of its own, kept ``retention`` seconds, which
  outlives a restart or a kill -9.

Keep them at least as long as a saga may send a command again: its step's timeout
times its attempts, plus backoff (a minute for ``sagas/order.py``).
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import orjson

from adapters.base import OutgoingMessage
from schemas.errors import ConfigError

__all__ = [
    "Key",
    "RecentReplies",
    "ReplyMemory",
    "Sent",
    "pack",
    "unpack",
]

Key = tuple[str, str]
"""A handled message: ``(source, id)`` (ids are unique per source, not across sources)."""

Sent = tuple[OutgoingMessage, ...]
"""The messages sent for one handled message, in order (empty: it was handled, silently)."""


@runtime_checkable
class ReplyMemory(Protocol):
    """The replies a service sent, by the message that caused them."""

    async def open(self) -> None:
        """Connect and create what is missing (a table); idempotent."""

    async def close(self) -> None:
        """Release connections; idempotent."""

    async def recall(self, keys: Sequence[Key]) -> dict[Key, Sent]:
        """What was sent for each of ``keys`` that was handled before."""
        ...

    async def remember(self, handled: Sequence[tuple[Key, Sent]], now: float) -> None:
        """Record what was sent for each message (before it is published: a crash after
        this and before the publish makes the copy re-publish it). A key already
        recorded keeps its first record."""

    async def prune(self, before: float) -> int:
        """Forget messages recorded before ``before``; how many were forgotten."""
        ...


class RecentReplies:
    """The last ``limit`` to ``2 * limit`` handled messages, in this process."""

    def __init__(self, limit: int = 10_000) -> None:
        if limit < 1:
            raise ConfigError(f"a reply memory of {limit} messages remembers nothing; use >= 1")
        self.limit = limit
        self.recent: dict[Key, Sent] = {}
        self.older: dict[Key, Sent] = {}

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        return None

    def get(self, key: Key) -> Sent | None:
        """What was sent for ``key``, if it is remembered (synchronous: a dict lookup)."""
        found = self.recent.get(key)
        return found if found is not None else self.older.get(key)

    def put(self, key: Key, sent: Sent) -> None:
        """Remember ``sent`` for ``key`` (synchronous; a known key keeps its first record)."""
        if key in self.recent or key in self.older:
            return
        if len(self.recent) >= self.limit:
            self.older, self.recent = self.recent, {}
        self.recent[key] = sent

    async def recall(self, keys: Sequence[Key]) -> dict[Key, Sent]:
        found: dict[Key, Sent] = {}
        for key in keys:
            sent = self.get(key)
            if sent is not None:
                found[key] = sent
        return found

    async def remember(self, handled: Sequence[tuple[Key, Sent]], now: float) -> None:
        for key, sent in handled:
            self.put(key, sent)

    async def prune(self, before: float) -> int:
        return 0  # bounded by count, not by age

    def __len__(self) -> int:
        return len(self.recent) + len(self.older)


def pack(sent: Sent) -> bytes:
    """``sent`` as bytes for a durable memory (JSON; bodies in base64, since a binary-mode
    body need not be UTF-8)."""
    return orjson.dumps(
        [
            [m.destination, m.message_id, m.key, dict(m.headers), base64.b64encode(m.body).decode()]
            for m in sent
        ]
    )


def unpack(raw: bytes) -> Sent:
    """The messages :func:`pack` wrote, as they were sent."""
    return tuple(
        OutgoingMessage(destination, base64.b64decode(body), message_id, key, headers)
        for destination, message_id, key, headers, body in orjson.loads(raw)
    )
