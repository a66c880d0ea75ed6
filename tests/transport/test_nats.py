"""The transport contract against NATS JetStream, plus what only NATS has.

Each test owns a stream (``?stream=SW_<hex>``) on the shared server and deletes
it afterwards. Needs ``nats-server -js`` on 127.0.0.1:4222 (skips on a laptop
without it, fails under CI=true).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import AsyncIterator, Awaitable, Callable

import nats
import nats.js.errors
import pytest
from nats.js import api

from adapters._nats_options import NatsOptions
from adapters._nats_topology import consumer_name, missing_subjects, subject_matches
from adapters.base import (
    DEADLETTER,
    HEADER_MESSAGE_ID,
    Delivery,
    OutgoingMessage,
    Topology,
)
from adapters.nats import NatsTransport
from schemas.errors import ConfigError, DeclarationError, TransportError
from tests.support.loop_reports import loop_reports
from tests.support.nats_server import ModernNats
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

HOST, PORT = "127.0.0.1", 4222
# Fast failure detection so the reconnect contract sees readiness drop in < 10 s.
TUNING = "ping_interval=1&reconnect_wait=0.5&fetch_timeout=2&connect_timeout=5"


@pytest.fixture
async def stream() -> AsyncIterator[str]:
    """A fresh stream name; the stream is deleted after the test."""
    require("nats", HOST, PORT)
    name = unique("SW_")
    yield name
    nc = await nats.connect(f"nats://{HOST}:{PORT}")
    with contextlib.suppress(nats.js.errors.NotFoundError):
        await nc.jetstream().delete_stream(name)
    await nc.close()


def url(stream: str, port: int = PORT, extra: str = "") -> str:
    """The test's stream, with its own dead-letter subject so streams never overlap."""
    dl = f"deadletter={DEADLETTER}.{stream}"
    return f"nats://{HOST}:{port}?stream={stream}&{dl}&{TUNING}{'&' + extra if extra else ''}"


class NatsRefusals:
    """What both NATS contract runs refuse: headers over 64 KiB, which only the server
    checks (in the message's own publish ack, which nats-py's ``publish_async`` loses)."""

    def refused_message(self, names: Names) -> tuple[OutgoingMessage, str]:
        big = OutgoingMessage(names.dest("a"), b"{}", "big-headers", headers={"x": "v" * 70_000})
        return big, "header size exceeds maximum allowed of 64k (err_code 10097"


class TestNatsTransport(NatsRefusals, TransportContract, ReconnectContract):
    @pytest.fixture
    def transport_factory(self, stream: str) -> TransportFactory:
        async def make() -> NatsTransport:
            return NatsTransport.from_url(url(stream))

        return make

    @pytest.fixture
    async def proxy(self) -> AsyncIterator[TcpProxy]:
        require("nats", HOST, PORT)
        p = await TcpProxy(HOST, PORT).start()
        yield p
        await p.close()

    @pytest.fixture
    def proxied_factory(self, stream: str) -> Callable[[TcpProxy], Awaitable[NatsTransport]]:
        async def make(proxy: TcpProxy) -> NatsTransport:
            return NatsTransport.from_url(url(stream, proxy.port))

        return make


# -- NATS-specific behaviour against the server ----------------------------------


@pytest.fixture
def names() -> Names:
    p = unique("sw")
    return Names(prefix=p, group=f"{p}-g")


@pytest.fixture
async def transport(stream: str) -> AsyncIterator[NatsTransport]:
    t = NatsTransport.from_url(url(stream, extra="max_deliver=2"))
    await t.start()
    yield t
    await t.close()


async def stream_info(name: str) -> api.StreamInfo:
    nc = await nats.connect(f"nats://{HOST}:{PORT}")
    try:
        return await nc.jetstream().stream_info(name)
    finally:
        await nc.close()


async def test_stream_update_adds_subjects_and_never_removes(
    transport: NatsTransport, stream: str, names: Names
) -> None:
    a = Topology(consumes=(names.dest("a"),), group=names.group)
    b = Topology(consumes=(names.dest("b"),), produces=(names.dest("c"),), group=names.group + "b")
    await transport.declare(a)
    await transport.declare(b)
    await transport.declare(a)  # must not drop b's subjects
    info = await stream_info(stream)
    subjects = info.config.subjects or []
    assert sorted(subjects) == sorted(
        {names.dest("a"), names.dest("b"), names.dest("c"), f"{DEADLETTER}.{stream}"}
    )
    assert info.config.storage == api.StorageType.FILE


async def test_subjects_covered_by_a_wildcard_are_not_added(stream: str, names: Names) -> None:
    nc = await nats.connect(f"nats://{HOST}:{PORT}")
    await nc.jetstream().add_stream(
        name=stream, subjects=[f"{names.prefix}.>", f"{DEADLETTER}.>"], storage=api.StorageType.FILE
    )
    await nc.close()
    t = NatsTransport.from_url(url(stream))
    await t.start()
    try:
        await t.declare(Topology(consumes=(names.dest("a"),), group=names.group))
    finally:
        await t.close()
    assert sorted((await stream_info(stream)).config.subjects or []) == sorted(
        [f"{names.prefix}.>", f"{DEADLETTER}.>"]
    )


async def test_an_incompatible_stream_is_a_declaration_error(stream: str, names: Names) -> None:
    nc = await nats.connect(f"nats://{HOST}:{PORT}")
    await nc.jetstream().add_stream(
        name=stream, subjects=[names.dest("x")], retention=api.RetentionPolicy.WORK_QUEUE
    )
    await nc.close()
    t = NatsTransport.from_url(url(stream))
    await t.start()
    try:
        with pytest.raises(DeclarationError, match="work-queue") as err:
            await t.declare(Topology(consumes=(names.dest("a"),), group=names.group))
        assert not err.value.retryable
    finally:
        await t.close()


async def test_delivery_count_reaches_max_deliver_and_stops(
    transport: NatsTransport, names: Names
) -> None:
    topo = Topology(consumes=(names.dest("a"),), group=names.group)
    await transport.declare(topo)
    async with Receiver(transport, topo) as rx:
        await transport.publish([msg(names.dest("a"), 1)])
        (first,) = await rx.wait_for(1)
        assert first.delivery_count == 1
        assert not transport.is_last_attempt(first)
        await transport.nack([first])
        _, last = await rx.wait_for(2)
        assert last.delivery_count == 2 == transport.max_deliver
        assert transport.is_last_attempt(last)
        await transport.nack([last])
        assert len(await rx.quiet(1.5)) == 2, "JetStream delivered past max_deliver"


async def test_republish_is_deduplicated_by_message_id(
    transport: NatsTransport, stream: str, names: Names
) -> None:
    topo = Topology(consumes=(names.dest("a"),), group=names.group)
    await transport.declare(topo)
    m = msg(names.dest("a"), 1, key="k1")
    await transport.publish([m])
    await transport.publish([m])  # e.g. the outbox relay retried after a lost ack
    assert (await stream_info(stream)).state.messages == 1
    async with Receiver(transport, topo) as rx:
        (d,) = await rx.wait_for(1)
        assert len(await rx.quiet(0.5)) == 1
        assert d.key == "k1"
        assert not any(k.lower().startswith("nats-") for k in d.headers)
        await transport.ack([d])


async def test_a_publish_cancelled_mid_confirmation_leaves_nothing_unretrieved(
    transport: NatsTransport, names: Names
) -> None:
    """A stop cancels a publish that is waiting for its acks: asyncio used to log
    '_GatheringFuture exception was never retrieved' for each such window."""
    async with loop_reports() as reported:
        await transport.declare(Topology(consumes=(), produces=(names.dest("b"),)))
        for delay in (0, 0.0005, 0.001, 0.002, 0.005):
            body = b"x" * 300
            batch = [
                OutgoingMessage(names.dest("b"), body, f"m{i}-{delay}", "k") for i in range(500)
            ]
            task = asyncio.ensure_future(transport.publish(batch))
            await asyncio.sleep(delay)
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
    assert not [m for m in reported if "never retrieved" in m], reported


async def test_dead_letter_of_a_message_with_an_id_is_not_deduplicated_away(
    transport: NatsTransport, names: Names
) -> None:
    topo = Topology(consumes=(names.dest("a"),), group=names.group)
    dl = Topology(consumes=(DEADLETTER,), group=names.group + "-dl")
    await transport.declare(topo)
    await transport.declare(dl)
    headers = {HEADER_MESSAGE_ID: "id-1"}
    await transport.publish([OutgoingMessage(names.dest("a"), b"{}", "id-1", headers=headers)])
    async with Receiver(transport, topo) as rx:
        (d,) = await rx.wait_for(1)
        await transport.dead_letter(d, "no saga")
        await transport.dead_letter(d, "no saga")  # repeated after a crash: one copy
        await transport.ack([d])
    async with Receiver(transport, dl) as rx_dl:
        (x,) = await rx_dl.wait_for(1)
        assert x.body == b"{}"
        assert len(await rx_dl.quiet(0.5)) == 1
        await transport.ack([x])


async def test_close_gives_back_what_was_never_acked(stream: str, names: Names) -> None:
    """Everything fetched (handed out or still queued) is nak'd on close, so the next
    consumer of the group gets it now rather than after ack_wait."""
    topo = Topology(consumes=(names.dest("a"),), group=names.group)
    first = NatsTransport.from_url(url(stream))
    await first.start()
    await first.declare(topo)
    await first.publish([msg(names.dest("a"), i) for i in range(20)])
    async with Receiver(first, topo, max_batch=5) as rx:
        await rx.wait_for(5)
    await first.close()
    second = NatsTransport.from_url(url(stream))
    await second.start()
    try:
        async with Receiver(second, topo) as rx2:
            got: list[Delivery] = await rx2.wait_for(20, timeout=10)
            await second.ack(got)
        assert sorted(int(d.body[5:-1]) for d in got) == list(range(20))
    finally:
        await second.close()


# -- credentials and URL parsing ---------------------------------------------------


def closed_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


async def test_credentials_never_appear_in_errors_logs_or_readiness(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    port = closed_port()
    t = NatsTransport.from_url(
        f"nats://alice:pw-s3cret@{HOST}:{port}?stream=S&token=tok-s3cret&connect_timeout=1"
    )
    with pytest.raises(TransportError) as err:
        await t.start()
    assert err.value.retryable
    seen = " ".join(
        [str(err.value), caplog.text, t.readiness.reason, t.options.display, repr(err.value)]
    )
    assert "s3cret" not in seen
    assert f"{HOST}:{port}" in str(err.value)


def test_options_come_from_url_then_environment() -> None:
    env = {
        "SAGAWIRE_NATS_USER": "envuser",
        "SAGAWIRE_NATS_PASSWORD": "envpw",
        "SAGAWIRE_NATS_CREDS": "/run/app.creds",
    }
    o = NatsOptions.from_url("tls://broker:4443?stream=ORDERS&max_deliver=3&ack_wait=5", env)
    assert (o.server, o.stream, o.max_deliver, o.ack_wait) == (
        "tls://broker:4443",
        "ORDERS",
        3,
        5.0,
    )
    assert (o.user, o.password, o.creds, o.tls) == ("envuser", "envpw", "/run/app.creds", True)
    o = NatsOptions.from_url("nats://me:pw@h?stream=S", env)
    assert (o.user, o.password, o.server) == ("me", "pw", "nats://h:4222")
    assert "pw" not in o.display
    assert NatsOptions.from_url("nats://sekrit@h", {}).token == "sekrit"
    with pytest.raises(ConfigError, match="max_deliver"):
        NatsOptions.from_url("nats://h?max_deliver=zero", {})
    with pytest.raises(ConfigError, match="stream"):
        NatsOptions.from_url("nats://h?stream=a.b", {})
    assert NatsOptions.from_url("nats://h", {}).ack_wait == 4.0
    with pytest.raises(ConfigError, match="ack_wait"):  # leases renewed every third of it
        NatsOptions.from_url("nats://h?ack_wait=0.5", {})


def test_consumer_names_and_subject_matching() -> None:
    assert consumer_name("orders-g") == "orders-g"
    assert consumer_name("a.b") != consumer_name("a_b")
    assert all(c not in consumer_name("a.b *>c") for c in ".*> ")
    assert subject_matches("a.*", "a.b") and not subject_matches("a.*", "a.b.c")
    assert subject_matches("a.>", "a.b.c") and not subject_matches("a.>", "a")
    assert missing_subjects(["a.>", "z"], ["a.b", "z", "y", "y"]) == ["y"]


async def test_publish_before_start_is_a_transport_error() -> None:
    t = NatsTransport.from_url("nats://127.0.0.1:4222?stream=S")
    with pytest.raises(TransportError, match="not started"):
        await t.publish([msg("x", 1)])
    await asyncio.sleep(0)


# -- subject_prefix ----------------------------------------------------------------


def test_subject_prefix_maps_destinations_both_ways() -> None:
    o = NatsOptions.from_url("nats://h?stream=S&subject_prefix=e2e.abc", {})
    assert o.subject("order.placed") == "e2e.abc.order.placed"
    assert o.subject(DEADLETTER) == f"e2e.abc.{DEADLETTER}"
    assert o.destination("e2e.abc.order.placed") == "order.placed"
    assert o.destination(f"e2e.abc.{DEADLETTER}") == DEADLETTER
    custom = NatsOptions.from_url("nats://h?subject_prefix=p&deadletter=dl.x", {})
    assert custom.subject(DEADLETTER) == "p.dl.x"
    assert custom.destination("p.dl.x") == DEADLETTER
    plain = NatsOptions.from_url("nats://h", {})
    assert plain.subject("a.b") == "a.b" and plain.destination("a.b") == "a.b"
    for bad in ("a..b", ".a", "a.", "a.*", "a.>", "a b"):
        with pytest.raises(ConfigError, match="subject_prefix"):
            NatsOptions.from_url(f"nats://h?subject_prefix={bad}", {})


async def test_subject_prefix_keeps_two_deployments_of_one_destination_apart(
    stream: str, names: Names
) -> None:
    """Two streams carry the same destination (and the default dead-letter subject)
    side by side; each sees only its own messages, under the unprefixed name."""
    other = unique("SW_")
    dest = names.dest("a")
    topo = Topology(consumes=(dest, DEADLETTER), group=names.group)
    first = NatsTransport.from_url(
        f"nats://{HOST}:{PORT}?stream={stream}&subject_prefix=p1.{stream}"
    )
    second = NatsTransport.from_url(
        f"nats://{HOST}:{PORT}?stream={other}&subject_prefix=p2.{other}"
    )
    nc = await nats.connect(f"nats://{HOST}:{PORT}")
    try:
        for t in (first, second):
            await t.start()
            await t.declare(topo)
        assert sorted((await stream_info(stream)).config.subjects or []) == sorted(
            [f"p1.{stream}.{dest}", f"p1.{stream}.{DEADLETTER}"]
        )
        raw = await nc.jetstream().subscribe(f"p1.{stream}.{dest}", ordered_consumer=True)
        await first.publish([msg(dest, 1)])
        await second.publish([msg(dest, 2)])
        assert (await raw.next_msg(timeout=5)).data == b'{"n":1}'
        async with Receiver(first, topo) as rx:
            (d,) = await rx.wait_for(1)
            assert (d.destination, d.body) == (dest, b'{"n":1}')
            await first.dead_letter(d, "test")
            await first.ack([d])
            _, dl = await rx.wait_for(2)
            assert (dl.destination, dl.body) == (DEADLETTER, b'{"n":1}')
            assert len(await rx.quiet(0.5)) == 2
            await first.ack([dl])
    finally:
        await nc.close()
        for t in (first, second):
            await t.close()
        nc = await nats.connect(f"nats://{HOST}:{PORT}")
        with contextlib.suppress(nats.js.errors.NotFoundError):
            await nc.jetstream().delete_stream(other)
        await nc.close()


# -- nats-server >= 2.10: one consumer filtering many subjects ------------------------


@pytest.fixture
async def modern_stream(modern_nats: ModernNats) -> AsyncIterator[str]:
    """A fresh stream on the throw-away modern server; deleted after the test."""
    name = unique("SW_")
    yield name
    nc = await nats.connect(f"nats://{modern_nats.host}:{modern_nats.port}")
    with contextlib.suppress(nats.js.errors.NotFoundError):
        await nc.jetstream().delete_stream(name)
    await nc.close()


class TestNatsTransportOnAModernServer(NatsRefusals, TransportContract, ReconnectContract):
    """The same contract where a group's consumer filters all its subjects at once."""

    @pytest.fixture
    def transport_factory(self, modern_stream: str, modern_nats: ModernNats) -> TransportFactory:
        async def make() -> NatsTransport:
            return NatsTransport.from_url(url(modern_stream, modern_nats.port))

        return make

    @pytest.fixture
    async def proxy(self, modern_nats: ModernNats) -> AsyncIterator[TcpProxy]:
        p = await TcpProxy(modern_nats.host, modern_nats.port).start()
        yield p
        await p.close()

    @pytest.fixture
    def proxied_factory(self, modern_stream: str) -> Callable[[TcpProxy], Awaitable[NatsTransport]]:
        async def make(proxy: TcpProxy) -> NatsTransport:
            return NatsTransport.from_url(url(modern_stream, proxy.port))

        return make


async def test_a_modern_server_gets_one_consumer_for_all_subjects(
    modern_stream: str, modern_nats: ModernNats, names: Names
) -> None:
    t = NatsTransport.from_url(url(modern_stream, modern_nats.port))
    await t.start()
    nc = await nats.connect(f"nats://{modern_nats.host}:{modern_nats.port}")
    try:
        topo = Topology(consumes=tuple(names.dest(c) for c in "abc"), group=names.group)
        await t.declare(topo)
        await t.declare(topo)  # idempotent
        (info,) = await nc.jetstream().consumers_info(modern_stream)
        assert sorted(info.config.filter_subjects or []) == sorted(topo.consumes)
        await t.publish([msg(names.dest(c), i) for i, c in enumerate("abc")])
        async with Receiver(t, topo, auto_ack=True) as rx:
            got = await rx.wait_for(3)
        assert sorted(d.destination for d in got) == sorted(topo.consumes)
    finally:
        await t.close()
        await nc.close()


async def test_start_new_skips_history_once_and_then_goes_on_from_where_it_was(
    stream: str, names: Names
) -> None:
    """A tracker joining a system with history (``start=new``) sees none of it; when it
    comes back, its consumer exists and gets what was published while it was away."""
    topo = Topology(consumes=(names.dest("a"),), group=names.group)
    producer = NatsTransport.from_url(url(stream))
    await producer.start()
    try:
        await producer.declare(Topology(consumes=(), produces=(names.dest("a"),)))
        await producer.publish([msg(names.dest("a"), i) for i in range(3)])  # history
        tracker = NatsTransport.from_url(url(stream, extra="start=new"))
        await tracker.start()
        await tracker.declare(topo)
        async with Receiver(tracker, topo) as rx:
            await producer.publish([msg(names.dest("a"), 3)])
            (d,) = await rx.wait_for(1)
            assert d.body == msg(names.dest("a"), 3).body
            assert len(await rx.quiet(0.5)) == 1
            await tracker.ack([d])
        await tracker.close()
        await producer.publish([msg(names.dest("a"), i) for i in (4, 5)])  # while away
        again = NatsTransport.from_url(url(stream, extra="start=new"))
        await again.start()
        try:
            await again.declare(topo)
            async with Receiver(again, topo) as rx2:
                got = await rx2.wait_for(2)
                assert len(await rx2.quiet(0.5)) == 2
                await again.ack(got)
            assert sorted(d.body for d in got) == sorted(
                msg(names.dest("a"), i).body for i in (4, 5)
            )
        finally:
            await again.close()
    finally:
        await producer.close()


def test_start_is_all_or_new() -> None:
    assert NatsOptions.from_url("nats://h?stream=S").start == "all"
    assert NatsOptions.from_url("nats://h?stream=S&start=new").start == "new"
    with pytest.raises(ConfigError, match="start='latest'"):
        NatsOptions.from_url("nats://h?stream=S&start=latest")
