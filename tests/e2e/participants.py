"""Inventory, payment and shipping as raw participants, and the ledger of what they saw.

The participants answer each command with the event its fate dictates and
misbehave on purpose: some replies twice, some repeated after the saga ended (see
:mod:`tests.e2e.scenario`). The :class:`Ledger` keeps every received message by
order, for :mod:`tests.e2e.checks`.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import orjson

from tests.e2e.clients import DEADLETTER, RawClient, Seen
from tests.e2e.scenario import (
    ID_PREFIX,
    OUTCOMES,
    REPLIES,
    cloudevent,
    fate,
    repeats_after_end,
    replies_twice,
)


@dataclass
class Received:
    type: str
    id: str
    correlation: str | None
    causation: str | None
    data: Any
    at: float
    source: str = ""
    attempt: int | None = None  # of a command: 1, 2... (a re-send keeps the id)


@dataclass
class Ledger:
    """Everything the participants received and sent, by order."""

    commands: dict[str, list[Received]] = field(default_factory=lambda: defaultdict(list))
    outcomes: dict[str, list[Received]] = field(default_factory=lambda: defaultdict(list))
    replies: dict[str, list[tuple[str, str, bytes]]] = field(
        default_factory=lambda: defaultdict(list)
    )  # order -> [(reply type, reply id, bytes)]
    dead: list[Seen] = field(default_factory=list)
    strays: list[Seen] = field(default_factory=list)  # unparseable or without an order
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def finished(self) -> int:
        return len(self.outcomes)

    def distinct_commands(self) -> int:
        return sum(len({c.id for c in cs}) for cs in self.commands.values())

    def describe(self, oid: str) -> str:
        cmds = [(c.type, c.id[:8], c.attempt) for c in self.commands.get(oid, [])]
        sent = [(t, i[:8]) for t, i, _ in self.replies.get(oid, [])]
        outs = [(o.type, o.data) for o in self.outcomes.get(oid, [])]
        return f"{oid}: commands {cmds}; replies {sent}; outcomes {outs}"


class Participants:
    """Inventory, payment and shipping in one loop over a raw client's messages.

    They keep the participant's side of the contract: a command is carried out when
    its ``(source, id)`` is first seen; a repeat (redelivered, re-published after a
    crash, or re-sent by the saga with a higher ``attempt``) is answered with the first
    reply again, the same bytes, and not carried out again."""

    def __init__(self, client: RawClient) -> None:
        self.client = client
        self.ledger = Ledger()
        self._answered: dict[tuple[str, str], list[tuple[str, str, bytes]]] = {}
        self._task: asyncio.Task[None] | None = None
        self.error: BaseException | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        try:
            while True:
                seen = await self.client.incoming.get()
                await self._handle(seen)
                self.ledger.changed.set()
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # surfaced by the driver's waits
            self.error = exc
            self.ledger.changed.set()
            raise

    async def _handle(self, seen: Seen) -> None:
        led = self.ledger
        if seen.destination == DEADLETTER:
            led.dead.append(seen)
            return
        try:
            raw = orjson.loads(seen.body)
            r = Received(
                raw["type"],
                raw["id"],
                raw.get("correlationid"),
                raw.get("causationid"),
                raw["data"],
                seen.at,
                raw["source"],
                raw.get("attempt"),
            )
            oid = r.data["order_id"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            led.strays.append(seen)
            return
        if r.type != seen.destination:
            led.strays.append(seen)
            return
        if r.type in OUTCOMES:
            led.outcomes[oid].append(r)
            n = int(oid.removeprefix("ord-"))
            if repeats_after_end(n) and len(led.outcomes[oid]) == 1 and led.replies[oid]:
                type_, _, body = led.replies[oid][0]
                await self.client.publish(type_, body, key=oid)
            return
        led.commands[oid].append(r)
        replies = self._answered.get((r.source, r.id))
        if replies is None:
            replies = self._answered[r.source, r.id] = self._answer(r, oid)
            led.replies[oid].extend(replies)
        for type_, _, body in replies:
            await self.client.publish(type_, body, key=oid)

    def _answer(self, cmd: Received, oid: str) -> list[tuple[str, str, bytes]]:
        n = int(oid.removeprefix("ord-"))
        ok, id_field, refused = REPLIES[cmd.type]
        if fate(n).refuse == cmd.type:
            assert refused is not None
            type_, data = refused, {"order_id": oid, "reason": fate(n).reason}
        else:
            type_, data = ok, {"order_id": oid}
            if id_field is not None:
                data[id_field] = f"{ID_PREFIX[id_field]}-{oid}"
        reply_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"reply/{cmd.id}"))
        body = cloudevent(type_, data, id_=reply_id, correlation=cmd.correlation, causation=cmd.id)
        copies = 2 if replies_twice(n) else 1
        return [(type_, reply_id, body)] * copies
