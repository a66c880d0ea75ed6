"""Simulated inventory, payment and shipping services for ``sagawire demo`` and the bench.

Each service is a consumer group of its own (``sim-inventory``, ...) on any
transport: it reads the order saga's commands and answers with the CloudEvents
a real service would send (``correlationid`` copied, ``causationid`` = the
command's id, published before the command is acked). What a service does with
one command — answer, refuse, or stay silent so the saga's timeout and retry
fire — is a pure function of ``(seed, order id, command type, attempt)``, not of
arrival order, so concurrency and batching never change an outcome: the same
seed gives the same sagas on every run and every broker.

They keep the participant's side of the contract (README): a command already
carried out — the same ``id`` and ``source``, redelivered, re-published or re-sent
by the saga after a timeout — is answered with the first reply again, byte for
byte, and never carried out twice. A silent command counts as lost on its way in
(nothing was done, so its re-send is new to the service); ``Behaviour.lost``
loses replies instead (done, but the saga does not hear of it until it re-sends).

Replies may be delayed. The ``sleep`` callable given to a service is *called*
the moment the reply is decided and only awaited later, so a virtual clock can
note the wake-up time at once (see :mod:`orchestrator.tooling.demo`).
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import orjson

from adapters import open_transport
from adapters.base import (
    Delivery,
    OutgoingMessage,
    Topology,
    Transport,
)
from orchestrator.tooling.fates import (
    BENCH,
    SERVICES,
    Behaviour,
    Reply,
    message,
    order_placed,
    parse,
    reply_message,
    uniform,
)
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
    """One simulated service consuming its commands as group ``sim-<name>``.

    A delayed reply holds its command unacked until it is sent, so a crash
    mid-delay means redelivery, as with a real service. Replies are kept by command
    ``(source, id)`` (see ``Behaviour.remember``): a duplicate is answered with its
    first reply again (``repeats`` counts those).
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
        self.max_batch = max_batch
        self.replies = SERVICES[name]
        self.topology = Topology(
            consumes=tuple(self.replies),
            produces=tuple(t for r in self.replies.values() for t in (r.ok, r.refused) if t),
            group=f"sim-{name}",
        )
        self.handled = 0
        self.repeats = 0
        # The first reply's bytes by command (source, id), in two generations: the newer
        # fills up to ``remember``, then becomes the older (and the older is dropped).
        self._recent: dict[tuple[str, str], bytes] = {}
        self._older: dict[tuple[str, str], bytes] = {}
        self._later: set[asyncio.Future[None]] = set()

    async def run(self) -> None:
        """Answer commands until the transport's stream ends (close) or the task is cancelled."""
        try:
            async for batch in self.transport.consume(self.topology, max_batch=self.max_batch):
                await self._handle(batch)
        finally:
            for f in list(self._later):
                f.cancel()

    async def _handle(self, batch: Sequence[Delivery]) -> None:
        out: list[OutgoingMessage] = []
        done: list[Delivery] = []
        for d in batch:
            self.handled += 1
            command = parse(d.body)
            if command is None:
                await self.transport.dead_letter(d, f"{self.name} simulator: not a command")
                done.append(d)
                continue
            key = (sys.intern(command["source"]), command["id"])
            first = self._recent.get(key) or self._older.get(key)
            if first is not None:  # carried out already: the first reply again, nothing more
                self.repeats += 1
                out.append(reply_message(first))
                done.append(d)
                continue
            reply, delay = self._answer(command)
            if reply is None:  # silent: the command is "lost" before the service saw it
                done.append(d)
                continue
            self._keep(key, reply.body)
            if self._loses_reply(command):  # carried out; the saga will re-send it
                done.append(d)
            elif delay > 0:
                # Start the wait now (a virtual clock registers the wake-up here), send later.
                wait = asyncio.ensure_future(self.sleep(delay))
                task = asyncio.ensure_future(self._reply_later(wait, reply, d))
                for f in (wait, task):
                    self._later.add(f)
                    f.add_done_callback(self._later.discard)
            else:
                out.append(reply)
                done.append(d)
        if out:
            await self.transport.publish(out)
        if done:
            await self.transport.ack(done)

    def _keep(self, key: tuple[str, str], body: bytes) -> None:
        if len(self._recent) >= self.behaviour.remember:
            self._older, self._recent = self._recent, {}
        # A copy of the exact size: orjson's output holds a 4 KiB buffer whatever its length.
        self._recent[key] = bytes(memoryview(body))

    def _loses_reply(self, command: dict[str, Any]) -> bool:
        """Whether the reply to ``command`` is lost (``Behaviour.lost``), fixed like its fate."""
        b = self.behaviour
        if b.always_succeed or b.lost <= 0:
            return False
        data = command["data"]
        order_id = str(data.get("order_id", "")) if isinstance(data, dict) else ""
        lost, _ = uniform(
            self.seed, order_id, f"{command['type']}/lost", command.get("attempt") or 1
        )
        return lost < b.lost

    async def _reply_later(
        self, wait: asyncio.Future[None], reply: OutgoingMessage, delivery: Delivery
    ) -> None:
        await wait
        await self.transport.publish([reply])
        await self.transport.ack([delivery])

    def _answer(self, command: dict[str, Any]) -> tuple[OutgoingMessage | None, float]:
        """The reply to ``command`` (None: stay silent) and how long to wait before sending it."""
        kind: str = command["type"]
        spec = self.replies[kind]
        data = command["data"]
        order_id = str(data.get("order_id", "")) if isinstance(data, dict) else ""
        b = self.behaviour
        if b.always_succeed:
            return self._reply(command, spec.ok, order_id, spec), 0.0
        attempt = command.get("attempt") or 1
        fate, spread = uniform(self.seed, order_id, kind, attempt)
        low, high = b.delay
        delay = round(low + (high - low) * spread, 2)  # 10 ms steps: replies coincide
        if spec.refused is None:  # a compensation: acknowledged, unless silent
            if fate < b.undo_silent:
                return None, 0.0
            return self._reply(command, spec.ok, order_id, spec), delay
        if fate < b.silent:
            return None, 0.0
        if fate < b.silent + b.refuse:
            return self._reply(command, spec.refused, order_id, spec, refused=True), delay
        return self._reply(command, spec.ok, order_id, spec), delay

    def _reply(
        self,
        command: dict[str, Any],
        kind: str,
        order_id: str,
        spec: Reply,
        *,
        refused: bool = False,
    ) -> OutgoingMessage:
        data: dict[str, str] = {"order_id": order_id}
        if refused:
            data["reason"] = spec.reason
        elif spec.field is not None:
            data[spec.field] = f"{spec.field[:3]}-{order_id}"
        cid = command.get("correlationid") or order_id
        # Derived from the command id: a redelivered command gets the same reply id,
        # which the engine's inbox then ignores.
        reply_id = f"{command['id']}/{kind}"
        # The CloudEvent as a plain dict, not an Envelope: the same bytes as
        # encode(Envelope.new(...)), at half the cost, since the bench runs these
        # services in the engine's process.
        body = orjson.dumps(
            {
                "specversion": "1.0",
                "id": reply_id,
                "source": f"sim/{self.name}",
                "type": kind,
                "time": datetime.now(UTC),
                "datacontenttype": "application/json",
                "correlationid": cid,
                "causationid": command["id"],
                "data": data,
            }
        )
        return message(kind, body, reply_id, cid)


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
            await transport.declare(p.topology)
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
