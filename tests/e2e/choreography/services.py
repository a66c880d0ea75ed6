"""Inventory, payment and shipping reacting to each other's events, and the audit.

Each service consumes its inputs (:data:`~tests.e2e.choreography.fates.INPUTS`) with
a consumer of its own (:meth:`~tests.e2e.clients.ServiceClient.subscribe`: its own
Kafka group, NATS durable consumers, RabbitMQ queue), never through sagawire:
inventory reserves on ``order.placed``, payment charges on ``inventory.reserved``,
shipping schedules on ``payment.charged``, each as its order's fate says and taking
:data:`~tests.e2e.choreography.fates.WORK` seconds to do it (so that checkouts are
under way when the tracker is killed), and inventory and payment carry out
sagawire's compensation commands at once. They keep the
participant's contract: a command is carried out when its ``(source, id)`` is first
seen and a repeat is answered with the first reply again (same bytes); an event is
acted on once per order (a duplicate, or a second reservation, changes nothing).

The audit reads every destination of the run through the client's own watcher and
keeps every message, by order, in the :class:`Book`, with what each service received
and published: what the checks compare.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections import Counter, defaultdict
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

import orjson

from tests.e2e.choreography.fates import (
    FAILURE,
    INPUTS,
    LATE_REASON,
    REORDER_DELAY,
    SLOW_PAYMENT,
    SUCCESS,
    UNDONE,
    WORK,
    cloudevent,
    event_id,
    fate,
    number,
)
from tests.e2e.clients import DEADLETTER, Seen, ServiceClient


@dataclass(frozen=True)
class Event:
    """One CloudEvent as read off a destination."""

    destination: str
    type: str
    id: str
    source: str
    correlation: str | None
    causation: str | None
    attempt: int | None
    data: Any
    at: float

    @property
    def order(self) -> str:
        return str(self.data["order_id"])


def parse(seen: Seen) -> Event | None:
    """The event in ``seen``, or None if it is not one with an ``order_id``."""
    try:
        raw = orjson.loads(seen.body)
        ev = Event(
            seen.destination,
            raw["type"],
            raw["id"],
            raw["source"],
            raw.get("correlationid"),
            raw.get("causationid"),
            raw.get("attempt"),
            raw["data"],
            seen.at,
        )
        _ = ev.order
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return None
    return ev


@dataclass
class Book:
    """Everything published on the run's destinations and what the services did."""

    feed: dict[str, list[Event]] = field(default_factory=lambda: defaultdict(list))
    """Every message on every destination, by order (the audit's view)."""
    sent: dict[str, list[tuple[float, str, str]]] = field(default_factory=lambda: defaultdict(list))
    """What the services published, by order: (monotonic time, type, id)."""
    received: dict[str, list[Event]] = field(default_factory=lambda: defaultdict(list))
    """Every delivery each service's own consumer got, by service."""
    acted: Counter[tuple[str, str]] = field(default_factory=Counter)
    """Compensations carried out, by (order, command type)."""
    dead: list[Seen] = field(default_factory=list)
    strays: list[Seen] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def outcomes(self, oid: str) -> list[Event]:
        return [e for e in self.feed.get(oid, []) if e.type.startswith("checkout.")]

    def finished(self) -> int:
        return sum(1 for oid in self.feed if self.outcomes(oid))

    def describe(self, oid: str) -> str:
        seen = [(e.type, e.source.rpartition("/")[2], e.id[:8]) for e in self.feed.get(oid, [])]
        return f"{oid}: {seen}"


class Services:
    """The three services and the audit, on one client; :meth:`start` after the
    sidecar declared the run's destinations."""

    def __init__(self, client: ServiceClient) -> None:
        self.client = client
        self.book = Book()
        self.errors: list[BaseException] = []
        self._answered: dict[tuple[str, str], list[tuple[str, bytes]]] = {}
        self._reacted: set[tuple[str, str, str]] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._audit: asyncio.Task[None] | None = None

    async def start(self, watch: tuple[str, ...]) -> None:
        await self.client.start(watch)
        self._audit = asyncio.create_task(self._read_feed())
        for service, inputs in INPUTS.items():
            await self.client.subscribe(service, inputs, functools.partial(self._handle, service))

    async def stop(self) -> None:
        tasks = [*self._tasks, *([self._audit] if self._audit else [])]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    @property
    def failure(self) -> BaseException | None:
        return next(iter([*self.errors, *self.client.failures]), None)

    # -- the audit ----------------------------------------------------------------

    async def _read_feed(self) -> None:
        book = self.book
        while True:
            seen = await self.client.incoming.get()
            if seen.destination == DEADLETTER:
                book.dead.append(seen)
            elif (ev := parse(seen)) is None or ev.type != seen.destination:
                book.strays.append(seen)
            else:
                book.feed[ev.order].append(ev)
                first = ev.type == "checkout.completed" and len(book.outcomes(ev.order)) == 1
                if first and fate(number(ev.order)).late:
                    self._spawn(self._fail_after_the_end(ev))
            book.changed.set()

    async def _fail_after_the_end(self, completed: Event) -> None:
        oid = completed.order
        data = {"order_id": oid, "reason": LATE_REASON}
        body = cloudevent(
            "shipping.failed",
            data,
            id_=event_id("late", oid),
            source="e2e/shipping",
            causation=completed.id,
        )
        await self._publish(oid, "shipping.failed", body)

    # -- the services -------------------------------------------------------------

    async def _handle(self, service: str, seen: Seen) -> None:
        ev = parse(seen)
        if ev is None:
            self.book.strays.append(seen)
            return
        self.book.received[service].append(ev)
        if ev.type in UNDONE:
            await self._undo(ev)
        elif (service, ev.order, ev.type) not in self._reacted:
            self._reacted.add((service, ev.order, ev.type))
            await self._react(service, ev)
        self.book.changed.set()

    async def _undo(self, cmd: Event) -> None:
        """Carry out a compensation once; answer a repeat with the first reply."""
        replies = self._answered.get((cmd.source, cmd.id))
        if replies is None:
            oid = cmd.order
            self.book.acted[oid, cmd.type] += 1
            type_ = UNDONE[cmd.type]
            body = cloudevent(
                type_,
                {"order_id": oid},
                id_=event_id("reply", cmd.id),
                source=f"e2e/{type_.partition('.')[0]}",
                correlation=cmd.correlation,
                causation=cmd.id,
            )
            copies = 2 if fate(number(oid)).twice else 1
            replies = self._answered[cmd.source, cmd.id] = [(type_, body)] * copies
        for type_, body in replies:
            await self._publish(cmd.order, type_, body)

    async def _react(self, service: str, cause: Event) -> None:
        oid = cause.order
        f = fate(number(oid))
        if f.silent == service:
            return
        if f.fails == service:
            type_, reason = FAILURE[service]
            out = [(type_, {"order_id": oid, "reason": reason})]
        else:
            type_, field_, prefix = SUCCESS[service]
            out = [(type_, {"order_id": oid, field_: f"{prefix}-{oid}"})]
            if f.second_reply and service == "inventory":
                out.append((type_, {"order_id": oid, field_: f"{prefix}2-{oid}"}))
        source = f"e2e/{service}"
        bodies = [
            (t, cloudevent(t, d, id_=event_id(oid, t, str(k)), source=source, causation=cause.id))
            for k, (t, d) in enumerate(out)
        ]
        delay = WORK
        if f.reordered and service == "inventory":
            # Payment hears of the reservation first, as if the broker had delivered it
            # there long before it reached sagawire; sagawire sees it last.
            [(type_, body)] = bodies
            reserved = parse(Seen(type_, body, {}, time.monotonic()))
            assert reserved is not None
            self._reacted.add(("payment", oid, type_))
            await self._react("payment", reserved)
            delay = REORDER_DELAY
        elif f.second_reply and service == "payment":
            delay = SLOW_PAYMENT  # both reservations reach sagawire while it waits
        copies = 2 if f.twice else 1
        self._spawn(self._publish_later(oid, [b for b in bodies for _ in range(copies)], delay))

    async def _publish_later(self, oid: str, bodies: list[tuple[str, bytes]], delay: float) -> None:
        await asyncio.sleep(delay)
        for type_, body in bodies:
            await self._publish(oid, type_, body)

    async def _publish(self, oid: str, type_: str, body: bytes) -> None:
        self.book.sent[oid].append((time.monotonic(), type_, orjson.loads(body)["id"]))
        await self.client.publish(type_, body, key=oid)

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self.errors.append(task.exception())  # type: ignore[arg-type]
            self.book.changed.set()
