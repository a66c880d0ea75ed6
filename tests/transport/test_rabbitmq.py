"""The transport contract, and RabbitMQ's own promises, against a real RabbitMQ.

Each test gets its own exchange (``sw_<hex>``) and group, and deletes the
exchange, the group queues and ``<exchange>.deadletter`` afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable

import aio_pika
import pytest

from adapters import open_transport as open_by_url
from adapters._rabbitmq_config import RabbitConfig
from adapters.base import DEADLETTER, HEADER_MESSAGE_ID, OutgoingMessage, Topology
from adapters.rabbitmq import RabbitTransport
from schemas.errors import ConfigError, DeclarationError, TransportError
from tests.support.proxy import TcpProxy
from tests.support.services import require, unique
from tests.transport.contract import (
    Names,
    Receiver,
    ReconnectContract,
    TransportContract,
    TransportFactory,
    msg,
)

pytestmark = pytest.mark.broker("rabbitmq")

HOST, PORT = "127.0.0.1", 5672
ADMIN_URL = f"amqp://guest:guest@{HOST}:{PORT}/"


async def _delete(exchange: str, queues: list[str]) -> None:
    """Remove what a test created; each delete on its own channel, since a failed
    one closes the channel."""
    conn = await aio_pika.connect(ADMIN_URL)
    async with conn:
        for q in queues:
            with contextlib.suppress(Exception):
                async with conn.channel() as ch:
                    await ch.queue_delete(q)
        with contextlib.suppress(Exception):
            async with conn.channel() as ch:
                await ch.exchange_delete(exchange)


async def _depth(queue: str) -> int:
    conn = await aio_pika.connect(ADMIN_URL)
    async with conn:
        ch = await conn.channel()
        q = await ch.declare_queue(queue, passive=True)
        return q.declaration_result.message_count or 0


class TestRabbitTransport(TransportContract, ReconnectContract):
    @pytest.fixture
    def exchange(self) -> str:
        return unique("sw_")

    @pytest.fixture
    async def transport_factory(
        self, names: Names, exchange: str
    ) -> AsyncIterator[TransportFactory]:
        require("rabbitmq", HOST, PORT)

        async def make() -> RabbitTransport:
            # The contract's burst test holds 1000 deliveries unacked, more than the
            # default window of 256; the window itself is tested below.
            return RabbitTransport.from_url(f"{ADMIN_URL}?exchange={exchange}&prefetch=1024")

        yield make
        queues = [f"sagawire.{names.group}", f"sagawire.{names.group}-dl"]
        await _delete(exchange, [*queues, f"{exchange}.deadletter"])

    @pytest.fixture
    async def proxy(self) -> AsyncIterator[TcpProxy]:
        require("rabbitmq", HOST, PORT)
        p = await TcpProxy(HOST, PORT).start()
        yield p
        await p.close()

    @pytest.fixture
    def proxied_factory(
        self, exchange: str, transport_factory: TransportFactory
    ) -> Callable[[TcpProxy], Awaitable[RabbitTransport]]:
        # Depends on transport_factory for its cleanup of the same names.
        async def make(proxy: TcpProxy) -> RabbitTransport:
            url = f"amqp://guest:guest@{HOST}:{proxy.port}/?exchange={exchange}&reconnect_max=1"
            return RabbitTransport.from_url(url)

        return make

    def refused_message(self, names: Names) -> tuple[OutgoingMessage, str]:
        return OutgoingMessage("r" * 300, b"{}", "long-key"), "AMQP carries at most 255"

    # -- RabbitMQ specifics --------------------------------------------------------

    async def test_registry_opens_rabbit_for_amqp_urls(self, exchange: str) -> None:
        assert isinstance(open_by_url(f"amqp://h/?exchange={exchange}"), RabbitTransport)
        assert isinstance(open_by_url("amqps://h/"), RabbitTransport)

    async def test_existing_queue_with_other_arguments_is_a_declaration_error(
        self, open_transport: Callable[[], Awaitable[RabbitTransport]], names: Names
    ) -> None:
        require("rabbitmq", HOST, PORT)
        conn = await aio_pika.connect(ADMIN_URL)
        async with conn:
            ch = await conn.channel()
            await ch.declare_queue(
                f"sagawire.{names.group}", durable=True, arguments={"x-max-length": 5}
            )
        t = await open_transport()
        with pytest.raises(DeclarationError) as info:
            await t.declare(self.topology(names, "a"))
        assert not info.value.retryable
        assert f"sagawire.{names.group}" in str(info.value)
        assert "PRECONDITION_FAILED" in str(info.value)
        # the transport is still usable after the failed declaration
        await t.publish([msg(names.dest("b"), 1)])
        assert t.readiness.ready

    async def test_existing_exchange_of_another_type_fails_start(
        self, transport_factory: TransportFactory, exchange: str
    ) -> None:
        conn = await aio_pika.connect(ADMIN_URL)
        async with conn:
            ch = await conn.channel()
            await ch.declare_exchange(exchange, aio_pika.ExchangeType.DIRECT, durable=True)
        t = await transport_factory()
        with pytest.raises(DeclarationError, match=exchange):
            await t.start()
        assert not t.readiness.ready
        await t.close()

    async def test_publish_returns_once_confirmed(
        self, open_transport: Callable[[], Awaitable[RabbitTransport]], names: Names
    ) -> None:
        t = await open_transport()
        await t.declare(self.topology(names, "a"))
        await t.publish([msg(names.dest("a"), i) for i in range(500)])
        # confirmed means enqueued (and, persistent + durable, on disk)
        assert await _depth(f"sagawire.{names.group}") == 500

    async def test_a_broker_nack_is_a_transport_error(
        self,
        open_transport: Callable[[], Awaitable[RabbitTransport]],
        names: Names,
        exchange: str,
    ) -> None:
        t = await open_transport()
        full = f"sagawire.{names.group}"  # cleaned up by the fixture
        conn = await aio_pika.connect(ADMIN_URL)
        async with conn:
            ch = await conn.channel()
            q = await ch.declare_queue(
                full, durable=True, arguments={"x-max-length": 0, "x-overflow": "reject-publish"}
            )
            await q.bind(exchange, routing_key=names.dest("a"))
        with pytest.raises(TransportError) as info:
            await t.publish([msg(names.dest("a"), 1)])
        assert info.value.retryable
        assert "did not confirm" in str(info.value)

    async def test_mandatory_makes_unroutable_an_error(
        self, exchange: str, names: Names, transport_factory: TransportFactory
    ) -> None:
        t = RabbitTransport.from_url(f"{ADMIN_URL}?exchange={exchange}&mandatory=1")
        await t.start()
        try:
            with pytest.raises(TransportError, match="unroutable"):
                await t.publish([msg(names.dest("nobody"), 1)])
        finally:
            await t.close()

    async def test_key_content_type_and_message_id_round_trip(
        self, open_transport: Callable[[], Awaitable[RabbitTransport]], names: Names
    ) -> None:
        t = await open_transport()
        topo = self.topology(names, "a")
        await t.declare(topo)
        async with Receiver(t, topo) as rx:
            await t.publish([msg(names.dest("a"), 1, key="order-7")])
            (d,) = await rx.wait_for(1)
            assert d.key == "order-7"
            assert d.headers["content-type"] == "application/cloudevents+json"
            assert d.headers[HEADER_MESSAGE_ID] == f"m-{names.dest('a')}-1"
            assert "sagawire-key" not in d.headers
            assert d.delivery_count == 1
            await t.ack([d])

    async def test_dead_letters_are_kept_without_a_consumer(
        self,
        open_transport: Callable[[], Awaitable[RabbitTransport]],
        names: Names,
        exchange: str,
    ) -> None:
        t = await open_transport()
        topo = self.topology(names, "a")
        await t.declare(topo)
        async with Receiver(t, topo) as rx:
            await t.publish([msg(names.dest("a"), 1)])
            (d,) = await rx.wait_for(1)
            await t.dead_letter(d, "no saga takes it")
            await t.ack([d])
        assert await _depth(f"{exchange}.deadletter") == 1
        assert DEADLETTER == "sagawire.deadletter"

    async def test_stale_deliveries_after_a_reconnect_are_ignored_and_redelivered(
        self,
        proxied_factory: Callable[[TcpProxy], Awaitable[RabbitTransport]],
        proxy: TcpProxy,
        names: Names,
        open_transport: Callable[[], Awaitable[RabbitTransport]],
    ) -> None:
        direct = await open_transport()
        via = await proxied_factory(proxy)
        await via.start()
        topo = self.topology(names, "a")
        try:
            await via.declare(topo)
            async with Receiver(via, topo) as rx:
                await direct.publish([msg(names.dest("a"), 1)])
                (stale,) = await rx.wait_for(1)
                await proxy.cut()
                proxy.resume()
                _, again = await rx.wait_for(2, timeout=30)
                assert again.body == stale.body
                assert again.delivery_count == 2
                await via.ack([stale])  # its channel is gone: ignored, no crash
                await via.nack([stale], delay=0.01)
                await via.ack([again])
                assert len(await rx.quiet(1.0)) == 2
        finally:
            await via.close()

    async def test_prefetch_bounds_what_is_in_flight(
        self, exchange: str, names: Names, transport_factory: TransportFactory
    ) -> None:
        t = RabbitTransport.from_url(f"{ADMIN_URL}?exchange={exchange}&prefetch=100")
        await t.start()
        topo = Topology(consumes=(names.dest("a"),), group=names.group)
        try:
            await t.declare(topo)
            async with Receiver(t, topo, max_batch=64) as rx:
                await t.publish([msg(names.dest("a"), i) for i in range(300)])
                await rx.wait_for(100)
                assert len(await rx.quiet(0.5)) == 100, "more than prefetch in flight"
                assert all(len(b) <= 64 for b in rx.batches)
                await t.ack(rx.deliveries[:100])
                await t.ack((await rx.wait_for(200))[100:])
                got = await rx.wait_for(300)
                await t.ack(got[200:])
            assert sorted(int(d.body[5:-1]) for d in got) == list(range(300))
        finally:
            await t.close()

    async def test_close_ends_the_iterator(
        self, open_transport: Callable[[], Awaitable[RabbitTransport]], names: Names
    ) -> None:
        t = await open_transport()
        topo = self.topology(names, "a")
        await t.declare(topo)

        async def drain() -> int:
            n = 0
            async for batch in t.consume(topo):
                n += len(batch)
            return n

        task = asyncio.ensure_future(drain())
        await asyncio.sleep(0.3)
        await t.close()
        assert await asyncio.wait_for(task, 5) == 0

    async def test_quorum_queues_count_deliveries(
        self, exchange: str, names: Names, transport_factory: TransportFactory
    ) -> None:
        t = RabbitTransport.from_url(f"{ADMIN_URL}?exchange={exchange}&queue_type=quorum")
        await t.start()
        topo = Topology(consumes=(names.dest("a"),), group=names.group)
        try:
            await t.declare(topo)
            async with Receiver(t, topo) as rx:
                await t.publish([msg(names.dest("a"), 1)])
                (d,) = await rx.wait_for(1)
                await t.nack([d])
                _, d2 = await rx.wait_for(2)
                await t.nack([d2])
                _, _, d3 = await rx.wait_for(3)
                assert [d.delivery_count, d2.delivery_count, d3.delivery_count] == [1, 2, 3]
                await t.ack([d3])
        finally:
            await t.close()


# -- no broker needed ---------------------------------------------------------------


async def test_credentials_never_appear_in_errors_or_logs(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    require("rabbitmq", HOST, PORT)
    caplog.set_level(logging.DEBUG)
    secret = "S3cr3t-pa55"
    for url in (f"amqp://guest:{secret}@{HOST}:{PORT}/", f"amqp://guest:{secret}@{HOST}:1/"):
        t = RabbitTransport.from_url(url)
        with pytest.raises(TransportError) as info:
            await t.start()
        await t.close()
        err = info.value
        for text in (str(err), repr(err), repr(t), t.readiness.reason, str(err.__cause__)):
            assert secret not in text
        assert "***" in str(err)
    monkeypatch.setenv("SAGAWIRE_AMQP_PASSWORD", secret)
    t = RabbitTransport.from_url(f"amqp://{HOST}:{PORT}/")
    with pytest.raises(TransportError) as info:
        await t.start()
    await t.close()
    assert secret not in str(info.value)
    assert not info.value.retryable  # wrong credentials do not fix themselves
    assert all(secret not in r.getMessage() for r in caplog.records)


def test_url_and_environment_settings() -> None:
    env = {"SAGAWIRE_AMQP_USER": "envuser", "SAGAWIRE_AMQP_PASSWORD": "envpw"}
    c = RabbitConfig.from_url("amqp://rabbit/", env)
    assert (c.host, c.port, c.vhost, c.user, c.password) == (
        "rabbit",
        5672,
        "/",
        "envuser",
        "envpw",
    )
    assert (c.exchange, c.queue_name("g"), c.deadletter_queue) == (
        "sagawire",
        "sagawire.g",
        "sagawire.deadletter",
    )
    c = RabbitConfig.from_url(
        "amqps://u:p%40ss@rabbit/prod%2Fa?exchange=ex&queue_prefix=app&prefetch=10&cafile=/ca.pem",
        env,
    )
    assert (c.port, c.vhost, c.user, c.password, c.tls, c.cafile) == (
        5671,
        "prod/a",
        "u",
        "p@ss",
        True,
        "/ca.pem",
    )
    assert (c.queue_name("g"), c.deadletter_queue, c.prefetch) == ("app.g", "ex.deadletter", 10)
    assert "p%40ss" not in c.display_url and "p@ss" not in c.display_url
    with pytest.raises(ConfigError, match="prefetch"):
        RabbitConfig.from_url("amqp://u:pw@h/?prefetch=0", {})
    with pytest.raises(ConfigError) as info:
        RabbitConfig.from_url("amqp://u:pw@h/?prefetch=x", {})
    assert "pw" not in str(info.value).replace("prefetch", "")
    with pytest.raises(ConfigError, match="queue_type"):
        RabbitConfig.from_url("amqp://h/?queue_type=stream", {})
