"""Inventory, payment and shipping that always succeed and act once per command id.

What the issue asks of a participant: de-duplicate on the command's CloudEvents
``id`` and answer a duplicate by re-sending the *first* reply (same bytes, same id).
:class:`Services` does exactly that and counts its *effects* (first sightings of a
command id) per order and command type, so "one effect" is a number a test can
assert. It also records every command and outcome with the time it was seen, for
latency and recovery figures, and the dead letters.

Replies can be slow (``delay``: a service taking its time, so that sagas are in
flight when a test strikes), and a reply can be lost on purpose: ``lose(command)`` picks the commands whose first
reply goes through a :class:`~tests.faults.lossy.LossyPublisher` (dropped by its
proxy) instead of the participant's own client.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson

from tests.e2e.clients import DEADLETTER, RawClient, Seen
from tests.e2e.scenario import cloudevent

OUTCOMES = ("order.completed", "order.cancelled")
REPLIES: dict[str, tuple[str, str | None]] = {
    "inventory.reserve": ("inventory.reserved", "reservation_id"),
    "payment.charge": ("payment.charged", "payment_id"),
    "shipping.schedule": ("shipping.scheduled", "tracking_id"),
    "inventory.release": ("inventory.released", None),
    "payment.refund": ("payment.refunded", None),
}
COMMANDS = tuple(REPLIES)
FORWARD = ("inventory.reserve", "payment.charge", "shipping.schedule")
"""The commands of an order that completes, in the order the saga sends them."""
WATCHED = (*COMMANDS, *OUTCOMES, DEADLETTER)
ID_PREFIX = {"reservation_id": "res", "payment_id": "pay", "tracking_id": "trk"}


@dataclass(frozen=True)
class Message:
    """A command or outcome a participant received."""

    type: str
    id: str
    attempt: int | None
    correlation: str | None
    data: Any
    at: float


class ReplyLoser(Protocol):
    async def lose(self, destination: str, body: bytes, key: str) -> None: ...


@dataclass
class Record:
    """Everything the participants saw and did, by order id."""

    messages: dict[str, list[Message]] = field(default_factory=lambda: defaultdict(list))
    outcomes: dict[str, list[Message]] = field(default_factory=lambda: defaultdict(list))
    effects: Counter[tuple[str, str]] = field(default_factory=Counter)
    lost: list[tuple[str, str]] = field(default_factory=list)  # (order, command id)
    dead: list[Seen] = field(default_factory=list)
    strays: list[Seen] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def finished(self, oid: str) -> bool:
        return oid in self.outcomes

    def outcome_at(self, oid: str) -> float | None:
        found = self.outcomes.get(oid)
        return found[0].at if found else None

    def first_new_after(self, oid: str, since: float, before: float) -> float | None:
        """When ``oid`` was first seen sending a message id (a command, or its outcome)
        that had not been seen before ``before``, if it did so after ``since``."""
        known = {m.id for m in self.messages.get(oid, ()) if m.at < before}
        for m in self.messages.get(oid, ()):
            if m.at >= since and m.id not in known:
                return m.at
        return None

    def first_progress(self, since: float, before: float) -> float | None:
        """When any order was first seen sending a message id unseen before ``before``,
        if it did so after ``since``."""
        found = [
            t
            for oid in self.messages
            if (t := self.first_new_after(oid, since, before)) is not None
        ]
        return min(found, default=None)

    def describe(self, oid: str) -> str:
        seen = [
            f"{m.type}#{m.id[:8]}" + (f"@{m.attempt}" if m.attempt else "")
            for m in self.messages.get(oid, [])
        ]
        effects = {t: n for (o, t), n in self.effects.items() if o == oid}
        return f"{oid}: seen {seen}; effects {effects}"


class Services:
    """The three services in one loop over a raw client's messages."""

    def __init__(
        self,
        client: RawClient,
        *,
        lose: Callable[[Message, str], bool] | None = None,
        loser: ReplyLoser | None = None,
        delay: float = 0.0,
    ) -> None:
        self.client = client
        self.delay = delay
        self.record = Record()
        self._lose = lose
        self._loser = loser
        self._first_reply: dict[str, tuple[str, bytes]] = {}
        self._task: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[None]] = set()
        self.error: BaseException | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        for t in [self._task, *self._background]:
            if t is not None:
                t.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await t

    async def _run(self) -> None:
        try:
            while True:
                seen = await self.client.incoming.get()
                await self._handle(seen)
                self.record.changed.set()
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # surfaced by the tests' waits
            self.error = exc
            self.record.changed.set()
            raise

    async def _handle(self, seen: Seen) -> None:
        rec = self.record
        if seen.destination == DEADLETTER:
            rec.dead.append(seen)
            return
        try:
            raw = orjson.loads(seen.body)
            msg = Message(
                raw["type"],
                raw["id"],
                raw.get("attempt"),
                raw.get("correlationid"),
                raw["data"],
                seen.at,
            )
            oid = msg.data["order_id"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            rec.strays.append(seen)
            return
        rec.messages[oid].append(msg)
        if msg.type in OUTCOMES:
            rec.outcomes[oid].append(msg)
            return
        if msg.type not in REPLIES:
            rec.strays.append(seen)
            return
        first = self._first_reply.get(msg.id)
        if first is not None:  # a duplicate: the first reply again, no second effect
            await self.client.publish(first[0], first[1], key=oid)
            return
        rec.effects[oid, msg.type] += 1
        reply = self._first_reply[msg.id] = self._reply(msg, oid)
        if self._lose is not None and self._loser is not None and self._lose(msg, oid):
            rec.lost.append((oid, msg.id))
            self._later(self._loser.lose(reply[0], reply[1], oid))
        elif self.delay:
            self._later(self._publish_after(self.delay, reply, oid))
        else:
            await self.client.publish(reply[0], reply[1], key=oid)

    def _later(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        task.add_done_callback(self._failed)

    def _failed(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None and self.error is None:
            self.error = task.exception()
            self.record.changed.set()

    async def _publish_after(self, delay: float, reply: tuple[str, bytes], oid: str) -> None:
        await asyncio.sleep(delay)
        await self.client.publish(reply[0], reply[1], key=oid)

    @staticmethod
    def _reply(cmd: Message, oid: str) -> tuple[str, bytes]:
        type_, id_field = REPLIES[cmd.type]
        data = {"order_id": oid}
        if id_field is not None:
            data[id_field] = f"{ID_PREFIX[id_field]}-{oid}"
        reply_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"reply/{cmd.id}"))
        body = cloudevent(type_, data, id_=reply_id, correlation=cmd.correlation, causation=cmd.id)
        return type_, body
