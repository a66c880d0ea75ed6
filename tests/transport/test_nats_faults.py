"""NATS JetStream under faults, against real servers: refusals, holding, recovery.

* A message the server would choke on (over ``max_payload``, a non-literal subject,
  an HPUB line over ``max_control_line``) is refused before sending, one the stream
  refuses in its publish ack (headers over 64 KiB, over ``max_msg_size``) is named from
  that ack; the rest of the call is published, the connection stays up.
* A delivery the engine holds outlives ``ack_wait`` (in-progress acks) without being
  delivered again or counted twice, and a durable consumer of an older sidecar gets
  the new, short ``ack_wait`` at declare.
* A consumer killed with -9 has its messages delivered to the next one within 5 s.

Each test owns its stream on the shared server (or the modern one) and deletes it.
"""

from __future__ import annotations

import asyncio
import time

import nats
import pytest
from nats.js import api

from adapters._nats_options import NatsOptions
from adapters._nats_topology import consumer_name
from adapters.base import DEADLETTER, OutgoingMessage, Topology, close_stream
from adapters.nats import NatsTransport
from schemas.errors import PublishRefused
from tests.support.services import require, unique
from tests.support.waiting import wait_until
from tests.transport.contract import Names, Receiver, msg
from tests.transport.holder import start_holder
from tests.transport.test_nats import HOST, PORT, names, stream, stream_info, transport, url

__all__ = ["names", "stream", "transport"]  # fixtures, used by name


# -- refusals ---------------------------------------------------------------------


async def test_what_the_server_would_choke_on_is_refused_and_the_rest_published(
    transport: NatsTransport, names: Names
) -> None:
    """Checked before sending, because the server answers these by closing the
    connection (a body over max_payload, an HPUB line over max_control_line) or by
    mis-routing them (a subject that is not literal)."""
    dest = names.dest("a")
    topo = Topology(consumes=(dest,), group=names.group)
    await transport.declare(topo)
    bad = {
        "too-big": (OutgoingMessage(dest, b"x" * 1_100_000, "too-big"), "max_payload"),
        "wildcard": (OutgoingMessage(f"{dest}.*", b"{}", "wildcard"), "not a valid NATS subject"),
        "gap": (OutgoingMessage(f"{dest}..b", b"{}", "gap"), "not a valid NATS subject"),
        "space": (OutgoingMessage(f"{dest} b", b"{}", "space"), "not a valid NATS subject"),
        "long": (OutgoingMessage(f"{dest}.{'s' * 4000}", b"{}", "long"), "max_control_line"),
    }
    good = [msg(dest, i, key="k") for i in range(3)]
    bads = [m for m, _ in bad.values()]
    with pytest.raises(PublishRefused) as refused:
        await transport.publish([good[0], *bads[:3], good[1], *bads[3:], good[2]])
    assert set(refused.value.refused) == set(bad)
    for message_id, (_, phrase) in bad.items():
        assert phrase in refused.value.refused[message_id], refused.value.refused[message_id]
    assert transport.readiness.ready
    async with Receiver(transport, topo) as rx:
        got = await rx.wait_for(3)
        assert [d.body for d in got] == [m.body for m in good]
        await transport.ack(got)


async def test_a_message_over_the_streams_max_msg_size_is_refused_by_the_stream(
    stream: str, names: Names
) -> None:
    dest = names.dest("a")
    nc = await nats.connect(f"nats://{HOST}:{PORT}")
    await nc.jetstream().add_stream(
        name=stream,
        subjects=[dest, f"{DEADLETTER}.{stream}"],
        storage=api.StorageType.FILE,
        max_msg_size=1000,
    )
    await nc.close()
    t = NatsTransport.from_url(url(stream))
    await t.start()
    try:
        await t.declare(Topology(consumes=(dest,), group=names.group))
        big = OutgoingMessage(dest, b"x" * 2000, "big")
        with pytest.raises(PublishRefused) as refused:
            await t.publish([msg(dest, 1), big, msg(dest, 2)])
        assert (
            "message size exceeds maximum allowed (err_code 10054" in refused.value.refused["big"]
        )
        assert (await stream_info(stream)).state.messages == 2
    finally:
        await t.close()


# -- holding and recovery -----------------------------------------------------------


async def consumer_info(stream: str, group: str, port: int = PORT) -> api.ConsumerInfo:
    nc = await nats.connect(f"nats://{HOST}:{port}")
    try:
        return await nc.jetstream().consumer_info(stream, consumer_name(group))
    finally:
        await nc.close()


async def test_a_held_delivery_outlives_three_ack_waits_and_counts_once(
    stream: str, names: Names
) -> None:
    """The engine takes one batch and then nothing for 3.5 ack_waits (its store is
    down), while another replica of the group keeps asking for messages: in-progress
    acks keep everything the transport holds, handed out or fetched ahead, so nothing
    goes to the other replica and no delivery is counted twice."""
    dest = names.dest("a")
    topo = Topology(consumes=(dest,), group=names.group)
    t = NatsTransport.from_url(url(stream, extra="ack_wait=1"))
    other = NatsTransport.from_url(url(stream, extra="ack_wait=1"))
    await t.start()
    await other.start()
    stream_of_batches = t.consume(topo, max_batch=3)
    try:
        await t.declare(topo)
        await t.publish([msg(dest, i, key="k") for i in range(6)])
        held = await asyncio.wait_for(anext(stream_of_batches), 10)

        async def fetched_ahead() -> bool:
            return (await consumer_info(stream, names.group)).num_ack_pending == 6

        await wait_until(fetched_ahead)
        async with Receiver(other, topo) as rx:
            await asyncio.sleep(3.5)
            assert rx.deliveries == [], "a held message went to the other replica"
        info = await consumer_info(stream, names.group)
        assert (info.num_redelivered, info.num_ack_pending) == (0, 6)
        rest = await asyncio.wait_for(anext(stream_of_batches), 10)
        everything = held + rest
        assert sorted(d.body for d in everything) == sorted(msg(dest, i).body for i in range(6))
        assert {d.delivery_count for d in everything} == {1}
        await t.ack(everything)
        assert (await consumer_info(stream, names.group)).num_ack_pending == 0
    finally:
        await close_stream(stream_of_batches)
        await t.close()
        await other.close()


@pytest.mark.parametrize("server", ["shared", "modern"])
async def test_an_existing_consumer_gets_the_new_ack_wait_at_declare(
    request: pytest.FixtureRequest, names: Names, server: str
) -> None:
    """A durable consumer created by an older sidecar (ack_wait 30 s) would keep a
    killed process's messages for 30 s: declare updates it in place."""
    port = PORT
    if server == "modern":
        port = request.getfixturevalue("modern_nats").port
    else:
        require("nats", HOST, PORT)
    name = unique("SW_")
    dest = names.dest("a")
    nc = await nats.connect(f"nats://{HOST}:{port}")
    js = nc.jetstream()
    t = NatsTransport.from_url(url(name, port))
    try:
        await js.add_stream(name=name, subjects=[dest, f"{DEADLETTER}.{name}"])
        await js.add_consumer(
            name,
            api.ConsumerConfig(
                name=consumer_name(names.group),
                durable_name=consumer_name(names.group),
                ack_policy=api.AckPolicy.EXPLICIT,
                ack_wait=30,
                max_deliver=10,
                max_ack_pending=1024,
                filter_subject=dest,
            ),
        )
        await t.start()
        await t.declare(Topology(consumes=(dest,), group=names.group))
        info = await consumer_info(name, names.group, port)
        assert info.config.ack_wait == NatsOptions.from_url("nats://h", {}).ack_wait == 4.0
    finally:
        await t.close()
        await js.delete_stream(name)
        await nc.close()


async def test_a_killed_consumers_messages_come_back_within_five_seconds(
    stream: str, names: Names
) -> None:
    """A sidecar killed with -9 gives nothing back: its messages wait for ack_wait (4 s
    by default) from their last in-progress ack, then go to the restarted one."""
    dest = names.dest("a")
    topo = Topology(consumes=(dest,), group=names.group)
    t = NatsTransport.from_url(url(stream))
    await t.start()
    try:
        await t.declare(topo)
        await t.publish([msg(dest, i) for i in range(5)])
        async with start_holder(url(stream), names.group, dest, 5) as holder:
            await asyncio.sleep(1.0)  # a lease or two renewed meanwhile
            holder.kill()
            killed = time.monotonic()
            await holder.wait()
            async with Receiver(t, topo) as rx:
                got = await rx.wait_for(5, timeout=10)
                elapsed = time.monotonic() - killed
                await t.ack(got)
        print(f"NATS: a killed consumer's 5 messages redelivered {elapsed:.2f}s after kill -9")
        assert elapsed < 5.0
        assert {d.delivery_count for d in got} == {2}
    finally:
        await t.close()
