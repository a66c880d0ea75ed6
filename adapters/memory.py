"""In-memory broker and transport: a real, small implementation of the Transport protocol.

Used by ``sagawire demo``, by ``orchestrator.testing`` and by users' unit tests.
It behaves like a broker with durable queues (RabbitMQ-like): :meth:`declare`
creates a queue per consumer group bound to the consumed destinations, publishes
fan out to every bound queue, a group's consumers share its queue, and deliveries
not acked when a transport closes go back to the queue with a higher
``delivery_count``. Messages live only as long as the process, by nature.

Like a real broker it may refuse messages over a size (``max_message_size``, off by
default; ``memory://name?max_message_size=1024``), so users' unit tests can watch
their sagas meet a :class:`~schemas.errors.PublishRefused` without a broker. A
delivery held unacked stays with its consumer until the transport closes, however
long: holding costs nothing here, as the protocol promises.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import deque
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import ClassVar
from urllib.parse import urlsplit

from adapters._util import check_options, query_params
from adapters.base import (
    Delivery,
    OutgoingMessage,
    Readiness,
    Topology,
    dead_letter_message,
)
from schemas.errors import ConfigError, PublishRefused, TransportError

__all__ = ["MemoryBroker", "MemoryTransport", "parse_memory_url"]

_OPTIONS = frozenset({"max_message_size"})
"""The only query option of a memory URL; any other is refused (a misspelling)."""


@dataclass(eq=False)
class _Queue:
    bindings: set[str] = field(default_factory=set)
    ready: deque[Delivery] = field(default_factory=deque)
    unacked: dict[object, tuple[Delivery, MemoryTransport]] = field(default_factory=dict)
    changed: asyncio.Event = field(default_factory=asyncio.Event)


class MemoryBroker:
    """A process-local broker. Transports opened on the same name share one broker."""

    _named: ClassVar[dict[str, MemoryBroker]] = {}

    def __init__(self, *, record: bool = False, max_message_size: int | None = None) -> None:
        self._queues: dict[str, _Queue] = {}
        self._ids = itertools.count(1)
        self.record = record
        self.log: list[OutgoingMessage] = []
        """Every published message, in order, when ``record`` is on (tests, demo)."""
        self.max_message_size = max_message_size
        """Bytes of body and headers above which :meth:`refusal` refuses a message, as
        a real broker's limit does (RabbitMQ ``max_message_size``, NATS
        ``max_payload``); ``None``: no limit."""

    @classmethod
    def named(cls, name: str) -> MemoryBroker:
        """The broker for ``memory://name`` (``memory://`` is the name ``""``)."""
        broker = cls._named.get(name)
        if broker is None:
            broker = cls._named[name] = cls()
        return broker

    @classmethod
    def forget(cls, name: str) -> None:
        cls._named.pop(name, None)

    def queue(self, group: str) -> _Queue:
        q = self._queues.get(group)
        if q is None:
            q = self._queues[group] = _Queue()
        return q

    def bind(self, group: str, destinations: Sequence[str]) -> None:
        self.queue(group).bindings.update(destinations)

    def refusal(self, message: OutgoingMessage) -> str | None:
        """Why this broker refuses ``message`` for good, or ``None`` if it takes it."""
        limit = self.max_message_size
        if limit is None:
            return None
        size = len(message.body) + sum(
            len(k.encode()) + len(v.encode()) for k, v in message.headers.items()
        )
        if size <= limit:
            return None
        return (
            f"message of {size} bytes (body and headers) is over the memory broker's"
            f" max_message_size of {limit} bytes"
        )

    def publish(self, message: OutgoingMessage) -> None:
        """Route ``message`` to every bound queue (it was checked: :meth:`refusal`)."""
        if self.record:
            self.log.append(message)
        for q in self._queues.values():
            if message.destination in q.bindings:
                q.ready.append(
                    Delivery(
                        destination=message.destination,
                        body=message.body,
                        headers=dict(message.headers),
                        key=message.key,
                        delivery_count=1,
                        handle=next(self._ids),
                    )
                )
                q.changed.set()

    def depth(self, group: str) -> int:
        """Messages waiting or unacked in ``group``'s queue."""
        q = self._queues.get(group)
        return 0 if q is None else len(q.ready) + len(q.unacked)

    def published(self, destination: str | None = None) -> list[OutgoingMessage]:
        """Recorded messages, optionally only those sent to ``destination``."""
        if destination is None:
            return list(self.log)
        return [m for m in self.log if m.destination == destination]

    def requeue(self, q: _Queue, delivery: Delivery) -> None:
        delivery.delivery_count += 1
        delivery.handle = next(self._ids)
        q.ready.appendleft(delivery)
        q.changed.set()


def parse_memory_url(url: str) -> tuple[str, int | None]:
    """``memory://[name][?max_message_size=BYTES]`` -> ``(name, max_message_size)``.

    Apart from :meth:`MemoryTransport.from_url` so that a URL can be checked without
    creating (or resizing) the named broker it names."""
    parts = urlsplit(url)
    if parts.scheme != "memory":
        raise ConfigError(f"not a memory URL: {url!r} (use memory://[name])")
    check_options(url, _OPTIONS, repr(url))
    raw = query_params(url).get("max_message_size")
    if raw is not None and (not raw.isdigit() or int(raw) < 1):
        raise ConfigError(f"max_message_size={raw!r} in {url!r}: want a whole number > 0")
    return parts.netloc + parts.path, None if raw is None else int(raw)


class MemoryTransport:
    """Transport over a :class:`MemoryBroker`. URL: ``memory://`` or ``memory://name``."""

    def __init__(self, broker: MemoryBroker | None = None) -> None:
        self.broker = broker or MemoryBroker()
        self._started = False
        self._closed = asyncio.Event()
        self._groups: set[str] = set()

    @classmethod
    def from_url(cls, url: str) -> MemoryTransport:
        """``memory://[name][?max_message_size=BYTES]``: transports of one name share a
        broker; a size given here applies to that broker from now on."""
        name, max_message_size = parse_memory_url(url)
        broker = MemoryBroker.named(name)
        if max_message_size is not None:
            broker.max_message_size = max_message_size
        return cls(broker)

    async def start(self) -> None:
        self._started = True
        self._closed.clear()

    async def close(self) -> None:
        """Give every delivery this transport holds unacked back to its queue."""
        self._started = False
        self._closed.set()
        for group in self._groups:
            q = self.broker.queue(group)
            mine = [(handle, d) for handle, (d, owner) in q.unacked.items() if owner is self]
            for handle, d in reversed(mine):
                del q.unacked[handle]
                self.broker.requeue(q, d)
            q.changed.set()

    async def declare(self, topology: Topology) -> None:
        self.broker.bind(topology.group, topology.consumes)

    async def consume(
        self, topology: Topology, *, max_batch: int = 256
    ) -> AsyncIterator[list[Delivery]]:
        self._require_started()
        self.broker.bind(topology.group, topology.consumes)
        self._groups.add(topology.group)
        q = self.broker.queue(topology.group)
        while not self._closed.is_set():
            if not q.ready:
                q.changed.clear()
                waiter = asyncio.ensure_future(q.changed.wait())
                closer = asyncio.ensure_future(self._closed.wait())
                try:
                    await asyncio.wait({waiter, closer}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    waiter.cancel()
                    closer.cancel()
                continue
            batch: list[Delivery] = []
            while q.ready and len(batch) < max_batch:
                d = q.ready.popleft()
                q.unacked[d.handle] = (d, self)
                batch.append(d)
            yield batch

    def poll(self, topology: Topology, *, max_batch: int = 256) -> list[Delivery]:
        """Take what is queued for ``topology.group`` now, without waiting (for the
        test harness, which drives the engine step by step)."""
        self._require_started()
        self.broker.bind(topology.group, topology.consumes)
        self._groups.add(topology.group)
        q = self.broker.queue(topology.group)
        batch: list[Delivery] = []
        while q.ready and len(batch) < max_batch:
            d = q.ready.popleft()
            q.unacked[d.handle] = (d, self)
            batch.append(d)
        return batch

    async def publish(self, messages: Sequence[OutgoingMessage]) -> None:
        """Publish in order; the broker's refusals are skipped and then raised together
        (:class:`PublishRefused`), after every other message was published."""
        self._require_started()
        refused: dict[str, str] = {}
        for m in messages:
            reason = self.broker.refusal(m)
            if reason is None:
                self.broker.publish(m)
            else:
                refused[m.message_id] = reason
        if refused:
            raise PublishRefused(refused)

    async def ack(self, deliveries: Sequence[Delivery]) -> None:
        for group in self._groups:
            q = self.broker.queue(group)
            for d in deliveries:
                q.unacked.pop(d.handle, None)

    async def nack(self, deliveries: Sequence[Delivery], *, delay: float = 0.0) -> None:
        for group in self._groups:
            q = self.broker.queue(group)
            for d in deliveries:
                if q.unacked.pop(d.handle, None) is None:
                    continue
                if delay > 0:
                    asyncio.get_running_loop().call_later(delay, self.broker.requeue, q, d)
                else:
                    self.broker.requeue(q, d)

    async def dead_letter(self, delivery: Delivery, reason: str) -> None:
        message = dead_letter_message(delivery, reason)
        refusal = self.broker.refusal(message)
        if refusal is not None:
            raise PublishRefused({message.message_id: refusal})
        self.broker.publish(message)

    @property
    def readiness(self) -> Readiness:
        if not self._started:
            return Readiness(False, "memory transport not started")
        return Readiness(True)

    def _require_started(self) -> None:
        if not self._started:
            raise TransportError("memory transport is not started; call start() first")
