"""Simulated inventory, payment and shipping services for ``sagawire demo`` and the bench.

Each is a :class:`~orchestrator.client.Service` (the client library any Python service
would use) with a consumer group of its own (``sim-inventory``, ...) on any transport:
it reads the order saga's commands and answers with the events a real service would
send. The library keeps the participant's side of the contract (README): the reply
carries ``correlationid`` and ``causationid``, goes out before the command is acked,
and a command already carried out (the same ``id`` and ``source``, redelivered,
re-published or re-sent by the saga after a timeout) is answered with the first reply
again, byte for byte, and never carried out twice.

What a service does with one command (answer, refuse, or stay silent so the saga's
timeout and retry fire) is a pure function of ``(seed, order id, command type,
attempt)``, not of arrival order (:mod:`orchestrator.tooling.fates`), so concurrency and
batching never change an outcome: the same seed gives the same sagas on every run and
every broker. A silent command counts as lost on its way in: the handler returns
:data:`~orchestrator.client.IGNORE`, so nothing is done or remembered and its re-send
is new to the service. ``Behaviour.lost`` loses replies instead: the command is carried
out and its reply remembered, but the network (:class:`_Lossy`) drops the first send of
it, so the saga hears of it only when it re-sends and gets the first reply again.

Replies may be delayed. The ``sleep`` callable given to a service is *called* the
moment the reply is decided and only awaited later, so a virtual clock can note the
wake-up time at once (see :mod:`orchestrator.tooling.demo`); the handler returns that
wait, and the library holds the command unacked until the reply is sent.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from adapters import open_transport
from adapters.base import (
    Delivery,
    OutgoingMessage,
    Readiness,
    Topology,
    Transport,
)
from orchestrator.client import IGNORE, Emit, Outcome, RecentReplies, Service, reply_id
from orchestrator.client.events import reply_message
from orchestrator.tooling.fates import (
    BENCH,
    SERVICES,
    Behaviour,
    order_placed,
    uniform,
)
from schemas.envelope import Envelope
from schemas.errors import ConfigError

__all__ = [
    "BENCH",
    "SERVICES",
    "Behaviour",
    "Participant",
    "Participants",
    "order_placed",
    "simulate",
    "start_participants",
]

Sleep = Callable[[float], Awaitable[None]]


class Participant:
    """One simulated service, a :class:`~orchestrator.client.Service` consuming its
    commands as group ``sim-<name>`` and answering as source ``sim/<name>``.

    ``handled`` counts the commands it received, ``repeats`` the copies it answered
    with a first reply again.
    """

    def __init__(
        self,
        name: str,
        transport: Transport,
        *,
        seed: int = 0,
        behaviour: Behaviour = Behaviour(),
        sleep: Sleep = asyncio.sleep,
        max_batch: int = 256,
    ) -> None:
        self.name = name
        self.transport = transport
        self.seed = seed
        self.behaviour = behaviour
        self.sleep = sleep
        self.source = f"sim/{name}"
        self.replies = SERVICES[name]
        self._lose: set[str] = set()
        lossy = behaviour.lost > 0 and not behaviour.always_succeed
        self.memory = RecentReplies(behaviour.remember)
        self.service = Service(
            name,
            _Lossy(transport, self._lose) if lossy else transport,
            source=self.source,
            group=f"sim-{name}",
            replies=self.memory,
            max_batch=max_batch,
        )
        for kind, spec in self.replies.items():
            emits = tuple(t for t in (spec.ok, spec.refused) if t)
            self.service.add(kind, self._handle, emits=emits)

    @property
    def topology(self) -> Topology:
        return self.service.topology

    @property
    def handled(self) -> int:
        return self.service.stats.received

    @property
    def repeats(self) -> int:
        return self.service.stats.duplicates

    async def start(self) -> None:
        """Declare the service's queue (its transport is started by the caller)."""
        await self.service.start()

    async def run(self) -> None:
        """Answer commands until the transport's stream ends (close) or the task is cancelled."""
        await self.service.run()

    def _handle(self, data: Any, command: Envelope) -> Outcome | Awaitable[Outcome]:
        """The library's handler: the reply now, the reply after a wait, or silence."""
        reply, delay = self._decide(command.type, data, command.attempt or 1)
        if reply is None:  # silent: the command is "lost" before the service saw it
            return IGNORE
        if self._loses_reply(command.type, data, command.attempt or 1):
            self._lose.add(reply_id(self.source, command.source, command.id))
            return reply
        if delay > 0:
            # Start the wait now (a virtual clock registers the wake-up here), send later.
            return _after(asyncio.ensure_future(self.sleep(delay)), reply)
        return reply

    def _loses_reply(self, kind: str, data: Any, attempt: int) -> bool:
        """Whether the reply to a command is lost (``Behaviour.lost``), fixed like its fate."""
        b = self.behaviour
        if b.always_succeed or b.lost <= 0:
            return False
        lost, _ = uniform(self.seed, _order_id(data), f"{kind}/lost", attempt)
        return lost < b.lost

    def _decide(self, kind: str, data: Any, attempt: int) -> tuple[Emit | None, float]:
        """The reply to a ``kind`` command (None: stay silent) and how long to wait
        before sending it."""
        spec = self.replies[kind]
        order_id = _order_id(data)
        b = self.behaviour
        if b.always_succeed:
            return _reply(spec.ok, order_id, spec.field), 0.0
        fate, spread = uniform(self.seed, order_id, kind, attempt)
        low, high = b.delay
        delay = round(low + (high - low) * spread, 2)  # 10 ms steps: replies coincide
        if spec.refused is None:  # a compensation: acknowledged, unless silent
            if fate < b.undo_silent:
                return None, 0.0
            return _reply(spec.ok, order_id, None), delay
        if fate < b.silent:
            return None, 0.0
        if fate < b.silent + b.refuse:
            return Emit(spec.refused, {"order_id": order_id, "reason": spec.reason}), delay
        return _reply(spec.ok, order_id, spec.field), delay

    def _answer(self, command: dict[str, Any]) -> tuple[OutgoingMessage | None, float]:
        """The message :meth:`_decide` makes of a command given as its JSON attributes
        (what the service would send for it, and after how long)."""
        reply, delay = self._decide(command["type"], command["data"], command.get("attempt") or 1)
        if reply is None:
            return None, 0.0
        cause = Envelope.new(
            command["type"],
            command["data"],
            id=command["id"],
            source=command.get("source") or "sagawire",
            correlationid=command.get("correlationid"),
        )
        now = datetime.now(UTC)
        message = reply_message(
            cause, reply, source=self.source, index=0, now=now, key=cause.correlationid
        )
        return message, delay

    # The memory of replies, as the tests look at it.
    def _keep(self, key: tuple[str, str], body: bytes) -> None:
        self.memory.put(key, (OutgoingMessage("", body, ""),))

    @property
    def _recent(self) -> dict[tuple[str, str], Any]:
        return self.memory.recent

    @property
    def _older(self) -> dict[tuple[str, str], Any]:
        return self.memory.older


def _order_id(data: Any) -> str:
    return str(data.get("order_id", "")) if isinstance(data, dict) else ""


def _reply(kind: str, order_id: str, field: str | None) -> Emit:
    data = {"order_id": order_id}
    if field is not None:
        data[field] = f"{field[:3]}-{order_id}"
    return Emit(kind, data)


async def _after(wait: Awaitable[None], reply: Emit) -> Emit:
    await wait
    return reply


class _Lossy:
    """A transport whose network loses the first send of the replies named in ``lose``
    (``Behaviour.lost``): a reply sent again, the same id, goes through."""

    def __init__(self, inner: Transport, lose: set[str]) -> None:
        self.inner = inner
        self.lose = lose

    async def start(self) -> None:
        await self.inner.start()

    async def close(self) -> None:
        await self.inner.close()

    async def declare(self, topology: Topology) -> None:
        await self.inner.declare(topology)

    def consume(self, topology: Topology, *, max_batch: int = 256) -> AsyncIterator[list[Delivery]]:
        return self.inner.consume(topology, max_batch=max_batch)

    async def publish(self, messages: Sequence[OutgoingMessage]) -> None:
        kept = [m for m in messages if m.message_id not in self.lose]
        self.lose.difference_update(m.message_id for m in messages)
        if kept:
            await self.inner.publish(kept)

    async def ack(self, deliveries: Sequence[Delivery]) -> None:
        await self.inner.ack(deliveries)

    async def nack(self, deliveries: Sequence[Delivery], *, delay: float = 0.0) -> None:
        await self.inner.nack(deliveries, delay=delay)

    async def dead_letter(self, delivery: Delivery, reason: str) -> None:
        await self.inner.dead_letter(delivery, reason)

    @property
    def readiness(self) -> Readiness:
        return self.inner.readiness


class Participants:
    """The running simulated services; ``close()`` stops them and their transports."""

    def __init__(self, services: list[Participant]) -> None:
        self.services = services
        self._tasks = [asyncio.ensure_future(p.run()) for p in services]

    @property
    def command_types(self) -> tuple[str, ...]:
        return tuple(t for p in self.services for t in p.topology.consumes)

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for p in self.services:
            await p.transport.close()


async def start_participants(
    broker_url: str,
    *,
    seed: int = 0,
    behaviour: Behaviour = Behaviour(),
    sleep: Sleep = asyncio.sleep,
    max_batch: int = 256,
    wrap: Callable[[Transport], Transport] | None = None,
) -> Participants:
    """Start inventory, payment and shipping, one transport each, queues declared.

    Declared before returning, so commands the engine sends from now on are kept
    for them. ``wrap`` lets the caller decorate each transport (the demo counts
    messages through it).
    """
    services: list[Participant] = []
    try:
        for name in SERVICES:
            transport = open_transport(broker_url)
            if wrap is not None:
                transport = wrap(transport)
            await transport.start()
            p = Participant(
                name, transport, seed=seed, behaviour=behaviour, sleep=sleep, max_batch=max_batch
            )
            services.append(p)
            await p.start()
    except BaseException:
        for p in services:
            await p.transport.close()
        raise
    return Participants(services)


async def simulate(
    broker_url: str,
    stop: asyncio.Event,
    *,
    seed: int = 0,
    behaviour: Behaviour = Behaviour(),
    on_ready: Callable[[Participants], None] | None = None,
) -> None:
    """Run the three services on ``broker_url`` until ``stop`` is set (``sagawire
    simulate``: the services of the order saga, for trying a sidecar on a real broker,
    and the bench's participants when they run in a process of their own)."""
    if broker_url.startswith("memory:"):
        raise ConfigError(
            "the in-memory broker lives inside one process: simulated services in another"
            " process need a real broker (kafka://, nats://, amqp://)"
        )
    services = await start_participants(broker_url, seed=seed, behaviour=behaviour)
    try:
        if on_ready is not None:
            on_ready(services)
        await stop.wait()
    finally:
        await services.close()
