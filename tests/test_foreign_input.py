"""Services that publish no structured CloudEvents: binary-mode CloudEvents and plain JSON
drive a saga through the real engine (the harness, in-memory transport and store), bad
ones are dead letters with reasons, and ``content_mode="binary"`` sends commands and
outcome events as data plus headers, from the engine and from the sidecar.

The same over the real brokers: ``tests/transport/test_binary_brokers.py``.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from pydantic import BaseModel

from adapters.base import OutgoingMessage, in_binding
from adapters.memory import MemoryBroker, MemoryTransport
from orchestrator import Event, Send, Status, Step, StepSaga
from orchestrator.engine import Engine, EngineConfig
from orchestrator.engine.clock import VirtualClock
from orchestrator.engine.model import Message
from orchestrator.engine.persist import outbox_record, outgoing
from orchestrator.language.parts import Plain
from orchestrator.sidecar.service import Sidecar
from orchestrator.sidecar.settings import Settings
from orchestrator.store import open_store
from orchestrator.store.base import UnitOfWork
from orchestrator.store.memory import MemoryStore
from orchestrator.testing import SagaHarness
from schemas.binary import KAFKA, decode_binary
from schemas.errors import ConfigError
from schemas.plain import plain_id

ROOT = Path(__file__).resolve().parents[1]


class Placed(BaseModel):
    order_id: str
    amount: int


class Charge(BaseModel):
    order_id: str
    amount: int


class Charged(BaseModel):
    order_id: str
    payment_id: str


class Declined(BaseModel):
    order_id: str
    reason: str


class Completed(BaseModel):
    order_id: str
    payment_id: str


class Shop(BaseModel):
    order_id: str
    amount: int
    payment_id: str | None = None


shop = StepSaga(
    "shop",
    state=Shop,
    # a service that publishes bare JSON, with a request id in a header
    start=Event("shop.placed", Placed, plain=Plain(id_header="x-request-id")),
    correlate="order_id",
    steps=[
        Step(
            "pay",
            send=Send("shop.charge", Charge),
            success=Event("shop.charged", Charged, plain=True),  # bare JSON, no id header
            failure=Event("shop.declined", Declined),  # CloudEvents only
            timeout=30,
        )
    ],
    on_completed=Send("shop.completed", Completed),
)


def binary(
    type: str, id: str, data: dict[str, Any], prefix: str = "ce_"
) -> tuple[bytes, dict[str, str]]:
    """A binary-mode CloudEvent as a foreign service writes it (Kafka's prefix by default)."""
    headers = {
        f"{prefix}specversion": "1.0",
        f"{prefix}id": id,
        f"{prefix}source": "/payments",
        f"{prefix}type": type,
        "content-type": "application/json",
    }
    return orjson.dumps(data), headers


async def publish(
    h: SagaHarness, destination: str, body: bytes, headers: dict[str, str] | None = None
) -> None:
    """Publish as a service would, on the harness's in-memory broker, and let it run."""
    await h.transport.publish([OutgoingMessage(destination, body, "", None, headers or {})])
    await h.process()


@pytest.fixture
async def h() -> AsyncIterator[SagaHarness]:
    async with SagaHarness(shop) as harness:
        yield harness


async def test_plain_json_events_drive_a_saga(h: SagaHarness) -> None:
    await publish(h, "shop.placed", b'{"order_id": "o-1", "amount": 5}', {"X-Request-Id": "r-1"})
    (charge,) = h.commands("shop.charge")
    assert charge.data == {"order_id": "o-1", "amount": 5}
    assert charge.correlationid == "o-1" and charge.causationid == "r-1"
    reply = b'{"order_id": "o-1", "payment_id": "p-1"}'
    await publish(h, "shop.charged", reply)
    assert (await h.instance("o-1")).status is Status.COMPLETED
    assert h.commands("shop.completed")[0].data == {"order_id": "o-1", "payment_id": "p-1"}
    history = await h.history("o-1")
    assert [r.message_id for r in history] == ["r-1", plain_id("shop.charged", reply)]
    assert not h.dead_letters()


async def test_a_redelivered_plain_event_is_a_duplicate(h: SagaHarness) -> None:
    body = b'{"order_id": "o-2", "amount": 5}'
    await publish(h, "shop.placed", body)  # no id header: the hash of destination and body
    await publish(h, "shop.placed", body)  # the same message again
    assert len(h.commands("shop.charge")) == 1
    assert h.engine.stats.duplicates == 1
    assert not h.dead_letters()


@pytest.mark.parametrize("prefix", ["ce_", "ce-", "cloudEvents_", "cloudEvents:"])
async def test_binary_events_drive_the_same_saga(h: SagaHarness, prefix: str) -> None:
    body, headers = binary("shop.placed", "b-1", {"order_id": "o-3", "amount": 7}, prefix)
    await publish(h, "shop.placed", body, headers)  # binary wins over the plain declaration
    assert h.commands("shop.charge")[0].causationid == "b-1"
    body, headers = binary("shop.declined", "b-2", {"order_id": "o-3", "reason": "no"}, prefix)
    await publish(h, "shop.declined", body, headers)
    instance = await h.instance("o-3")
    assert instance.status is Status.COMPENSATED
    assert [r.message_id for r in await h.history("o-3")] == ["b-1", "b-2"]


async def test_a_binary_reply_parked_before_its_instance_is_applied_after(
    h: SagaHarness,
) -> None:
    """Parked rows keep a body and no headers: a binary reply that waits for its
    instance is parked as the structured event, so that it still reads when it wakes."""
    body, headers = binary("shop.charged", "b-9", {"order_id": "o-4", "payment_id": "p-4"})
    await publish(h, "shop.charged", body, headers)  # before the order: parked
    assert h.engine.stats.parked == 1
    await publish(h, "shop.placed", b'{"order_id": "o-4", "amount": 1}')
    instance = await h.instance("o-4")
    assert instance.status is Status.COMPLETED and instance.data.payment_id == "p-4"  # type: ignore[attr-defined]
    assert (await h.history("o-4"))[-1].message_id == "b-9"
    assert not h.dead_letters()


async def test_bad_binary_and_plain_input_is_dead_lettered_with_reasons(h: SagaHarness) -> None:
    body, headers = binary("shop.placed", "b-5", {"order_id": "o-5", "amount": 1})
    del headers["ce_source"]
    await publish(h, "shop.placed", body, headers)
    await publish(h, "shop.placed", b"{not json")
    await publish(h, "shop.placed", b'{"order_id": "o-6"}')  # no amount
    await publish(h, "shop.placed", b'{"amount": 1}')  # no order_id, nothing to correlate
    await publish(h, "shop.declined", b'{"order_id": "o-7", "reason": "x"}')  # not plain
    reasons = [d.reason for d in h.dead_letters()]
    assert len(reasons) == 5, reasons
    assert "binary mode (headers ce_*): attribute 'source': Field required" in reasons[0]
    assert reasons[1].startswith("plain event on 'shop.placed': data (application/json) is not")
    assert "data 'amount': Field required" in reasons[2]
    assert "data 'order_id': Field required" in reasons[3]
    assert "invalid CloudEvent" in reasons[4] and "specversion" in reasons[4]
    assert [d.origin for d in h.dead_letters()] == ["shop.placed"] * 4 + ["shop.declined"]
    assert h.dead_letters()[0].body == body  # the original bytes, as always
    assert not h.commands("shop.charge")


# -- sending in binary mode -------------------------------------------------------------


async def test_binary_mode_sends_commands_and_outcomes_as_data_and_headers() -> None:
    broker = MemoryBroker(record=True)
    transport = MemoryTransport(broker)
    store = MemoryStore()
    config = EngineConfig(content_mode="binary")
    engine = Engine([shop], store, transport, clock=VirtualClock(1_767_225_600.0), config=config)
    await store.open()
    await transport.start()
    try:
        await engine.prepare()

        async def send(destination: str, body: bytes) -> None:
            await transport.publish([OutgoingMessage(destination, body, "", None, {})])
            while batch := transport.poll(engine.topology):
                await engine.handle(batch)

        await send("shop.placed", b'{"order_id": "o-8", "amount": 3}')
        (charge,) = broker.published("shop.charge")
        assert charge.body == b'{"order_id":"o-8","amount":3}'
        assert charge.headers["content-type"] == "application/json"
        assert charge.headers["ce-type"] == "shop.charge"
        assert charge.headers["sagawire-message-id"] == charge.message_id
        env = decode_binary(charge.headers, charge.body)
        assert (env.type, env.correlationid, env.id) == ("shop.charge", "o-8", charge.message_id)
        assert env.causationid == plain_id("shop.placed", b'{"order_id": "o-8", "amount": 3}')
        await send("shop.charged", b'{"order_id": "o-8", "payment_id": "p-8"}')
        (done,) = broker.published("shop.completed")
        outcome = decode_binary(done.headers, done.body)
        assert outcome.data == {"order_id": "o-8", "payment_id": "p-8"}
    finally:
        await transport.close()
        await store.close()


def test_an_unknown_content_mode_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="content mode 'mixed'"):
        EngineConfig(content_mode="mixed")


@pytest.mark.parametrize("url", ["memory://", "sqlite:///{tmp}/outbox.db"])
async def test_a_binary_outbox_row_needs_no_new_column(url: str, tmp_path: Path) -> None:
    """The row keeps the data as its body and the attributes as its headers (neutral
    ``ce-`` names); a broker adapter renames them when it publishes."""
    message = Message(
        "shop.charge",
        "cmd-1",
        {"order_id": "o-1", "amount": 2},
        "sagawire/shop",
        datetime(2026, 1, 2, tzinfo=UTC),
        "o-1",
        "evt-1",
        attempt=2,
    )
    row = outbox_record(message, "o-1", 5.0, binary=True)
    store = open_store(url.format(tmp=tmp_path))
    await store.open()
    try:
        await store.commit([UnitOfWork(outbox=(row,))])
        (stored,) = await store.pending_outbox()
    finally:
        await store.close()
    assert stored == row
    assert stored.id == "cmd-1#2" and stored.body == b'{"order_id":"o-1","amount":2}'
    out = outgoing(stored)
    assert out.headers["ce-attempt"] == "2" and out.headers["sagawire-message-id"] == "cmd-1#2"
    (kafka,) = in_binding([out], KAFKA)
    assert kafka.headers["ce_id"] == "cmd-1" and "ce-id" not in kafka.headers
    assert decode_binary(kafka.headers, kafka.body) == decode_binary(out.headers, out.body)
    structured = [outgoing(outbox_record(message, "o-1", 5.0))]
    assert in_binding(structured, KAFKA) is structured  # nothing to rename: the same list


async def _until(probe: Any, timeout: float = 10.0) -> Any:
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        got = await probe()
        if got:
            return got
        await asyncio.sleep(0.05)
    raise AssertionError("timed out")


async def test_the_sidecar_in_binary_mode_sends_binary(tmp_path: Path) -> None:
    """``sagawire run --content-mode binary``: an event accepted over HTTP and the
    command it causes both leave as binary-mode CloudEvents."""
    name = uuid.uuid4().hex
    broker = MemoryBroker.named(name)
    broker.record = True
    settings = Settings(
        sagas=str(ROOT / "sagas" / "order.py"),
        broker=f"memory://{name}",
        store="memory://",
        port=0,
        content_mode="binary",
    )
    car = Sidecar(settings)
    task = asyncio.create_task(car.run())
    try:
        async with httpx.AsyncClient() as c:

            async def ready() -> str | None:
                if not car.address:
                    return None
                r = await c.get(f"http://{car.address}/readyz")
                return car.address if r.status_code == 200 else None

            base = f"http://{await _until(ready)}"
            event = {
                "specversion": "1.0",
                "id": "evt-1",
                "source": "tests/shop",
                "type": "order.placed",
                "data": {
                    "order_id": "o-9",
                    "customer_id": "c-1",
                    "items": [{"sku": "book", "qty": 1}],
                    "amount_cents": 1200,
                },
            }
            r = await c.post(f"{base}/events", content=orjson.dumps(event))
            assert r.status_code == 202

            async def reserved() -> list[OutgoingMessage]:
                return broker.published("inventory.reserve")

            (command,) = await _until(reserved)
        (placed,) = broker.published("order.placed")
        assert placed.headers["ce-id"] == "evt-1"
        assert orjson.loads(placed.body) == event["data"]
        env = decode_binary(command.headers, command.body)
        assert (env.type, env.correlationid, env.causationid) == (
            "inventory.reserve",
            "o-9",
            "evt-1",
        )
        assert env.data == {"order_id": "o-9", "items": [{"sku": "book", "qty": 1}]}
    finally:
        car.request_stop("test")
        await asyncio.wait({task}, timeout=10)
        MemoryBroker.forget(name)
    assert task.result() == 0


def test_run_refuses_an_unknown_content_mode_in_one_line() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SAGAWIRE_")}
    env["SAGAWIRE_CONTENT_MODE"] = "mixed"
    sagawire = str(Path(sys.executable).parent / "sagawire")
    result = subprocess.run(
        [sagawire, "run", "--sagas", "sagas/order.py", "--store", "memory://"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=ROOT,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "sagawire: error: SAGAWIRE_CONTENT_MODE='mixed': content_mode should be"
        " 'structured' or 'binary'"
    ]
