"""A service's behaviour in detail, on the in-memory broker: copies, failures, bad input,
durable memories, trace context."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
from opentelemetry import trace
from pydantic import BaseModel

from adapters.base import DEADLETTER, HEADER_REASON, Delivery, OutgoingMessage, Topology
from adapters.memory import MemoryBroker, MemoryTransport
from orchestrator.client import IGNORE, Emit, Outcome, Publisher, RecentReplies, Service
from orchestrator.client.durable import DurableReplies, open_replies
from orchestrator.client.replies import Key, Sent
from schemas.codec import decode
from schemas.envelope import Envelope
from schemas.errors import ConfigError, SagawireError, StoreError


class Charge(BaseModel):
    order_id: str
    amount_cents: int


CHARGE = {"order_id": "o-1", "amount_cents": 5}


@pytest.fixture
async def broker() -> MemoryBroker:
    return MemoryBroker(record=True)


async def transport(broker: MemoryBroker) -> MemoryTransport:
    t = MemoryTransport(broker)
    await t.start()
    return t


@contextlib.asynccontextmanager
async def running(service: Service) -> AsyncIterator[None]:
    await service.start()
    task = asyncio.ensure_future(service.run())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await service.close()


async def settle(broker: MemoryBroker, *groups: str) -> None:
    """Until nothing waits or is unacked in ``groups``."""
    for _ in range(500):
        await asyncio.sleep(0.002)
        if all(broker.depth(g) == 0 for g in groups):
            return
    raise AssertionError(f"not settled: {[broker.depth(g) for g in groups]}")


async def until(condition: Callable[[], bool]) -> None:
    for _ in range(500):
        await asyncio.sleep(0.002)
        if condition():
            return
    raise AssertionError("condition not met in time")


async def send(
    broker: MemoryBroker, type: str = "payment.charge", data: Any = CHARGE, **kw: Any
) -> Envelope:
    publisher = Publisher(await transport(broker), source="sagawire/order")
    kw.setdefault("correlationid", "o-1")
    return await publisher.publish(type, data, **kw)


def replies(broker: MemoryBroker, type: str = "payment.charged") -> list[Envelope]:
    return [decode(m.body) for m in broker.published(type)]


async def test_a_copy_of_a_message_still_being_handled_waits_for_its_replies(
    broker: MemoryBroker,
) -> None:
    service = Service("payment", await transport(broker))
    release = asyncio.Event()
    calls = 0

    @service.on("payment.charge", Charge)
    async def charge(cmd: Charge, env: Envelope) -> Emit:
        nonlocal calls
        calls += 1
        await release.wait()
        return Emit("payment.charged", {"order_id": cmd.order_id})

    async with running(service):
        await send(broker, id="c-1")
        await send(broker, id="c-1")
        await asyncio.sleep(0.02)
        assert replies(broker) == [] and broker.depth("payment") == 2  # both held
        release.set()
        await settle(broker, "payment")
    one, two = broker.published("payment.charged")
    assert calls == 1 and one.body == two.body
    assert (service.stats.handled, service.stats.duplicates) == (1, 1)


async def test_an_ignored_message_is_not_remembered(broker: MemoryBroker) -> None:
    service = Service("payment", await transport(broker))
    seen: list[int | None] = []

    @service.on("payment.charge")
    def charge(data: Any, env: Envelope) -> Outcome:
        seen.append(env.attempt)
        return IGNORE if len(seen) == 1 else Emit("payment.charged", data)

    async with running(service):
        await send(broker, id="c-1")
        await settle(broker, "payment")
        await send(broker, id="c-1")  # the saga re-sends: new to the service
        await settle(broker, "payment")
    assert len(seen) == 2 and len(replies(broker)) == 1
    assert (service.stats.ignored, service.stats.duplicates) == (1, 0)


async def test_a_failing_handler_gets_the_message_again(broker: MemoryBroker) -> None:
    service = Service("payment", await transport(broker), retry_delay=0.01)
    tries = 0

    @service.on("payment.charge", Charge)
    def charge(cmd: Charge, env: Envelope) -> Emit:
        nonlocal tries
        tries += 1
        if tries < 3:
            raise RuntimeError("database busy")
        return Emit("payment.charged", {"order_id": cmd.order_id})

    async with running(service):
        await send(broker)
        await until(lambda: len(replies(broker)) == 1)
    assert tries == 3 and service.stats.failed == 2


async def test_on_its_last_delivery_a_failing_message_is_dead_lettered(
    broker: MemoryBroker,
) -> None:
    t = await transport(broker)
    service = Service("payment", t)

    @service.on("payment.charge")
    def charge(data: Any, env: Envelope) -> Emit:
        raise RuntimeError("no card")

    env = await send(broker)
    last = Delivery(
        "payment.charge", broker.published("payment.charge")[0].body, {}, final_attempt=True
    )
    await service._handle([last])
    (dead,) = broker.published(DEADLETTER)
    assert "handler failed: RuntimeError: no card" in dead.headers[HEADER_REASON]
    assert decode(dead.body).id == env.id


async def test_bad_input_is_dead_lettered_saying_why(broker: MemoryBroker) -> None:
    service = Service("payment", await transport(broker))

    @service.on("payment.charge", Charge)
    def charge(cmd: Charge, env: Envelope) -> Emit:
        return Emit("payment.charged", {"order_id": cmd.order_id})

    @service.on("payment.refund")
    def refund(data: Any, env: Envelope) -> Sequence[Emit]:
        return [Emit("payment.refunded", data), Emit("ledger.credited", data)]

    @service.on("payment.void")
    def void(data: Any, env: Envelope) -> Any:
        return "not an Emit"

    async with running(service):
        raw = await transport(broker)
        await raw.publish([OutgoingMessage("payment.charge", b"not json", "x")])
        await send(broker, data={"order_id": "o-1"})  # amount_cents missing
        await send(broker, "payment.refund", {"order_id": "o-1"}, id="r-1")
        await send(broker, "payment.void", {"order_id": "o-1"})
        await settle(broker, "payment")
    reasons = [m.headers[HEADER_REASON] for m in broker.published(DEADLETTER)]
    assert "payment: body is not JSON" in reasons[0]
    assert "amount_cents" in reasons[1] and "payment.charge" in reasons[1]
    assert service.stats.dead_lettered == 2
    refunded, credited = replies(broker, "payment.refunded") + replies(broker, "ledger.credited")
    assert refunded.causationid == credited.causationid == "r-1" and refunded.id != credited.id
    assert service.stats.failed >= 1  # "not an Emit": logged and given back


async def test_a_message_of_no_handled_type_is_dead_lettered(broker: MemoryBroker) -> None:
    t = await transport(broker)
    service = Service("payment", t)
    service.add("payment.charge", lambda data, env: None)
    await service.start()
    env = await send(broker, "payment.other")
    await service._handle(
        [Delivery("payment.charge", broker.published("payment.other")[0].body, {})]
    )
    (dead,) = broker.published(DEADLETTER)
    assert "no handler for 'payment.other'" in dead.headers[HEADER_REASON] and env.id


async def test_a_reply_the_broker_refuses_dead_letters_its_cause(broker: MemoryBroker) -> None:
    service = Service("payment", await transport(broker))
    service.add("payment.charge", lambda data, env: Emit("payment.charged", {"pad": "x" * 5000}))
    async with running(service):
        await send(broker)
        broker.max_message_size = 3000
        await settle(broker, "payment")
    (dead,) = broker.published(DEADLETTER)
    assert "a reply was refused" in dead.headers[HEADER_REASON]
    assert decode(dead.body).type == "payment.charge"


async def test_binary_mode_in_and_out(broker: MemoryBroker) -> None:
    service = Service("payment", await transport(broker), mode="binary")
    service.add("payment.charge", lambda data, env: Emit("payment.charged", {"n": env.attempt}))
    async with running(service):
        publisher = Publisher(await transport(broker), source="shop", mode="binary")
        sent = await publisher.publish("payment.charge", CHARGE, correlationid="o-1")
        await settle(broker, "payment")
    (reply,) = broker.published("payment.charged")
    assert reply.headers["ce-causationid"] == sent.id and reply.body == b'{"n":null}'
    assert reply.headers["ce-correlationid"] == "o-1" and reply.key == "o-1"


async def test_the_handler_runs_in_the_trace_of_its_message(broker: MemoryBroker) -> None:
    tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    service = Service("payment", await transport(broker))
    seen: list[int] = []

    @service.on("payment.charge")
    def charge(data: Any, env: Envelope) -> Emit:
        seen.append(trace.get_current_span().get_span_context().trace_id)
        return Emit("payment.charged")

    async with running(service):
        await send(broker, extensions={"traceparent": tp})
        await settle(broker, "payment")
    assert seen == [0x0AF7651916CD43DD8448EB211C80319C]
    assert (replies(broker)[0].model_extra or {})["traceparent"] == tp


def test_a_handler_table_is_checked_as_it_is_built(broker: MemoryBroker) -> None:
    service = Service("payment", MemoryTransport(broker))
    service.add("a", lambda data, env: None)
    with pytest.raises(ConfigError, match="two handlers for 'a'"):
        service.add("a", lambda data, env: None)
    with pytest.raises(ConfigError, match="pydantic"):
        service.add("b", lambda data, env: None, dict)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="list of types"):
        service.add("c", lambda data, env: None, emits="c.done")
    with pytest.raises(ConfigError, match="reply store URL"):
        Service("s", MemoryTransport(broker), replies="redis://x")
    with pytest.raises(ConfigError, match="remembers nothing"):
        RecentReplies(0)


async def test_a_service_without_handlers_refuses_to_run(broker: MemoryBroker) -> None:
    with pytest.raises(SagawireError, match="no handlers"):
        await Service("idle", await transport(broker)).run()


# -- remembering: bounded in memory, durable in a database ----------------------------


async def test_memory_keeps_the_last_limit_to_twice_that() -> None:
    memory = RecentReplies(2)
    for i in range(5):
        await memory.remember([(("s", str(i)), ())], 0.0)
    assert 2 <= len(memory) <= 4
    found = await memory.recall([("s", str(i)) for i in range(5)])
    assert ("s", "4") in found and ("s", "0") not in found
    memory.put(("s", "4"), (OutgoingMessage("x", b"", "y"),))  # the first record stays
    assert memory.get(("s", "4")) == ()


async def test_a_durable_memory_survives_the_service(broker: MemoryBroker, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'replies.db'}"
    calls = 0

    def build() -> Service:
        service = Service("payment", MemoryTransport(broker), replies=url)

        @service.on("payment.charge")
        def charge(data: Any, env: Envelope) -> Emit:
            nonlocal calls
            calls += 1
            return Emit("payment.charged", data)

        return service

    for _ in range(2):
        service = build()
        await service.transport.start()
        async with running(service):
            await send(broker, id="c-1")
            await settle(broker, "payment")
    one, two = broker.published("payment.charged")
    assert calls == 1 and one.body == two.body and one.headers == two.headers


async def check_durable(memory: DurableReplies) -> None:
    await memory.open()
    try:
        reply = OutgoingMessage("t", b"\x00\xffbinary", "m-1", None, {"ce-id": "m-1"})
        keys: list[Key] = [("src", f"id-{i}") for i in range(450)]  # over one statement's worth
        await memory.remember([(k, (reply,)) for k in keys] + [(("src", "quiet"), ())], 10.0)
        await memory.remember([(keys[0], ())], 20.0)  # a known key keeps its first record
        found = await memory.recall([*keys, ("src", "quiet"), ("src", "nope")])
        assert len(found) == 451 and found[("src", "quiet")] == ()
        assert found[keys[0]] == (reply,)
        assert await memory.prune(15.0) == 451 and await memory.recall(keys) == {}
    finally:
        await memory.close()


async def test_the_sqlite_memory_round_trips_and_prunes(tmp_path: Path) -> None:
    memory = open_replies(f"sqlite:///{tmp_path / 'r.db'}", "payment")
    assert isinstance(memory, DurableReplies)
    await check_durable(memory)
    other = open_replies(f"sqlite:///{tmp_path / 'r.db'}", "shipping")  # another consumer
    await other.open()
    assert await other.recall([("src", "id-1")]) == {}
    await other.close()


@pytest.mark.postgres
async def test_the_postgres_memory_round_trips_and_prunes(database_url: str) -> None:
    memory = open_replies(database_url, "payment")
    assert isinstance(memory, DurableReplies)
    await check_durable(memory)


async def test_a_memory_that_fails_for_a_while_is_waited_out(broker: MemoryBroker) -> None:
    class Flaky(RecentReplies):
        failures = 2

        async def remember(self, handled: Sequence[tuple[Key, Sent]], now: float) -> None:
            if self.failures:
                self.failures -= 1
                raise StoreError("database restarting")
            await super().remember(handled, now)

    memory = Flaky()
    service = Service("payment", await transport(broker), replies=memory)
    service._recent = None  # take the durable path: recall and remember per batch
    service.add("payment.charge", lambda data, env: Emit("payment.charged"))
    async with running(service):
        await send(broker)
        await settle(broker, "payment")
    assert memory.failures == 0 and len(replies(broker)) == 1 and len(memory) == 1


async def test_topology_declares_what_handlers_emit(broker: MemoryBroker) -> None:
    service = Service("payment", MemoryTransport(broker), group="pay")
    service.add("a", lambda d, e: None, emits=["a.done", "a.failed"])
    service.add("b", lambda d, e: None, emits=["a.done"])
    assert service.topology == Topology(("a", "b"), ("a.done", "a.failed"), "pay")
