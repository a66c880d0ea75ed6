"""Foreign input and binary output over the REAL brokers.

On each broker the real engine runs the ``shop`` saga of ``tests/test_foreign_input.py``
with ``content_mode="binary"``, and the test plays the services with the broker's own
client library (aiokafka, nats-py, aio-pika), headers set by hand as a service of
another team would set them:

1. a plain JSON ``shop.placed`` (a bare body and an ``x-request-id`` header) starts it;
2. the ``shop.charge`` command arrives in binary mode under the binding's prefix
   (``ce_`` on Kafka, ``ce-`` with ``ce-datacontenttype`` on NATS, ``cloudEvents_``
   application properties and the AMQP content type on RabbitMQ), its body the data;
3. a binary-mode ``shop.charged`` in the binding's own form finishes the saga, read as
   the right envelope (its id, its data);
4. a binary event with no ``source`` and a plain body that is not JSON are dead letters
   whose reasons say so.

Every test owns its topics/streams/exchanges (unique names) and deletes them.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

import aio_pika
import nats
import nats.js.errors
import orjson
import pytest
from aiokafka import AIOKafkaProducer

from adapters import open_transport
from adapters.base import HEADER_REASON, Topology, close_stream
from orchestrator import Status
from orchestrator.engine import Engine, EngineConfig
from orchestrator.engine.correlate import Router
from orchestrator.engine.intake import Intake
from orchestrator.store.memory import MemoryStore
from orchestrator.tooling.bench import stop_engine
from schemas.limits import DEFAULT_LIMITS
from tests.support.kafka import Tansu, delete_topics
from tests.support.services import require, unique
from tests.support.waiting import wait_until
from tests.test_foreign_input import shop
from tests.transport.test_bad_input import AMQP_ADMIN, AMQP_HOST, AMQP_PORT, amqp_get_all
from tests.transport.test_kafka import read_all

WAIT = 30.0
"""Seconds for anything that should happen (a Kafka group join takes a few)."""

Headers = Mapping[str, str]
Received = tuple[bytes, dict[str, str]]


@dataclass
class Rig:
    """One broker as the services see it, through its own client library."""

    url: str
    group: str
    publish: Callable[[str, bytes, dict[str, object]], Awaitable[None]]
    """Publish ``body`` with ``headers`` to a destination (prefixes added)."""
    read: Callable[[str, int], Awaitable[list[Received]]]
    """The first ``n`` messages of a destination: body and headers as text."""
    prefix: str
    """The binding's prefix of the CloudEvents attribute headers."""
    percent: bool = False
    """Whether this binding percent-encodes header values (NATS)."""


def foreign_binary(rig: Rig, type: str, id: str, **more: object) -> dict[str, object]:
    """Attribute headers as a service on ``rig``'s broker writes them, by hand."""
    source = "/pay%20ments" if rig.percent else "/pay ments"
    headers: dict[str, object] = {
        f"{rig.prefix}specversion": "1.0",
        f"{rig.prefix}id": id,
        f"{rig.prefix}source": source,
        f"{rig.prefix}type": type,
        "content-type": "application/json",
    }
    headers.update({f"{rig.prefix}{k}": v for k, v in more.items()})
    return headers


async def scenario(rig: Rig) -> dict[str, str]:
    """Steps 1-4 of the module docstring; the command's headers, for the caller's checks."""
    store = MemoryStore()
    await store.open()
    transport = open_transport(rig.url)
    await transport.start()
    config = EngineConfig(group=rig.group, content_mode="binary", retry_backoff_max=0.2)
    engine = Engine([shop], store, transport, config=config)
    stopping = asyncio.Event()
    running: asyncio.Future[None] | None = None
    try:
        await engine.prepare()
        running = asyncio.ensure_future(engine.run(stopping))
        placed = b'{"order_id": "o-1", "amount": 5}'
        await rig.publish("shop.placed", placed, {"x-request-id": "r-1"})
        ((body, headers),) = await rig.read("shop.charge", 1)
        assert orjson.loads(body) == {"order_id": "o-1", "amount": 5}
        p = rig.prefix
        assert headers[f"{p}specversion"] == "1.0" and headers[f"{p}type"] == "shop.charge"
        assert headers[f"{p}correlationid"] == "o-1" and headers[f"{p}causationid"] == "r-1"
        assert not any(k.startswith("ce-") for k in headers) or p == "ce-"

        charged = orjson.dumps({"order_id": "o-1", "payment_id": "p-1"})
        await rig.publish("shop.charged", charged, foreign_binary(rig, "shop.charged", "b-1"))

        async def completed() -> bool:
            found = await engine.instance("shop", "o-1")
            return found is not None and found.status is Status.COMPLETED

        await wait_until(completed, WAIT)
        found = await engine.instance("shop", "o-1")
        assert found is not None
        assert found.data.payment_id == "p-1"  # type: ignore[attr-defined]
        history = await store.history(("shop", "o-1"))
        assert [h.message_id for h in history] == ["r-1", "b-1"]

        nameless = foreign_binary(rig, "shop.placed", "b-2")
        del nameless[f"{p}source"]
        await rig.publish("shop.placed", b'{"order_id": "o-2", "amount": 1}', nameless)
        await rig.publish("shop.placed", b"{not json", {})
        dead = await rig.read("sagawire.deadletter", 2)
        reasons = sorted(h[HEADER_REASON] for _, h in dead)
        assert "attribute 'source': Field required" in reasons[0], reasons
        assert reasons[1].startswith("plain event on 'shop.placed': data"), reasons
        return headers
    finally:
        if running is not None:
            await stop_engine(running, stopping, transport)
        await transport.close()
        await store.close()


# -- Kafka ------------------------------------------------------------------------------


@pytest.fixture
async def kafka_rig(kafka_broker: Tansu) -> AsyncIterator[Rig]:
    prefix = unique("swbin") + "."
    producer = AIOKafkaProducer(bootstrap_servers=f"127.0.0.1:{kafka_broker.port}")
    await producer.start()

    async def publish(destination: str, body: bytes, headers: dict[str, object]) -> None:
        raw = [(k, str(v).encode()) for k, v in headers.items()]
        await producer.send_and_wait(prefix + destination, body, headers=raw)

    async def read(destination: str, n: int) -> list[Received]:
        records = await read_all(kafka_broker, prefix + destination, n)
        return [
            (r.value or b"", {k: (v or b"").decode() for k, v in r.headers})  # type: ignore[attr-defined]
            for r in records
        ]

    try:
        yield Rig(f"{kafka_broker.url}&topic_prefix={prefix}", prefix + "g", publish, read, "ce_")
    finally:
        await producer.stop()
        await delete_topics(kafka_broker, prefix)


@pytest.mark.broker("kafka")
async def test_kafka_binary_in_and_out(kafka_rig: Rig) -> None:
    headers = await scenario(kafka_rig)
    assert headers["content-type"] == "application/json"  # Kafka: datacontenttype


# -- NATS JetStream ---------------------------------------------------------------------

NATS_ADDRESS = "127.0.0.1:4222"


@pytest.fixture
async def nats_rig() -> AsyncIterator[Rig]:
    require("nats", "127.0.0.1", 4222)
    stream, prefix = unique("SWBIN_"), unique("swbin")
    nc = await nats.connect(f"nats://{NATS_ADDRESS}")
    js = nc.jetstream()

    async def publish(destination: str, body: bytes, headers: dict[str, object]) -> None:
        text = {k: str(v) for k, v in headers.items()}
        await js.publish(f"{prefix}.{destination}", body, headers=text, stream=stream)

    async def read(destination: str, n: int) -> list[Received]:
        sub = await js.pull_subscribe(f"{prefix}.{destination}", stream=stream)
        got: list[Received] = []
        async with asyncio.timeout(WAIT):
            while len(got) < n:
                with contextlib.suppress(nats.errors.TimeoutError):
                    for m in await sub.fetch(batch=n - len(got), timeout=1):
                        got.append((m.data, dict(m.headers or {})))
        await sub.unsubscribe()
        return got

    url = (
        f"nats://{NATS_ADDRESS}?stream={stream}&subject_prefix={prefix}"
        "&ping_interval=1&reconnect_wait=0.5&fetch_timeout=1"
    )
    try:
        yield Rig(url, prefix + "-g", publish, read, "ce-", percent=True)
    finally:
        with contextlib.suppress(nats.js.errors.NotFoundError):
            await js.delete_stream(stream)
        await nc.close()


@pytest.mark.broker("nats")
async def test_nats_binary_in_and_out(nats_rig: Rig) -> None:
    headers = await scenario(nats_rig)
    assert headers["ce-datacontenttype"] == "application/json"  # the NATS binding's rule
    assert headers["ce-source"] == "sagawire/shop"


# -- RabbitMQ ---------------------------------------------------------------------------


@pytest.fixture
async def rabbit_rig() -> AsyncIterator[Rig]:
    require("rabbitmq", AMQP_HOST, AMQP_PORT)
    exchange, group = unique("swbin_"), unique("gbin")
    watched = {  # a queue of ours, and the adapter's own dead-letter queue
        "shop.charge": f"{exchange}.shop.charge",
        "sagawire.deadletter": f"{exchange}.deadletter",
    }
    conn = await aio_pika.connect(AMQP_ADMIN)
    channel = await conn.channel()
    ex = await channel.declare_exchange(exchange, aio_pika.ExchangeType.TOPIC, durable=True)
    watch = await channel.declare_queue(watched["shop.charge"], durable=True)
    await watch.bind(ex, routing_key="shop.charge")

    async def publish(destination: str, body: bytes, headers: dict[str, object]) -> None:
        content_type = headers.pop("content-type", None)
        message = aio_pika.Message(
            body,
            headers=headers,  # type: ignore[arg-type]
            content_type=content_type if isinstance(content_type, str) else None,
        )
        await ex.publish(message, routing_key=destination)

    async def read(destination: str, n: int) -> list[Received]:
        got: list[Received] = []
        async with asyncio.timeout(WAIT):
            while len(got) < n:
                for m in await amqp_get_all(watched[destination], wait=0.2):
                    headers = {k: str(v) for k, v in (m.headers or {}).items()}
                    if m.content_type:
                        headers["content-type"] = m.content_type
                    got.append((m.body, headers))
        return got

    try:
        yield Rig(f"{AMQP_ADMIN}?exchange={exchange}", group, publish, read, "cloudEvents_")
    finally:
        for queue in (*watched.values(), f"sagawire.{group}"):
            with contextlib.suppress(Exception):
                await channel.queue_delete(queue)
        with contextlib.suppress(Exception):
            await channel.exchange_delete(exchange)
        await conn.close()


@pytest.mark.broker("rabbitmq")
async def test_rabbitmq_binary_in_and_out(rabbit_rig: Rig) -> None:
    headers = await scenario(rabbit_rig)
    assert headers["content-type"] == "application/json"  # the AMQP content-type property


@pytest.mark.broker("rabbitmq")
async def test_rabbitmq_reads_native_amqp_attribute_values(rabbit_rig: Rig) -> None:
    """The AMQP binding lets a sender write attributes as AMQP types (a timestamp, a
    long); the transport hands them over as their CloudEvents canonical strings."""
    transport = open_transport(rabbit_rig.url)
    await transport.start()
    try:
        topology = Topology(consumes=("shop.charged",), group=rabbit_rig.group)
        await transport.declare(topology)
        when = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
        headers = foreign_binary(rabbit_rig, "shop.charged", "n-1", time=when, sequence=7)
        headers["cloudEvents_correlationid"] = "o-1"
        await rabbit_rig.publish("shop.charged", b'{"order_id": "o-1", "payment_id": "p"}', headers)
        stream = transport.consume(topology, max_batch=8)
        try:
            (delivery,) = await asyncio.wait_for(anext(stream), WAIT)
        finally:
            await close_stream(stream)
        batch = Intake(Router([shop]), DEFAULT_LIMITS).parse([delivery])
        assert not batch.dead, batch.dead
        env = batch.items[0].routed.envelope
        assert (env.id, env.time, env.source, env.correlationid) == (
            "n-1",
            when,
            "/pay ments",
            "o-1",
        )
        assert env.model_extra == {"sequence": "7"}
    finally:
        await transport.close()
