"""Transport contract tests, written once and run against every transport.

Subclass :class:`TransportContract` in ``test_<broker>.py`` and provide the
``transport_factory`` fixture: an async callable returning a *new, unstarted*
transport connected to the broker under test (a new connection each call, so a
test can simulate a crash by closing one without acking). Each test uses fresh,
uniquely named destinations and group, from the ``names`` fixture; the subclass
cleans them up (``cleanup`` hook).

Each subclass also says how its broker refuses a message for good
(:meth:`TransportContract.refused_message`): the contract checks that the refusal is
named with the broker's reason and that the messages around it are delivered.

Brokers with a network connection also subclass :class:`ReconnectContract`,
whose ``proxied_factory`` fixture returns a transport reaching the broker through
a :class:`tests.support.proxy.TcpProxy` the test can cut.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import pytest

from adapters.base import (
    DEADLETTER,
    HEADER_ORIGIN,
    HEADER_REASON,
    Delivery,
    OutgoingMessage,
    Topology,
    Transport,
)
from schemas.errors import PublishRefused
from tests.support.proxy import TcpProxy
from tests.support.services import unique
from tests.support.waiting import wait_until

TransportFactory = Callable[[], Awaitable[Transport]]

RECEIVE_TIMEOUT = 20.0


@dataclass
class Names:
    prefix: str
    group: str

    def dest(self, suffix: str) -> str:
        return f"{self.prefix}.{suffix}"


class Receiver:
    """Consumes in the background and collects deliveries (without acking)."""

    def __init__(
        self, transport: Transport, topology: Topology, max_batch: int = 64, auto_ack: bool = False
    ) -> None:
        self.auto_ack = auto_ack
        self.transport = transport
        self.topology = topology
        self.max_batch = max_batch
        self.deliveries: list[Delivery] = []
        self.batches: list[list[Delivery]] = []
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Receiver:
        self._task = asyncio.ensure_future(self._run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None

    async def _run(self) -> None:
        async for batch in self.transport.consume(self.topology, max_batch=self.max_batch):
            self.batches.append(batch)
            self.deliveries.extend(batch)
            if self.auto_ack:
                await self.transport.ack(batch)
            self._changed.set()

    async def wait_for(self, n: int, timeout: float = RECEIVE_TIMEOUT) -> list[Delivery]:
        async def _wait() -> None:
            while len(self.deliveries) < n:
                self._changed.clear()
                await self._changed.wait()

        await asyncio.wait_for(_wait(), timeout)
        return self.deliveries[:n]

    async def quiet(self, seconds: float = 1.0) -> list[Delivery]:
        """Wait ``seconds`` and return everything received so far."""
        await asyncio.sleep(seconds)
        return list(self.deliveries)


def msg(dest: str, i: int, key: str | None = None) -> OutgoingMessage:
    return OutgoingMessage(
        destination=dest,
        body=f'{{"n":{i}}}'.encode(),
        message_id=f"m-{dest}-{i}",
        key=key,
        headers={"content-type": "application/cloudevents+json", "x-n": str(i)},
    )


class TransportContract:
    """The behaviour every transport must have. Subclasses provide fixtures."""

    @pytest.fixture
    def names(self) -> Names:
        p = unique("sw")
        return Names(prefix=p, group=f"{p}-g")

    @pytest.fixture
    async def open_transport(
        self, transport_factory: TransportFactory
    ) -> AsyncIterator[Callable[[], Awaitable[Transport]]]:
        opened: list[Transport] = []

        async def _open() -> Transport:
            t = await transport_factory()
            await t.start()
            opened.append(t)
            return t

        yield _open
        for t in opened:
            with contextlib.suppress(Exception):
                await t.close()

    def topology(self, names: Names, *consumes: str) -> Topology:
        return Topology(
            consumes=tuple(names.dest(c) for c in consumes),
            produces=(),
            group=names.group,
        )

    def refused_message(self, names: Names) -> tuple[OutgoingMessage, str]:
        """A message this broker refuses for good, and a phrase of the reason given."""
        raise NotImplementedError

    async def test_publish_then_consume_keeps_bytes_and_headers(
        self, open_transport: Callable[[], Awaitable[Transport]], names: Names
    ) -> None:
        t = await open_transport()
        topo = self.topology(names, "a")
        await t.declare(topo)
        assert t.readiness.ready, t.readiness.reason
        async with Receiver(t, topo) as rx:
            await t.publish([msg(names.dest("a"), 1, key="k1")])
            (d,) = await rx.wait_for(1)
            assert d.body == b'{"n":1}'
            assert d.destination == names.dest("a")
            assert d.headers.get("x-n") == "1"
            await t.ack([d])

    async def test_declare_is_idempotent(
        self, open_transport: Callable[[], Awaitable[Transport]], names: Names
    ) -> None:
        t = await open_transport()
        topo = self.topology(names, "a", "b")
        await t.declare(topo)
        await t.declare(topo)

    async def test_only_consumed_destinations_arrive(
        self, open_transport: Callable[[], Awaitable[Transport]], names: Names
    ) -> None:
        t = await open_transport()
        topo = Topology(
            consumes=(names.dest("in"),), produces=(names.dest("out"),), group=names.group
        )
        await t.declare(topo)
        async with Receiver(t, topo) as rx:
            await t.publish([msg(names.dest("out"), 1), msg(names.dest("in"), 2)])
            (d,) = await rx.wait_for(1)
            assert d.body == b'{"n":2}'
            assert len(await rx.quiet(1.0)) == 1
            await t.ack([d])

    async def test_order_is_kept_per_key(
        self, open_transport: Callable[[], Awaitable[Transport]], names: Names
    ) -> None:
        t = await open_transport()
        topo = self.topology(names, "a")
        await t.declare(topo)
        n = 200
        async with Receiver(t, topo) as rx:
            await t.publish([msg(names.dest("a"), i, key=f"k{i % 3}") for i in range(n)])
            got = await rx.wait_for(n)
            await t.ack(got)
        for k in range(3):
            seq = [
                int(d.body[5:-1])
                for d in got
                if d.key in (None, f"k{k}") and int(d.body[5:-1]) % 3 == k
            ]
            assert seq == sorted(seq), f"key k{k} out of order"
        assert len(rx.batches) <= n  # batches are allowed, never required

    async def test_unacked_is_redelivered_after_a_crash(
        self, open_transport: Callable[[], Awaitable[Transport]], names: Names
    ) -> None:
        first = await open_transport()
        topo = self.topology(names, "a")
        await first.declare(topo)
        async with Receiver(first, topo) as rx:
            await first.publish([msg(names.dest("a"), 1), msg(names.dest("a"), 2)])
            got = await rx.wait_for(2)
            await first.ack([got[0]])  # the second is "in flight" when we crash
        await first.close()
        second = await open_transport()
        async with Receiver(second, topo) as rx2:
            (again,) = await rx2.wait_for(1)
            assert again.body == got[1].body  # the unacked one, whichever came second
            await second.ack([again])
            assert len(await rx2.quiet(1.0)) == 1, "acked message came back"

    async def test_nack_redelivers(
        self, open_transport: Callable[[], Awaitable[Transport]], names: Names
    ) -> None:
        t = await open_transport()
        topo = self.topology(names, "a")
        await t.declare(topo)
        async with Receiver(t, topo) as rx:
            await t.publish([msg(names.dest("a"), 7)])
            (d,) = await rx.wait_for(1)
            await t.nack([d], delay=0.2)
            _, again = await rx.wait_for(2)
            assert again.body == d.body
            assert again.delivery_count >= 2
            await t.ack([again])

    async def test_dead_letter_keeps_original_bytes_and_says_why(
        self, open_transport: Callable[[], Awaitable[Transport]], names: Names
    ) -> None:
        t = await open_transport()
        topo = self.topology(names, "a")
        dl_topo = Topology(consumes=(DEADLETTER,), group=names.group + "-dl")
        await t.declare(topo)
        await t.declare(dl_topo)
        async with Receiver(t, topo) as rx:
            raw = b"\xff\x00 not json"
            await t.publish(
                [OutgoingMessage(names.dest("a"), raw, message_id="bad-1", headers={"x-a": "1"})]
            )
            (d,) = await rx.wait_for(1)
            await t.dead_letter(d, "body is not JSON")
            await t.ack([d])
        dl_reader = await open_transport()
        async with Receiver(dl_reader, dl_topo) as dl:
            deadline = asyncio.get_running_loop().time() + RECEIVE_TIMEOUT
            mine: list[Delivery] = []
            while not mine:
                assert asyncio.get_running_loop().time() < deadline, "no dead letter arrived"
                await asyncio.sleep(0.1)
                mine = [x for x in dl.deliveries if x.headers.get(HEADER_ORIGIN) == names.dest("a")]
            assert mine[0].body == raw
            assert mine[0].headers[HEADER_REASON] == "body is not JSON"
            await dl_reader.ack(dl.deliveries)

    async def test_a_burst_is_delivered_in_bounded_batches(
        self, open_transport: Callable[[], Awaitable[Transport]], names: Names
    ) -> None:
        t = await open_transport()
        topo = self.topology(names, "a")
        await t.declare(topo)
        n = 1000
        async with Receiver(t, topo, max_batch=50, auto_ack=True) as rx:
            await t.publish([msg(names.dest("a"), i, key=f"k{i % 10}") for i in range(n)])
            got = await rx.wait_for(n, timeout=60)
            assert all(len(b) <= 50 for b in rx.batches)
        assert sorted(int(d.body[5:-1]) for d in got) == list(range(n))

    async def test_a_refused_message_is_named_and_its_neighbours_are_delivered(
        self, open_transport: Callable[[], Awaitable[Transport]], names: Names
    ) -> None:
        t = await open_transport()
        topo = self.topology(names, "a")
        await t.declare(topo)
        bad, reason = self.refused_message(names)
        before, after = msg(names.dest("a"), 1, key="k"), msg(names.dest("a"), 2, key="k")
        async with Receiver(t, topo) as rx:
            with pytest.raises(PublishRefused) as refused:
                await t.publish([before, bad, after])
            assert set(refused.value.refused) == {bad.message_id}
            assert reason in refused.value.refused[bad.message_id]
            assert not refused.value.retryable
            got = await rx.wait_for(2)
            assert [d.body for d in got] == [before.body, after.body]
            assert len(await rx.quiet(0.5)) == 2
            await t.ack(got)
            await t.publish([msg(names.dest("a"), 3)])  # and the transport goes on
            (_, _, third) = await rx.wait_for(3)
            await t.ack([third])
        assert t.readiness.ready, t.readiness.reason


class ReconnectContract:
    """Connection loss is survived: readiness drops, consuming resumes, nothing is lost."""

    async def test_reconnects_after_connection_loss(
        self,
        proxied_factory: Callable[[TcpProxy], Awaitable[Transport]],
        transport_factory: TransportFactory,
        proxy: TcpProxy,
        names: Names,
    ) -> None:
        direct = await transport_factory()
        await direct.start()
        via = await proxied_factory(proxy)
        await via.start()
        topo = Topology(consumes=(names.dest("a"),), group=names.group)
        try:
            await via.declare(topo)
            async with Receiver(via, topo) as rx:
                await direct.publish([msg(names.dest("a"), 1)])
                (d1,) = await rx.wait_for(1)
                await via.ack([d1])
                await proxy.cut()
                for _ in range(100):
                    if not via.readiness.ready:
                        break
                    await asyncio.sleep(0.1)
                assert not via.readiness.ready, "readiness still true with the broker gone"
                await direct.publish([msg(names.dest("a"), 2)])
                proxy.resume()
                got = await rx.wait_for(2, timeout=60)
                assert got[1].body == b'{"n":2}'
                await via.ack([got[1]])

                async def ready() -> bool:  # every connection of it back (RabbitMQ has two)
                    return via.readiness.ready

                await wait_until(ready, timeout=10)
        finally:
            await via.close()
            await direct.close()
