"""A test harness for sagas: in-memory transport and store, and a virtual clock.

    async with SagaHarness(order) as h:
        await h.send("order.placed", {...}, correlation_id="o-1")
        assert h.commands("inventory.reserve")[0].data["order_id"] == "o-1"
        await h.advance(31)              # timeouts fire, no sleeping
        assert (await h.instance("o-1")).status == Status.COMPENSATED

Everything the harness does goes through the real engine and the real
in-memory transport and store: what passes here passes on a broker.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from types import TracebackType
from typing import Any

from adapters.base import DEADLETTER, HEADER_ORIGIN, HEADER_REASON, OutgoingMessage, Topology
from adapters.memory import MemoryBroker, MemoryTransport
from orchestrator.engine import Engine, EngineConfig
from orchestrator.engine.clock import VirtualClock
from orchestrator.engine.model import Instance
from orchestrator.language.definition import SagaDefinition
from orchestrator.store.base import HistoryRecord
from orchestrator.store.memory import MemoryStore
from schemas.binary import binary_prefix, decode_binary
from schemas.codec import decode, encode
from schemas.envelope import CONTENT_TYPE, Envelope

__all__ = ["DeadLetter", "SagaHarness"]


class DeadLetter:
    """A message the engine refused, with why."""

    def __init__(self, message: OutgoingMessage) -> None:
        self.body = message.body
        self.reason = message.headers.get(HEADER_REASON, "")
        self.origin = message.headers.get(HEADER_ORIGIN, "")

    def __repr__(self) -> str:
        return f"DeadLetter(origin={self.origin!r}, reason={self.reason!r})"


class SagaHarness:
    """Drive sagas deterministically: send events, advance time, inspect results."""

    def __init__(
        self,
        *sagas: SagaDefinition,
        start: float = 1_767_225_600.0,
        max_batch: int = 256,
        config: EngineConfig | None = None,
    ) -> None:
        """``config`` (its ``group`` and ``max_batch`` are the harness's) tries other
        engine settings: ``content_mode="binary"``, limits, back-off."""
        self.broker = MemoryBroker(record=True)
        self.transport = MemoryTransport(self.broker)
        self.store = MemoryStore()
        self.clock = VirtualClock(start)
        base = config or EngineConfig()
        self.engine = Engine(
            list(sagas),
            self.store,
            self.transport,
            clock=self.clock,
            config=dataclasses.replace(base, group="sagawire", max_batch=max_batch),
        )
        self._raw: set[int] = set()
        self._mine: set[str] = set()
        self._default_saga = sagas[0].name if sagas else ""

    async def __aenter__(self) -> SagaHarness:
        await self.store.open()
        await self.transport.start()
        await self.engine.prepare()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.transport.close()
        await self.store.close()

    @property
    def topology(self) -> Topology:
        return self.engine.topology

    # -- input -----------------------------------------------------------------

    def event(
        self,
        type: str,
        data: Any,
        *,
        correlation_id: str | None = None,
        id: str | None = None,
        **extensions: Any,
    ) -> Envelope:
        """Build an event as a participant would send it (not sent yet)."""
        env = Envelope.new(
            type,
            data,
            id=id or str(uuid.uuid4()),
            source="test/participant",
            time=datetime.fromtimestamp(self.clock.now(), UTC),
            correlationid=correlation_id,
        )
        if extensions:
            env = Envelope.model_validate({**env.attributes(), **extensions})
        return env

    async def send(
        self,
        type: str,
        data: Any = None,
        *,
        correlation_id: str | None = None,
        id: str | None = None,
        process: bool = True,
    ) -> Envelope:
        """Publish an event and let the engine handle everything queued."""
        env = self.event(type, data, correlation_id=correlation_id, id=id)
        await self.deliver(env, process=process)
        return env

    async def deliver(self, *envelopes: Envelope, process: bool = True) -> None:
        """Publish already-built envelopes (use it to send duplicates)."""
        msgs = [
            OutgoingMessage(
                e.type, encode(e), e.id, e.correlationid, {"content-type": CONTENT_TYPE}
            )
            for e in envelopes
        ]
        self._mine.update(e.id for e in envelopes)
        await self.transport.publish(msgs)
        if process:
            await self.process()

    async def send_raw(
        self, destination: str, body: bytes, headers: Mapping[str, str] | None = None
    ) -> None:
        """Publish bytes as they are, with ``headers`` if given: malformed input, a
        binary-mode CloudEvent (attributes in ``ce_``/``ce-`` headers), a plain JSON
        event from a service that knows nothing of CloudEvents."""
        message = OutgoingMessage(destination, body, "", None, dict(headers or {}))
        self._raw.add(id(message))
        await self.transport.publish([message])
        await self.process()

    async def process(self) -> int:
        """Handle everything queued for the engine, batch by batch, until idle."""
        handled = 0
        while batch := self.transport.poll(self.topology, max_batch=self.engine.config.max_batch):
            await self.engine.handle(batch)
            handled += len(batch)
        return handled

    async def advance(self, seconds: float) -> None:
        """Move virtual time forward, firing timers (and their consequences) as it goes."""
        target = self.clock.now() + seconds
        while True:
            nxt = await self.store.next_timer_due()
            if nxt is None or nxt > target:
                break
            self.clock.advance(max(0.0, nxt - self.clock.now()))
            await self.engine.fire_due()
            await self.process()
        self.clock.advance(max(0.0, target - self.clock.now()))
        await self.engine.fire_due()
        await self.process()

    # -- output ----------------------------------------------------------------

    def sent(self, type: str | None = None) -> list[Envelope]:
        """Messages the engine published (not the ones the test sent), in order."""
        out = []
        for m in self.broker.published():
            if m.destination == DEADLETTER or m.message_id in self._mine or id(m) in self._raw:
                continue
            if type is None or m.destination == type:
                binary = binary_prefix(m.headers) is not None
                out.append(decode_binary(m.headers, m.body) if binary else decode(m.body))
        return out

    def commands(
        self, type: str | None = None, correlation_id: str | None = None
    ) -> list[Envelope]:
        return [
            e
            for e in self.sent(type)
            if correlation_id is None or e.correlationid == correlation_id
        ]

    def dead_letters(self) -> list[DeadLetter]:
        return [DeadLetter(m) for m in self.broker.published(DEADLETTER)]

    async def instance(self, correlation_id: str, saga: str | None = None) -> Instance:
        found = await self.engine.instance(saga or self._default_saga, correlation_id)
        if found is None:
            raise LookupError(f"no {saga or self._default_saga!r} instance {correlation_id!r}")
        return found

    async def history(
        self, correlation_id: str, saga: str | None = None
    ) -> Sequence[HistoryRecord]:
        return await self.store.history((saga or self._default_saga, correlation_id))

    async def deviations(self, correlation_id: str, saga: str | None = None) -> list[str]:
        """The deviations from its declared flow an instance recorded, in order
        (``<kind>: <type> <id> <what happened>``)."""
        prefix = "deviation "
        return [
            h.note[len(prefix) :]
            for h in await self.history(correlation_id, saga)
            if h.note.startswith(prefix)
        ]
