"""Kafka replicas of one consumer group: how the 12 default partitions are shared, who
owns what (``KafkaTransport.owned``), and what happens when a replica is killed with -9.

Replicas here are transports in this process (A, B) and one in a child process (C),
which the test kills with SIGKILL: nothing is given back, no LeaveGroup is sent, as
when a sidecar dies. The child is this module run as a script (``python -m
tests.e2e.test_kafka_replicas URL GROUP TOPIC``): it consumes, acks nothing, and
prints ``owned <partitions>`` whenever its assignment changes and ``held <n>`` as
deliveries arrive.

The numbers these tests print are the ones docs/kafka.md quotes (Tansu 0.6, the
shipped defaults: ``session_timeout_ms=2000``, heartbeat every 666 ms).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka import errors as kafka_errors

from adapters import _kafka_consumer
from adapters._kafka_settings import KafkaSettings
from adapters.base import Topology, close_stream
from adapters.kafka import KafkaTransport
from schemas.errors import TransportError
from tests.support.kafka import Tansu, delete_topics
from tests.support.services import unique
from tests.transport.contract import Receiver, msg

ROOT = Path(__file__).resolve().parents[2]
FAILOVER = 5.0
"""Issue 19: a killed replica's share moves to the others within 5 s (3.0-4.1 s
measured on Tansu with the default 2 s session; 9.2-9.8 s with the old 6 s)."""
JOIN_PAUSE = 2.5
"""How long the others may own nothing while a replica joins. Issue 19 asks for a
second; Tansu holds every rejoin for at least 1 s (1.0-2.0 s measured, 3.0-4.1 s
with the old 6 s session), so this only catches a return to the long session."""


def _url(broker: Tansu) -> str:
    """The broker with sagawire's defaults: no test tuning of the session."""
    return f"kafka://127.0.0.1:{broker.port}"


def _numbers(owned: list[str]) -> set[int]:
    return {int(p.rpartition("[")[2][:-1]) for p in owned}


# -- no broker needed -------------------------------------------------------------------


def test_defaults_share_evenly_and_fail_over_within_five_seconds() -> None:
    s = KafkaSettings.from_url("kafka://h:9092", env={})
    assert s.partitions == 12 and all(12 % n == 0 for n in (1, 2, 3, 4, 6))
    assert (s.session_timeout_ms, s.heartbeat_interval_ms, s.session_fallback_ms) == (
        2000,
        666,
        6000,
    )
    chosen = KafkaSettings.from_url("kafka://h:9092?session_timeout_ms=2000", env={})
    assert chosen.session_fallback_ms is None, "a session the URL chose is not replaced"
    static = KafkaSettings.from_url("kafka://h:9092", env={"SAGAWIRE_KAFKA_INSTANCE_ID": "p-0"})
    assert (static.session_timeout_ms, static.session_fallback_ms) == (6000, None), (
        "a static member's session must outlast a restart"
    )


def test_owned_is_empty_when_not_consuming() -> None:
    assert KafkaTransport.from_url("kafka://127.0.0.1:1").owned() == []


# -- replicas on the test broker -------------------------------------------------------


class _Child:
    """Replica C: this module as a script; see the module docstring."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.owned: set[int] = set()
        self.held = 0
        self._changed = asyncio.Event()
        self._reader = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        assert self.process.stdout is not None
        async for raw in self.process.stdout:
            kind, _, rest = raw.decode().strip().partition(" ")
            if kind == "owned":
                self.owned = {int(p) for p in rest.split(",") if p}
            elif kind == "held":
                self.held = int(rest)
            self._changed.set()

    async def kill(self) -> float:
        self.process.kill()
        killed = time.monotonic()
        await self.process.wait()
        self._reader.cancel()
        return killed


@contextlib.asynccontextmanager
async def _child(url: str, group: str, topic: str) -> AsyncIterator[_Child]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.e2e.test_kafka_replicas",
        url,
        group,
        topic,
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
    )
    child = _Child(process)
    try:
        yield child
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def _until(check: Callable[[], bool], timeout: float, what: str) -> float:
    """Poll ``check`` every 10 ms; the time it first held."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout}s: {what}")
        await asyncio.sleep(0.01)
    return time.monotonic()


class _Emptiness:
    """Longest stretch during which a transport owned nothing, sampled every 10 ms."""

    def __init__(self, transport: KafkaTransport) -> None:
        self.transport = transport
        self.longest = 0.0
        self._task = asyncio.ensure_future(self._watch())

    async def _watch(self) -> None:
        since: float | None = None
        while True:
            now = time.monotonic()
            if not self.transport.owned():
                since = now if since is None else since
                self.longest = max(self.longest, now - since)
            else:
                since = None
            await asyncio.sleep(0.01)

    def stop(self) -> float:
        self._task.cancel()
        return self.longest


@pytest.mark.slow
@pytest.mark.fault
@pytest.mark.broker("kafka")
@pytest.mark.timeout(60)
async def test_replicas_share_twelve_partitions_and_take_over_a_killed_ones_share(
    kafka_broker: Tansu,
) -> None:
    """2 replicas hold 6 of 12 partitions each, 3 hold 4 each; C killed with -9, A and B
    hold 6 each again within 5 s, and every record C held comes to them."""
    prefix = unique("swrep")
    group, topic = f"{prefix}-g", f"{prefix}.t"
    url = _url(kafka_broker)
    topo = Topology(consumes=(topic,), group=group)
    a, b = KafkaTransport.from_url(url), KafkaTransport.from_url(url)
    await a.start()
    await b.start()
    try:
        await a.declare(topo)
        async with contextlib.AsyncExitStack() as stack:
            ra = await stack.enter_async_context(Receiver(a, topo, auto_ack=True))
            await _until(lambda: len(a.owned()) == 12, 20, "A alone owns all 12 partitions")
            assert a.owned() == [f"{topic}[{n}]" for n in range(12)]
            rb = await stack.enter_async_context(Receiver(b, topo, auto_ack=True))
            await _until(
                lambda: len(a.owned()) == len(b.owned()) == 6, 20, "A and B own 6 partitions each"
            )
            assert _numbers(a.owned()) | _numbers(b.owned()) == set(range(12))

            async with _child(url, group, topic) as c:
                pauses = [_Emptiness(a), _Emptiness(b)]
                joined = time.monotonic()
                balanced = await _until(
                    lambda: (
                        len(a.owned()) == len(b.owned()) == len(c.owned) == 4
                        and _numbers(a.owned()) | _numbers(b.owned()) | c.owned == set(range(12))
                    ),
                    25,
                    "A, B and C own 4 partitions each",
                )
                pause = max(p.stop() for p in pauses)
                print(
                    f"Kafka: C took a share {balanced - joined:.2f}s after it started;"
                    f" A and B owned nothing for {pause:.2f}s meanwhile"
                )
                assert pause < JOIN_PAUSE

                # 120 records over every partition: C holds those on its 4, acking none
                ra.deliveries.clear()
                rb.deliveries.clear()
                await a.publish([msg(topic, i, key=f"k{i}") for i in range(120)])
                await _until(
                    lambda: len(ra.deliveries) + len(rb.deliveries) + c.held == 120,
                    15,
                    "the 120 records are held by A, B and C",
                )
                held_by_c = c.held
                assert held_by_c > 0, "keys k0..k119 missed C's 4 partitions"
                before = len(ra.deliveries) + len(rb.deliveries)
                killed = await c.kill()

            def took_over() -> bool:
                owns = _numbers(a.owned()), _numbers(b.owned())
                return len(owns[0]) == len(owns[1]) == 6 and owns[0] | owns[1] == set(range(12))

            took = await _until(took_over, 15, "A and B own 6 partitions each again") - killed
            bodies = {d.body for d in ra.deliveries + rb.deliveries}
            await _until(
                lambda: len({d.body for d in ra.deliveries + rb.deliveries}) == 120,
                10,
                "every record C held reaches A or B",
            )
            consumed = time.monotonic() - killed
            print(
                f"Kafka: C killed with -9 holding {held_by_c} records; A and B owned its"
                f" partitions after {took:.2f}s and had all 120 records after {consumed:.2f}s"
                f" ({before} before the kill, {len(bodies)} at the take-over)"
            )
            assert took < FAILOVER
    finally:
        await a.close()
        await b.close()
        await delete_topics(kafka_broker, prefix)


# -- a broker that refuses the default session ------------------------------------------


class _RefusesShortSessions(AIOKafkaConsumer):  # type: ignore[misc]
    """A consumer whose broker has Apache Kafka's default
    ``group.min.session.timeout.ms=6000``. Tansu takes any session, so the refusal
    aiokafka would raise from ``getmany`` (its JoinGroup answered
    INVALID_SESSION_TIMEOUT) is raised here; every other request is real."""

    def __init__(self, *args: Any, session_timeout_ms: int, **kwargs: Any) -> None:
        super().__init__(*args, session_timeout_ms=session_timeout_ms, **kwargs)
        self.refused = session_timeout_ms < 6000

    async def getmany(self, *partitions: Any, **kwargs: Any) -> Any:
        if self.refused:
            raise kafka_errors.InvalidSessionTimeoutError()
        return await super().getmany(*partitions, **kwargs)


@pytest.mark.broker("kafka")
async def test_a_refused_default_session_falls_back_to_kafkas_minimum(
    kafka_broker: Tansu, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(_kafka_consumer, "AIOKafkaConsumer", _RefusesShortSessions)
    prefix = unique("swrep")
    topic = f"{prefix}.t"
    topo = Topology(consumes=(topic,), group=f"{prefix}-g")
    t = KafkaTransport.from_url(_url(kafka_broker))
    await t.start()
    try:
        await t.declare(topo)
        await t.publish([msg(topic, 0, key="k")])
        with caplog.at_level(logging.WARNING, logger="adapters._kafka_consumer"):
            async with Receiver(t, topo, auto_ack=True) as rx:
                await rx.wait_for(1, timeout=30)
                assert [run.session_ms for run in t._runs] == [6000]
        assert "refused session_timeout_ms=2000" in caplog.text
        assert "joining with 6000" in caplog.text
    finally:
        await t.close()
        await delete_topics(kafka_broker, prefix)


@pytest.mark.broker("kafka")
async def test_a_refused_chosen_session_is_an_error_that_names_it(
    kafka_broker: Tansu, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_kafka_consumer, "AIOKafkaConsumer", _RefusesShortSessions)
    prefix = unique("swrep")
    topo = Topology(consumes=(f"{prefix}.t",), group=f"{prefix}-g")
    t = KafkaTransport.from_url(f"{_url(kafka_broker)}?session_timeout_ms=3000")
    await t.start()
    stream = t.consume(topo)
    try:
        await t.declare(topo)
        with pytest.raises(TransportError, match="session_timeout_ms=3000") as refused:
            await asyncio.wait_for(anext(stream), 20)
        assert not refused.value.retryable
    finally:
        await close_stream(stream)
        await t.close()
        await delete_topics(kafka_broker, prefix)


# -- replica C ------------------------------------------------------------------------


async def _replica(url: str, group: str, topic: str) -> None:
    """Consume ``topic`` as ``group``, ack nothing, report ownership and what is held."""
    t = KafkaTransport.from_url(url)
    await t.start()
    reported: list[str] | None = None

    async def report_ownership() -> None:
        nonlocal reported
        while True:
            owned = t.owned()
            if owned != reported:
                reported = owned
                print("owned " + ",".join(str(n) for n in sorted(_numbers(owned))), flush=True)
            await asyncio.sleep(0.01)

    watcher = asyncio.ensure_future(report_ownership())
    held = 0
    try:
        async for batch in t.consume(Topology(consumes=(topic,), group=group)):
            held += len(batch)
            print(f"held {held}", flush=True)
    finally:
        watcher.cancel()


if __name__ == "__main__":
    asyncio.run(_replica(*sys.argv[1:4]))
