"""The store contract against the in-memory store."""

from __future__ import annotations

import pytest

from orchestrator.store.base import UnitOfWork
from orchestrator.store.memory import MemoryStore
from tests.store.contract import SAGA, StoreContract, StoreFactory, timer


class TestMemoryStore(StoreContract):
    durable = False

    @pytest.fixture
    def store_factory(self) -> StoreFactory:
        return MemoryStore


async def test_due_timers_come_off_the_heap_once_each_and_in_order() -> None:
    """Timers set again (moved, or set twice at the same time) and cancelled leave stale
    heap entries behind: ``due_timers`` reads past them, reports each live timer once, in
    (due, key) order, and returns the same answer until the timers are cancelled."""
    store = MemoryStore()
    await store.open()
    for due in (5.0, 7.0, 3.0, 3.0):  # moved twice, then set twice at 3.0
        await store.commit([UnitOfWork(timers_set=(timer("a", "t", due),))])
    await store.commit([UnitOfWork(timers_set=(timer("b", "t", 2.0), timer("c", "t", 9.0)))])
    await store.commit([UnitOfWork(timers_set=(timer("d", "t", 1.0),))])
    await store.commit([UnitOfWork(timers_cancelled=((SAGA, "d", "t"),))])

    expected = [(SAGA, "b", "t"), (SAGA, "a", "t")]
    assert [t.key for t in await store.due_timers(8.0)] == expected
    assert [t.key for t in await store.due_timers(8.0)] == expected  # nothing consumed
    assert [t.key for t in await store.due_timers(8.0, limit=1)] == expected[:1]
    assert [t.due for t in await store.due_timers(100.0)] == [2.0, 3.0, 9.0]
    assert await store.next_timer_due() == 2.0
    await store.commit([UnitOfWork(timers_cancelled=((SAGA, "b", "t"), (SAGA, "a", "t")))])
    assert [t.key for t in await store.due_timers(100.0)] == [(SAGA, "c", "t")]
    assert await store.next_timer_due() == 9.0


async def test_the_timer_heap_stays_compact_when_timers_keep_moving() -> None:
    """A saga moves its step timer at every step; the entries that leaves behind are
    dropped once they outnumber the live timers, not kept until their due time."""
    store = MemoryStore()
    await store.open()
    for n in range(10_000):  # always earlier, so the stale entries never reach the top
        await store.commit([UnitOfWork(timers_set=(timer("a", "t", 1e6 - n),))])
    await store.commit([UnitOfWork(timers_set=(timer("b", "t", 5.0),))])
    assert len(store._timer_heap) <= 2 * 2 + 1024 + 1
    assert [t.key for t in await store.due_timers(1e7)] == [(SAGA, "b", "t"), (SAGA, "a", "t")]
    assert await store.next_timer_due() == 5.0
