"""RabbitMQ under faults, against the real broker: refusals, holding, recovery.

* A routing key over 255 bytes is refused before sending; a message the broker
  refuses with a 406 (which closes the channel and names no message, and, in a large
  window, the publishing connection) is found by publishing the unconfirmed again in
  halves; the rest arrive, and what the consumer holds is untouched.
* A consumer killed with -9 has its deliveries requeued at once.

Holding costs nothing until the broker's ``consumer_timeout`` (30 minutes by
default): nothing to test in seconds. Each test owns its exchange and queues.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import aiormq
import pytest

from adapters import _rabbitmq_publish
from adapters.base import OutgoingMessage, Topology
from adapters.rabbitmq import RabbitTransport
from schemas.errors import PublishRefused
from tests.support.services import require, unique
from tests.support.waiting import wait_until
from tests.transport.contract import Names, Receiver, msg
from tests.transport.holder import start_holder
from tests.transport.test_rabbitmq import ADMIN_URL, HOST, PORT, _delete

pytestmark = pytest.mark.broker("rabbitmq")


@pytest.fixture
def names() -> Names:
    p = unique("sw")
    return Names(prefix=p, group=f"{p}-g")


@pytest.fixture
def exchange() -> str:
    return unique("sw_")


@pytest.fixture
async def open_transport(
    names: Names, exchange: str
) -> AsyncIterator[Callable[[], Awaitable[RabbitTransport]]]:
    """Started transports on the test's exchange; closed, and everything deleted, after."""
    require("rabbitmq", HOST, PORT)
    opened: list[RabbitTransport] = []

    async def make() -> RabbitTransport:
        t = RabbitTransport.from_url(f"{ADMIN_URL}?exchange={exchange}&prefetch=1024")
        await t.start()
        opened.append(t)
        return t

    yield make
    for t in opened:
        with contextlib.suppress(Exception):
            await t.close()
    await _delete(exchange, [f"sagawire.{names.group}", f"{exchange}.deadletter"])


async def test_a_message_the_broker_refuses_is_found_and_what_it_holds_is_untouched(
    open_transport: Callable[[], Awaitable[RabbitTransport]],
    names: Names,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """RabbitMQ refuses with a 406 that closes the channel and names no message;
    in a 600-message window the frames written after it make the broker close the
    whole connection (504). The refused one is found by publishing the unconfirmed
    again in halves; the rest arrive; and the deliveries the consumer holds stay
    held, because publishing has a connection of its own. (The 406 here comes from
    an ``expiration`` property the broker rejects, put on one message by the test:
    the transport itself never sets one.)"""
    real = _rabbitmq_publish._properties

    def properties(m: OutgoingMessage) -> aiormq.spec.Basic.Properties:
        props = real(m)
        if m.message_id == "poison":
            props.expiration = "not-a-number"
        return props

    monkeypatch.setattr(_rabbitmq_publish, "_properties", properties)
    t = await open_transport()
    topo = Topology(consumes=(names.dest("a"),), group=names.group)
    await t.declare(topo)
    dest = names.dest("a")
    async with Receiver(t, topo) as rx:
        await t.publish([msg(dest, -1)])
        (held,) = await rx.wait_for(1)
        window = [msg(dest, i) for i in range(600)]
        window.insert(300, OutgoingMessage(dest, b"{}", "poison"))
        with pytest.raises(PublishRefused) as refused:
            await t.publish(window)
        assert list(refused.value.refused) == ["poison"]
        assert "invalid expiration" in refused.value.refused["poison"]
        expected = {m.body for m in window if m.message_id != "poison"}

        async def all_arrived() -> bool:  # (and copies of some: routed, unconfirmed)
            return {d.body for d in rx.deliveries[1:]} >= expected

        await wait_until(all_arrived, timeout=30)
        got = await rx.quiet(0.5)
        assert {d.body for d in got[1:]} == expected
        assert held.delivery_count == 1
        assert held.body not in {d.body for d in got[1:]}, "a held delivery came again"
        await t.ack(got)
    assert t.readiness.ready


@pytest.mark.slow
async def test_a_message_over_max_message_size_is_refused_by_the_broker(
    open_transport: Callable[[], Awaitable[RabbitTransport]], names: Names
) -> None:
    """The broker's own limit (``max_message_size``, 128 MiB by default on 3.x,
    16 MiB on 4.x): a 406 naming the sizes. (Sends 128 MiB: about a second.)"""
    t = await open_transport()
    topo = Topology(consumes=(names.dest("a"),), group=names.group)
    await t.declare(topo)
    dest = names.dest("a")
    huge = OutgoingMessage(dest, b"x" * (128 * 1024 * 1024 + 1), "huge")
    async with Receiver(t, topo) as rx:
        with pytest.raises(PublishRefused) as refused:
            await t.publish([msg(dest, 1), huge, msg(dest, 2)])
        assert "is larger than configured max size" in refused.value.refused["huge"]
        got = await rx.wait_for(2)
        await t.ack(got)
        assert sorted(d.body for d in got) == [msg(dest, 1).body, msg(dest, 2).body]


async def test_a_killed_consumers_deliveries_are_requeued_at_once(
    open_transport: Callable[[], Awaitable[RabbitTransport]],
    names: Names,
    exchange: str,
) -> None:
    """kill -9 closes the process's sockets: the broker requeues its unacked
    deliveries as soon as it sees the connection go, with no timeout to wait for."""
    t = await open_transport()
    topo = Topology(consumes=(names.dest("a"),), group=names.group)
    await t.declare(topo)
    dest = names.dest("a")
    await t.publish([msg(dest, i) for i in range(5)])
    url = f"{ADMIN_URL}?exchange={exchange}"
    async with start_holder(url, names.group, dest, 5) as holder:
        holder.kill()
        killed = time.monotonic()
        await holder.wait()
        async with Receiver(t, topo) as rx:
            got = await rx.wait_for(5, timeout=10)
            elapsed = time.monotonic() - killed
            await t.ack(got)
    print(f"RabbitMQ: a killed consumer's 5 deliveries redelivered {elapsed:.2f}s after kill -9")
    assert elapsed < 5.0
    assert {d.delivery_count for d in got} == {2}  # marked redelivered
