"""The client library's promises, written once and run on every transport.

Subclass :class:`ClientContract` in ``test_<broker>.py`` and provide the ``broker_url``
fixture: a transport URL whose names (stream, exchange, topic prefix) belong to the
test, cleaned up afterwards. Message types come from the ``names`` fixture, unique per
test too (a NATS subject belongs to one stream only). ``crosses_processes`` says whether
a service in another process can share the broker (not the in-memory one);
``drops_republished`` whether the broker itself drops a message published again with
the same id within a window (JetStream's ``Nats-Msg-Id``): there a first reply sent
again does not land twice, which is what a copy's sender needs anyway (the first is in
the stream).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from pydantic import BaseModel

from adapters import open_transport
from adapters.base import Delivery, Topology, Transport
from orchestrator.client import Emit, Publisher, Service, new_event, to_message
from schemas.codec import decode
from schemas.envelope import Envelope
from tests.support.services import unique

TIMEOUT = 30.0
ROOT = Path(__file__).resolve().parents[2]


class Charge(BaseModel):
    order_id: str
    amount_cents: int


@dataclass
class Names:
    prefix: str

    @property
    def command(self) -> str:
        return f"{self.prefix}.payment.charge"

    @property
    def reply(self) -> str:
        return f"{self.prefix}.payment.charged"

    def group(self, what: str) -> str:
        return f"{self.prefix}-{what}"


class Watcher:
    """A raw consumer of ``destinations`` as its own group, acking what it receives."""

    def __init__(self, transport: Transport, destinations: tuple[str, ...], group: str) -> None:
        self.transport = transport
        self.topology = Topology(consumes=destinations, group=group)
        self.received: list[Delivery] = []
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.transport.start()
        await self.transport.declare(self.topology)
        self._task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        async for batch in self.transport.consume(self.topology):
            self.received.extend(batch)
            await self.transport.ack(batch)
            self._changed.set()

    async def wait_for(self, n: int, timeout: float = TIMEOUT) -> list[Envelope]:
        async with asyncio.timeout(timeout):
            while len(self.received) < n:
                self._changed.clear()
                await self._changed.wait()
        return [decode(d.body) for d in self.received]

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        await self.transport.close()


def payment_service(url: str, names: Names, **kwargs: object) -> tuple[Service, list[Charge]]:
    """A payment service on ``url`` that charges (records) and answers ``charged``."""
    service = Service("payment", url, group=names.group("payment"), **kwargs)  # type: ignore[arg-type]
    calls: list[Charge] = []

    @service.on(names.command, Charge, emits=[names.reply])
    def charge(cmd: Charge, env: Envelope) -> Emit:
        calls.append(cmd)
        return Emit(names.reply, {"order_id": cmd.order_id, "payment_id": f"p-{env.id}"})

    return service, calls


@contextlib.asynccontextmanager
async def running(service: Service) -> AsyncIterator[asyncio.Task[None]]:
    await service.start()
    task = asyncio.ensure_future(service.run())
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await service.close()


class ClientContract:
    """What every transport must give a service built with the client library."""

    crosses_processes = True
    drops_republished = False

    def replies_expected(self, sent: int) -> int:
        """How many replies a watcher sees when ``sent`` were published, the same first."""
        return 1 if self.drops_republished else sent

    @pytest.fixture
    def names(self) -> Names:
        return Names(unique("c"))

    @pytest.fixture
    async def watcher(self, broker_url: str, names: Names) -> AsyncIterator[Watcher]:
        w = Watcher(open_transport(broker_url), (names.reply,), names.group("watch"))
        await w.start()
        yield w
        await w.close()

    @pytest.fixture
    async def publisher(self, broker_url: str, names: Names) -> AsyncIterator[Publisher]:
        async with Publisher(broker_url, source="sagawire/order", declares=[names.command]) as p:
            yield p

    async def test_a_command_is_handled_and_answered_in_its_saga(
        self, broker_url: str, names: Names, watcher: Watcher, publisher: Publisher
    ) -> None:
        service, calls = payment_service(broker_url, names)
        async with running(service):
            sent = await publisher.publish(
                names.command, Charge(order_id="o-1", amount_cents=5), correlationid="o-1"
            )
            (reply,) = await watcher.wait_for(1)
        assert calls == [Charge(order_id="o-1", amount_cents=5)]
        assert (reply.type, reply.source, reply.correlationid) == (names.reply, "payment", "o-1")
        assert reply.causationid == sent.id and reply.data == {
            "order_id": "o-1",
            "payment_id": f"p-{sent.id}",
        }
        assert watcher.received[0].key in ("o-1", None)  # keyed where the broker has keys

    async def test_a_copy_is_answered_with_the_first_reply(
        self, broker_url: str, names: Names, watcher: Watcher, publisher: Publisher
    ) -> None:
        """The same command again (a saga's re-send: same source and id, another time and
        attempt) is not carried out again; the first reply goes out again, byte for byte."""
        service, calls = payment_service(broker_url, names)
        async with running(service):
            for attempt in (1, 2):
                await resend(publisher, names.command, attempt)
                await watcher.wait_for(self.replies_expected(attempt))
            await until(lambda: service.stats.duplicates == 1)
        assert len(calls) == 1 and service.stats.handled == 1
        assert len({d.body for d in watcher.received}) == 1

    async def test_nothing_is_acknowledged_before_the_handler_is_done(
        self, broker_url: str, names: Names, watcher: Watcher, publisher: Publisher
    ) -> None:
        """A service that dies while its handler runs loses nothing: the next one gets
        the message and answers it."""
        stuck = Service("payment", broker_url, group=names.group("payment"))
        entered = asyncio.Event()

        @stuck.on(names.command, Charge, emits=[names.reply])
        async def never(cmd: Charge, env: Envelope) -> Emit:
            entered.set()
            await asyncio.Event().wait()
            raise AssertionError("unreachable")

        async with running(stuck):
            await publisher.publish(names.command, {"order_id": "o-1", "amount_cents": 5})
            await asyncio.wait_for(entered.wait(), TIMEOUT)
        assert stuck.stats.handled == 0
        service, calls = payment_service(broker_url, names)
        async with running(service):
            (reply,) = await watcher.wait_for(1)
        assert len(calls) == 1 and reply.type == names.reply

    async def test_a_durable_memory_answers_a_copy_after_a_kill(
        self, broker_url: str, names: Names, watcher: Watcher, publisher: Publisher, tmp_path: Path
    ) -> None:
        """kill -9 of the service between the command and its copy: the copy gets the
        first reply, from the SQLite memory, and the work is done once."""
        if not self.crosses_processes:
            pytest.skip("the in-memory broker lives in one process")
        effects = tmp_path / "effects.txt"
        replies = f"sqlite:///{tmp_path / 'replies.db'}"
        child = ServiceProcess(broker_url, replies, names, effects)
        await child.start()
        try:
            await resend(publisher, names.command, 1)
            await watcher.wait_for(1)
            await child.kill()
            await child.start()
            await resend(publisher, names.command, 2)
            await watcher.wait_for(self.replies_expected(2))
            await until(lambda: child.answered_copies() == 1)
        finally:
            await child.kill()
        assert len({d.body for d in watcher.received}) == 1
        assert effects.read_text().splitlines() == ["cmd-1"]


async def resend(publisher: Publisher, type: str, attempt: int) -> None:
    """Command ``cmd-1`` as a saga sends it the ``attempt``-th time: the same id and data,
    each attempt under a broker message id of its own (``<id>#<attempt>``), as the
    engine's outbox does, so a broker that de-duplicates keeps the re-send."""
    env = new_event(
        type,
        {"order_id": "o-1", "amount_cents": 5},
        source=publisher.source,
        id="cmd-1",
        correlationid="o-1",
    ).model_copy(update={"attempt": attempt})
    message = to_message(env)
    if attempt > 1:
        message.message_id = f"{env.id}#{attempt}"
    await publisher.transport.publish([message])


async def until(condition: Callable[[], bool], timeout: float = TIMEOUT) -> None:
    """Poll ``condition`` (a counter, maybe another process's, has no event to wait on)."""
    async with asyncio.timeout(timeout):
        while not condition():  # noqa: ASYNC110
            await asyncio.sleep(0.02)


class ServiceProcess:
    """``tests.client.child``: the payment service in a process of its own."""

    def __init__(self, broker_url: str, replies: str, names: Names, effects: Path) -> None:
        self.copies = effects.with_suffix(".copies")
        self.args = [broker_url, replies, names.prefix, str(effects), str(self.copies)]
        self.proc: asyncio.subprocess.Process | None = None

    def answered_copies(self) -> int:
        """Copies the child answered from its memory (it writes its count to a file)."""
        return int(self.copies.read_text() or 0) if self.copies.exists() else 0

    async def start(self) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            *(sys.executable, "-m", "tests.client.child", *self.args),
            cwd=ROOT,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        assert self.proc.stdout is not None
        line = await asyncio.wait_for(self.proc.stdout.readline(), TIMEOUT)
        if line.strip() != b"ready":
            rest = await asyncio.wait_for(self.proc.stdout.read(), TIMEOUT)
            raise AssertionError(f"service process did not start: {line!r} {rest!r}")

    async def kill(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()
