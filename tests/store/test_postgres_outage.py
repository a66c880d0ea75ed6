"""PostgreSQL going away under an open store, through a proxy each test owns.

Whatever the outage (the connection reset, refused, or stalled: open, and silent),
every store call ends within a bounded time with a *retryable* StoreError; when the
database is back, the same store works again without being reopened; and a commit
cut in flight committed whole or not at all. The store's time limits are set short
here (``?connect_timeout=1&command_timeout=1&acquire_timeout=1``) so the bounds are
quick to see; ``ping`` keeps its own two seconds whatever they are.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from urllib.parse import urlsplit

import pytest

from orchestrator.store.base import UnitOfWork
from orchestrator.store.postgres import PostgresStore
from schemas.errors import ConfigError, StoreError
from tests.store._fault_proxy import FaultProxy
from tests.store.contract import SAGA, C, D, step, timer
from tests.support.postgres import HOST, PORT
from tests.support.proxy import TcpProxy

pytestmark = pytest.mark.postgres

LIMITS = "connect_timeout=1&command_timeout=1&acquire_timeout=1"
BOUND = 5.0
"""Seconds any call may take on a database that went away, with 1 s limits: a statement
times out (1 s), asking the server to cancel it may time out too (1 s), the connection
is dropped; the rest is slack for a loaded machine. Seen: 0.01 s refused or reset,
1.0-2.0 s stalled."""


def via(port: int, database_url: str, query: str = LIMITS) -> str:
    """``database_url`` through the proxy on ``port``, with ``query``."""
    parts = urlsplit(database_url)
    user = parts.netloc.rpartition("@")[0]
    return parts._replace(netloc=f"{user}@127.0.0.1:{port}", query=query).geturl()


@pytest.fixture
async def fault_proxy() -> AsyncIterator[FaultProxy]:
    proxy = await FaultProxy(HOST, PORT).start()
    yield proxy
    await proxy.close()


def every_call(store: PostgresStore) -> dict[str, Callable[[], Awaitable[object]]]:
    """One call of each store method that talks to the database."""
    return {
        "load": lambda: store.load([(SAGA, "a")]),
        "seen": lambda: store.seen([(SAGA, "a-m1")]),
        "commit": lambda: store.commit([step("b", 1)]),
        "pending_outbox": lambda: store.pending_outbox(),
        "mark_published": lambda: store.mark_published(["nope"]),
        "mark_failed": lambda: store.mark_failed([("nope", "too large")], at=1.0),
        "failed_outbox": lambda: store.failed_outbox(),
        "due_timers": lambda: store.due_timers(100.0),
        "next_timer_due": lambda: store.next_timer_due(),
        "parked": lambda: store.parked([(SAGA, "a")]),
        "parked_keys": lambda: store.parked_keys(),
        "expired_parked": lambda: store.expired_parked(100.0),
        "prune": lambda: store.prune(inbox_before=0.0),
        "history": lambda: store.history((SAGA, "a")),
        "instances": lambda: store.instances(),
        "counts": lambda: store.counts(),
        "ping": lambda: store.ping(),
    }


async def all_fail_in_time(store: PostgresStore) -> dict[str, float]:
    """Run every call at once; each must raise a retryable StoreError within BOUND.
    Returns how long each took."""

    async def timed(name: str, call: Callable[[], Awaitable[object]]) -> tuple[str, float]:
        started = time.monotonic()
        with pytest.raises(StoreError) as info:
            await asyncio.wait_for(call(), BOUND * 3)  # a hang fails here, not the suite
        took = time.monotonic() - started
        assert info.value.retryable, (name, info.value)
        assert store.location in str(info.value), name
        assert took < BOUND, (name, took, info.value)
        return name, took

    results = await asyncio.gather(*(timed(n, c) for n, c in every_call(store).items()))
    return dict(results)


async def works(store: PostgresStore, version: int) -> None:
    """The store answers and commits again: ``a`` goes to ``version``."""
    await store.ping()
    assert await store.commit([step("a", version)]) == [C]
    assert (await store.load([(SAGA, "a")]))[(SAGA, "a")].version == version
    assert await store.load([(SAGA, "b")]) == {}  # the commit tried in the outage did not land


async def test_a_reset_connection_fails_fast_and_the_store_recovers_by_itself(
    database_url: str,
) -> None:
    async with TcpProxy(HOST, PORT) as proxy:
        store = PostgresStore.from_url(via(proxy.port, database_url) + "&pool_max=20")
        await store.open()
        try:
            assert await store.commit([step("a", 1)]) == [C]
            await proxy.cut()  # every connection reset, new ones closed at once
            await all_fail_in_time(store)
            proxy.resume()
            await works(store, 2)
        finally:
            await store.close()


async def test_a_refused_connection_fails_fast_and_the_store_recovers_by_itself(
    database_url: str, fault_proxy: FaultProxy
) -> None:
    store = PostgresStore.from_url(via(fault_proxy.port, database_url) + "&pool_max=20")
    await store.open()
    try:
        assert await store.commit([step("a", 1)]) == [C]
        await fault_proxy.down()  # as if the server stopped: nothing listens
        await all_fail_in_time(store)
        with pytest.raises(StoreError) as info:  # a second store cannot even open
            await PostgresStore.from_url(via(fault_proxy.port, database_url)).open()
        assert info.value.retryable
        assert "ConnectionRefusedError" in str(info.value)
        await fault_proxy.up()
        await works(store, 2)
    finally:
        await store.close()


async def test_a_stalled_database_ends_every_call_in_time_and_the_store_recovers(
    database_url: str, fault_proxy: FaultProxy
) -> None:
    store = PostgresStore.from_url(via(fault_proxy.port, database_url) + "&pool_max=20")
    await store.open()
    try:
        assert await store.commit([step("a", 1)]) == [C]
        fault_proxy.stall()
        await all_fail_in_time(store)  # on the pool's open connections, and on new ones
        await all_fail_in_time(store)  # on connections opened into the stall
        fault_proxy.resume()
        await works(store, 2)
    finally:
        await store.close()


async def test_ping_answers_in_two_seconds_whatever_the_stores_limits(
    database_url: str, fault_proxy: FaultProxy
) -> None:
    """``/readyz`` and an engine waiting for its store ping; with the default 5 s limits
    a stalled database still gets its answer in about two."""
    store = PostgresStore.from_url(via(fault_proxy.port, database_url, query=""))
    assert store.command_timeout == 5.0
    await store.open()
    try:
        await store.ping()
        fault_proxy.stall()
        for _ in range(2):
            started = time.monotonic()
            with pytest.raises(StoreError, match="ping got no answer in time") as info:
                await store.ping()
            assert info.value.retryable
            assert 1.5 < time.monotonic() - started < 3.0
        fault_proxy.resume()
        await store.ping()
    finally:
        await store.close()


async def test_open_and_close_on_a_stalled_database_end_in_time(
    database_url: str, fault_proxy: FaultProxy
) -> None:
    running = PostgresStore.from_url(via(fault_proxy.port, database_url))
    await running.open()
    fault_proxy.stall()
    started = time.monotonic()
    with pytest.raises(StoreError) as info:
        await PostgresStore.from_url(via(fault_proxy.port, database_url)).open()
    assert info.value.retryable
    assert "connect got no answer in time" in str(info.value)
    assert time.monotonic() - started < BOUND
    stuck = asyncio.ensure_future(running.load([(SAGA, "a")]))  # a call in progress, too
    await asyncio.sleep(0.1)
    started = time.monotonic()
    await running.close()
    assert time.monotonic() - started < BOUND
    with pytest.raises(StoreError):
        await stuck


async def units_found(store: PostgresStore, units: list[UnitOfWork]) -> list[bool]:
    """For each unit, whether it is stored; asserts it is stored whole or not at all."""
    found = []
    for u in units:
        assert u.instance is not None and u.inbox is not None
        key = u.instance.key
        parts = [
            key in await store.load([key]),
            bool(await store.seen([u.inbox])),
            bool(await store.history(key)),
            u.outbox[0].id in {o.id for o in await store.pending_outbox()},
            bool([t for t in await store.due_timers(100.0) if t.key[:2] == key]),
        ]
        assert len(set(parts)) == 1, (key, parts)  # never half a unit
        found.append(parts[0])
    return found


def batch(tag: str) -> list[UnitOfWork]:
    units = [step(f"{tag}{i}", 1) for i in range(5)]
    for u in units:
        assert u.instance is not None
        u.timers_set = (timer(u.instance.correlation_id, "t", 50.0),)
    return units


@pytest.mark.parametrize(
    ("pattern", "deliver", "landed"),
    [
        (b"INSERT INTO history", False, False),  # cut half-way through the writes
        (b"COMMIT", False, False),  # cut before the server saw COMMIT
        (b"COMMIT", True, True),  # the server committed; its answer was lost
    ],
    ids=["mid-batch", "before-commit", "reply-lost"],
)
async def test_a_commit_cut_in_flight_lands_whole_or_not_at_all(
    database_url: str, fault_proxy: FaultProxy, pattern: bytes, deliver: bool, landed: bool
) -> None:
    """A retried commit is then safe: the units that landed come back DUPLICATE."""
    store = PostgresStore.from_url(via(fault_proxy.port, database_url))
    direct = PostgresStore.from_url(database_url)  # the truth, around the proxy
    await store.open()
    await direct.open()
    try:
        units = batch("c")
        fault_proxy.cut_on(pattern, deliver=deliver)
        started = time.monotonic()
        with pytest.raises(StoreError) as info:
            await store.commit(units)
        assert info.value.retryable
        assert time.monotonic() - started < BOUND
        await asyncio.wait_for(fault_proxy.tripped.wait(), BOUND)
        assert await units_found(direct, units) == [landed] * len(units)
        expected = D if landed else C
        assert await store.commit(units) == [expected] * len(units)  # the same store
        assert await units_found(direct, units) == [True] * len(units)
    finally:
        await store.close()
        await direct.close()


def test_time_limits_from_the_url() -> None:
    store = PostgresStore.from_url(
        "postgresql://u:pw@db/sw?connect_timeout=2.5&command_timeout=10&acquire_timeout=1"
        "&application_name=sagawire"
    )
    assert (store.connect_timeout, store.command_timeout, store.acquire_timeout) == (2.5, 10, 1)
    assert store.dsn == "postgresql://u:pw@db/sw?application_name=sagawire"  # not sent on
    default = PostgresStore.from_url("postgresql://u@db/sw")
    assert (default.connect_timeout, default.command_timeout, default.acquire_timeout) == (5, 5, 5)


@pytest.mark.parametrize(
    "query", ["command_timeout=soon", "connect_timeout=0", "acquire_timeout=-1", "pool_max=x"]
)
def test_bad_time_limits_are_config_errors_without_the_password(query: str) -> None:
    with pytest.raises(ConfigError) as info:
        PostgresStore.from_url(f"postgresql://u:secret@db/sw?{query}")
    assert query.split("=")[0].split("_")[0] in str(info.value)
    assert "secret" not in str(info.value)
