"""A command re-sent after a timeout is the same command (issue 14, part 3).

It keeps its CloudEvents ``id`` (derived from the saga, the correlation id and the
step) and only its ``attempt`` grows, so a participant that de-duplicates on the id
acts once; each attempt still travels under its own broker message id
(``<id>#<attempt>``), so the outbox and JetStream's de-duplication keep the re-send.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from adapters.base import HEADER_MESSAGE_ID, OutgoingMessage
from adapters.memory import MemoryBroker, MemoryTransport
from orchestrator import Status
from orchestrator.engine import Engine
from orchestrator.engine.clock import VirtualClock
from orchestrator.engine.correlate import Routed
from orchestrator.engine.decide import decide
from orchestrator.engine.persist import outbox_record, outgoing, send_id
from orchestrator.engine.sending import _COMMAND_NAMESPACE, command_id
from orchestrator.language.definition import timer_event
from orchestrator.store import open_store
from orchestrator.testing import SagaHarness
from orchestrator.tooling.participants import Behaviour, Participant
from sagas.order import order
from schemas.codec import decode, encode
from schemas.envelope import Envelope

PLACED = {
    "order_id": "o-1",
    "customer_id": "c-1",
    "items": [{"sku": "A", "qty": 2}],
    "amount_cents": 1250,
}


@pytest.fixture
async def h() -> AsyncIterator[SagaHarness]:
    async with SagaHarness(order) as harness:
        yield harness


def sends(h: SagaHarness, type: str) -> list[OutgoingMessage]:
    return h.broker.published(type)


async def test_a_timed_out_step_is_re_sent_with_its_id_and_the_next_attempt(
    h: SagaHarness,
) -> None:
    await h.send("order.placed", PLACED)
    await h.send("inventory.reserved", {"order_id": "o-1", "reservation_id": "r-1"})
    await h.advance(31)  # the payment step times out; the backoff (1 s) elapses
    first, second = h.commands("payment.charge")
    assert first.id == second.id == command_id("order", "payment", "o-1")
    assert (first.attempt, second.attempt) == (1, 2)
    assert first.data == second.data
    assert first.causationid != second.causationid  # the retry timer sent the second
    # the broker sees two messages: the second is not swallowed as a duplicate
    one, two = sends(h, "payment.charge")
    assert (one.message_id, two.message_id) == (first.id, f"{first.id}#2")
    assert [m.headers[HEADER_MESSAGE_ID] for m in (one, two)] == [one.message_id, two.message_id]
    # the history names each send as the broker knew it
    commands = [c for r in await h.history("o-1") for c in r.commands]
    assert f"payment.charge:{first.id}" in commands
    assert f"payment.charge:{first.id}#2" in commands
    # a reply to either attempt moves the saga on
    await h.send("payment.charged", {"order_id": "o-1", "payment_id": "p-1"})
    assert (await h.instance("o-1")).state == "shipping"


async def test_a_timed_out_compensation_is_re_sent_with_its_id(h: SagaHarness) -> None:
    await h.send("order.placed", PLACED)
    await h.send("inventory.reserved", {"order_id": "o-1", "reservation_id": "r-1"})
    await h.send("payment.declined", {"order_id": "o-1", "reason": "card declined"})
    await h.advance(31)
    first, second = h.commands("inventory.release")
    assert first.id == second.id == command_id("order", "undo:inventory", "o-1")
    assert (first.attempt, second.attempt) == (1, 2)
    assert first.id != command_id("order", "inventory", "o-1")  # not the reserve's id
    assert [m.message_id for m in sends(h, "inventory.release")] == [first.id, f"{first.id}#2"]
    await h.advance(31)  # the second attempt goes unanswered too
    assert (await h.instance("o-1")).status is Status.COMPENSATION_FAILED


async def test_each_instance_and_step_has_its_own_command_id(h: SagaHarness) -> None:
    await h.send("order.placed", PLACED)
    await h.send("order.placed", {**PLACED, "order_id": "o-2"})
    await h.send("inventory.reserved", {"order_id": "o-1", "reservation_id": "r-1"})
    ids = [e.id for e in h.commands("inventory.reserve")] + [h.commands("payment.charge")[0].id]
    assert len(set(ids)) == 3
    # a message sent once keeps the id derived from its cause
    await h.send("inventory.rejected", {"order_id": "o-2", "reason": "out of stock"})
    (cancelled,) = h.commands("order.cancelled")
    assert cancelled.attempt is None and send_id(cancelled) == cancelled.id
    assert cancelled.id not in ids


def test_command_ids_are_uuid5_of_saga_key_and_correlation_id() -> None:
    """Derived, so a crash re-publish or a replay gives the same id; the same value as
    uuid5, so other tools can recompute it; names with ``/`` or ``:`` cannot meet."""
    for saga, key, cid in [
        ("order", "payment", "o-1"),
        ("order", "undo:payment", "o-1"),
        ("a/b", "c", "d"),
        ("a", "b/c", "d"),
        ("a", "b", "c/d"),
        ("ünï", "cödé", "ïd-€"),
    ]:
        name = f"{len(saga)}:{saga}{len(key)}:{key}{cid}"
        assert command_id(saga, key, cid) == str(uuid.uuid5(_COMMAND_NAMESPACE, name))
    assert len({command_id("a/b", "c", "d"), command_id("a", "b/c", "d")}) == 2
    assert len({command_id("a", "b", "c/d"), command_id("a", "b/c", "d")}) == 2
    long = "x" * 100_000
    assert len(command_id("order", "payment", long)) == 36
    assert command_id("order", "payment", long) != command_id("order", "payment", long + "y")


def test_deciding_the_retry_again_gives_the_same_command() -> None:
    """What a crash between commit and ack replays: the same timer decided again."""

    async def instance() -> Any:
        async with SagaHarness(order) as h:
            await h.send("order.placed", PLACED)
            await h.send("inventory.reserved", {"order_id": "o-1", "reservation_id": "r-1"})
            await h.advance(30)  # timed out; the retry timer is due in 1 s
            return await h.instance("o-1"), h.commands("payment.charge")[0]

    inst, first = asyncio.run(instance())
    env = Envelope.new(
        timer_event("payment.retry"),
        None,
        id="timer:order:o-1:payment.retry:1",
        source="sagawire/timer",
        correlationid="o-1",
    )
    routed = Routed(order, None, env, "o-1", None)
    a, b = decide(order, inst, routed, 1000.0), decide(order, inst, routed, 1000.0)
    assert a.messages == b.messages
    (again,) = a.messages
    assert (again.id, again.attempt) == (first.id, 2)
    row = outbox_record(again, "o-1", 1000.0)
    assert row.id == f"{first.id}#2" and decode(row.body).id == first.id


async def test_a_re_send_left_in_the_outbox_by_a_crash_goes_out_with_its_ids(
    tmp_path: Path,
) -> None:
    """The retry committed, the process died before publishing: at start-up the row goes
    out with the command's id in the body and the attempt's id on the broker."""
    db = f"sqlite:///{tmp_path / 's.db'}"
    clock = VirtualClock()

    async def boot(broker: MemoryBroker) -> Engine:
        store = open_store(db)
        await store.open()
        transport = MemoryTransport(broker)
        await transport.start()
        engine = Engine([order], store, transport, clock=clock)
        await engine.prepare()
        return engine

    async def feed(engine: Engine, type: str, data: dict[str, Any]) -> None:
        env = Envelope.new(type, data, id=f"{type}-1", source="test", correlationid="o-1")
        t = engine.transport
        assert isinstance(t, MemoryTransport)
        await t.publish([OutgoingMessage(type, encode(env), env.id, "o-1")])
        await engine.handle(t.poll(engine.topology))

    broker = MemoryBroker(record=True)
    engine = await boot(broker)
    await feed(engine, "order.placed", PLACED)
    await feed(engine, "inventory.reserved", {"order_id": "o-1", "reservation_id": "r"})
    clock.advance(30)
    await engine.fire_due()  # timed out: the retry timer is set

    async def broken_publish(messages: Sequence[OutgoingMessage]) -> None:
        from schemas.errors import TransportError

        raise TransportError("broker went away")

    engine.transport.publish = broken_publish  # type: ignore[method-assign]
    clock.advance(1)
    await engine.fire_due()  # the re-send is committed, not published
    (row,) = await engine.store.pending_outbox()
    await engine.store.close()

    broker = MemoryBroker(record=True)
    broker.bind("payment", ["payment.charge"])
    engine = await boot(broker)
    (sent,) = broker.published("payment.charge")
    body = decode(sent.body)
    assert (body.id, body.attempt) == (command_id("order", "payment", "o-1"), 2)
    assert sent.message_id == row.id == f"{body.id}#2"
    assert await engine.store.pending_outbox() == []
    await engine.store.close()


# -- the participant's side: act once, answer a duplicate with the first reply ----------


PROMPT = Behaviour(refuse=0.0, silent=0.0, undo_silent=0.0, delay=(0.0, 0.0))


async def services(h: SagaHarness, **behaviours: Behaviour) -> list[Participant]:
    """The order saga's simulated services on the harness's broker (``PROMPT`` unless
    named), running."""
    found = []
    for name in ("inventory", "payment", "shipping"):
        transport = MemoryTransport(h.broker)
        await transport.start()
        p = Participant(name, transport, behaviour=behaviours.get(name, PROMPT))
        await transport.declare(p.topology)
        found.append(p)
    return found


async def settle(h: SagaHarness, parts: Sequence[Participant]) -> None:
    """Let the engine and the services go until nothing is queued for either."""
    for _ in range(200):
        await h.process()
        for _ in range(5):
            await asyncio.sleep(0)
        idle = all(h.broker.depth(p.topology.group) == 0 for p in parts)
        if idle and h.broker.depth("sagawire") == 0:
            return
    raise AssertionError("the services and the engine did not settle")


async def test_a_service_whose_reply_was_lost_answers_the_re_send_with_it(
    h: SagaHarness,
) -> None:
    """The double charge of issue 14: payment charged, its reply lost, the step timed out
    and re-sent the charge. The service charges once and sends its first reply again,
    which moves the saga on."""
    parts = await services(h, payment=replace(PROMPT, lost=1.0))
    inventory, payment, _ = parts
    tasks = [asyncio.ensure_future(p.run()) for p in parts]
    try:
        await h.send("order.placed", PLACED)
        await settle(h, parts)
        assert (await h.instance("o-1")).state == "payment"
        assert sends(h, "payment.charged") == []  # charged, but the reply was lost
        await h.advance(31)  # the step times out and re-sends the charge
        await settle(h, parts)
        first, second = h.commands("payment.charge")
        assert first.id == second.id and second.attempt == 2
        assert (payment.handled, payment.repeats) == (2, 1)  # charged once
        (charged,) = sends(h, "payment.charged")
        assert decode(charged.body).causationid == first.id
        assert (await h.instance("o-1")).status is Status.COMPLETED
        assert inventory.repeats == 0 and h.dead_letters() == []
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def test_a_repeated_command_gets_the_first_reply_byte_for_byte(h: SagaHarness) -> None:
    """A command seen again after its reply went out: the same bytes, the same reply id,
    which the engine's inbox drops (no dead letter, no second transition)."""
    parts = await services(h)
    inventory = parts[0]
    tasks = [asyncio.ensure_future(p.run()) for p in parts]
    try:
        await h.send("order.placed", PLACED)
        await settle(h, parts)
        assert (await h.instance("o-1")).status is Status.COMPLETED
        (reserve,) = sends(h, "inventory.reserve")
        before = len(await h.history("o-1"))
        client = MemoryTransport(h.broker)
        await client.start()
        await client.publish([reserve, reserve])  # redelivered twice
        await settle(h, parts)
        one, two, three = sends(h, "inventory.reserved")
        assert one.body == two.body == three.body and one.message_id == three.message_id
        assert inventory.repeats == 2
        assert len(await h.history("o-1")) == before and h.dead_letters() == []
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def test_a_service_tells_commands_apart_by_source_and_id() -> None:
    """Two sagas (sources) may use one id; a service keeps their replies apart, and keeps
    only a bounded number of them."""

    async def go() -> Participant:
        broker = MemoryBroker(record=True)
        transport = MemoryTransport(broker)
        await transport.start()
        p = Participant("payment", transport, behaviour=replace(PROMPT, remember=2))
        await transport.declare(p.topology)
        task = asyncio.ensure_future(p.run())
        messages = []
        for source, n in [("sagawire/a", 1), ("sagawire/b", 1), ("sagawire/a", 1)]:
            env = Envelope.new(
                "payment.charge",
                {"order_id": f"o-{n}"},
                id="same-id",
                source=source,
                correlationid=f"o-{n}",
                attempt=1,
            )
            messages.append(OutgoingMessage(env.type, encode(env), env.id, f"o-{n}"))
        await transport.publish(messages)
        for _ in range(10):
            await asyncio.sleep(0)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        assert len(broker.published("payment.charged")) == 3
        return p

    p = asyncio.run(go())
    assert (p.handled, p.repeats) == (3, 1)
    for i in range(5):
        p._keep(("s", str(i)), b"{}")
    assert len(p._recent) + len(p._older) <= 2 * p.behaviour.remember
    assert ("s", "4") in p._recent and ("s", "0") not in {**p._recent, **p._older}


# -- on a broker that de-duplicates: JetStream keeps each attempt ---------------------


async def test_jetstream_keeps_a_re_send_and_drops_a_re_publish() -> None:
    """``Nats-Msg-Id`` is the attempt's id: the re-send (attempt 2) is stored, a second
    publish of one attempt (the outbox relay retrying) is dropped."""
    import nats
    import nats.js.errors

    from adapters.base import Topology
    from adapters.nats import NatsTransport
    from tests.support.services import require, unique

    require("nats", "127.0.0.1", 4222)
    stream, dest = unique("SW_"), unique("resend.")
    transport = NatsTransport.from_url(
        f"nats://127.0.0.1:4222?stream={stream}&deadletter=sagawire.deadletter.{stream}"
    )
    cid = "o-1"
    first = Envelope.new(
        dest, {"n": 1}, id=command_id("order", "payment", cid), source="s", attempt=1
    )
    second = Envelope.new(dest, {"n": 1}, id=first.id, source="s", attempt=2)
    rows = [outbox_record(e, cid, 0.0) for e in (first, first, second)]
    try:
        await transport.start()
        await transport.declare(Topology(consumes=(dest,), group=unique("g")))
        for row in rows:
            await transport.publish([outgoing(row)])
        nc = await nats.connect("nats://127.0.0.1:4222")
        try:
            info = await nc.jetstream().stream_info(stream)
        finally:
            await nc.close()
        assert info.state.messages == 2
        assert [r.id for r in rows] == [first.id, first.id, f"{first.id}#2"]
    finally:
        await transport.close()
        nc = await nats.connect("nats://127.0.0.1:4222")
        with contextlib.suppress(nats.js.errors.NotFoundError):
            await nc.jetstream().delete_stream(stream)
        await nc.close()
