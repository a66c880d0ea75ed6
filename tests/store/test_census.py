"""``Store.census``, the gauges of ``/metrics``: the same cases on memory, SQLite and
PostgreSQL, stuck instances counted as the operator's listing finds them."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from orchestrator.store.base import Census, InstanceQuery, Store, StuckRule, UnitOfWork
from orchestrator.store.memory import MemoryStore
from orchestrator.store.postgres import PostgresStore
from orchestrator.store.sqlite import SqliteStore
from tests.store.contract import SAGA, inst, out, park, timer


async def _fill(store: Store) -> None:
    rows = [
        inst("a1", state="reserving", at=10.0),
        inst("a2", state="reserving", at=30.0),
        inst("a3", state="charging", at=20.0),
        inst("a4", state="completed", status="completed", at=5.0),
        inst("b1", saga="trip", state="booking", at=1.0),
    ]
    await store.commit([UnitOfWork(instance=r, expected_version=0) for r in rows])
    await store.commit(
        [
            UnitOfWork(
                outbox=(out("o1", at=7.0), out("o2", at=3.0), out("o3", at=9.0)),
                timers_set=(timer("a1", "t", 50.0), timer("a2", "t", 150.0)),
                parked=(park("a9", "m1"), park("a9", "m2")),
            )
        ]
    )


class Cases:
    """The cases; each store's class below gives ``store_factory``."""

    @pytest.fixture
    def store_factory(self) -> Callable[[], Store]:
        raise NotImplementedError

    @pytest.fixture
    async def store(self, store_factory: Callable[[], Store]) -> AsyncIterator[Store]:
        st = store_factory()
        await st.open()
        yield st
        await st.close()

    async def test_an_empty_store(self, store: Store) -> None:
        assert await store.census(100.0) == Census()

    async def test_everything_counted(self, store: Store) -> None:
        await _fill(store)
        got = await store.census(100.0)
        assert got.instances == {
            (SAGA, "reserving", "running"): 2,
            (SAGA, "charging", "running"): 1,
            (SAGA, "", "completed"): 1,  # finished: counted by status, off an index
            ("trip", "booking", "running"): 1,
        }
        assert got.outbox_backlog == 3
        assert got.outbox_oldest == 3.0
        assert (got.timers_pending, got.timers_due, got.parked) == (2, 1, 2)
        # no rule given: nothing is stuck, and every running group says so
        assert got.stuck == {(SAGA, "reserving"): 0, (SAGA, "charging"): 0, ("trip", "booking"): 0}

    async def test_the_census_follows_the_store(self, store: Store) -> None:
        await _fill(store)
        await store.mark_published(["o2"])
        await store.mark_failed([("o1", "refused")], at=8.0)
        await store.commit(
            [
                UnitOfWork(
                    instance=inst("a1", 2, state="completed", status="completed", at=40.0),
                    expected_version=1,
                    timers_cancelled=((SAGA, "a1", "t"),),
                    unparked=((SAGA, "m1"),),
                )
            ]
        )
        got = await store.census(100.0)
        assert got.instances[(SAGA, "reserving", "running")] == 1
        assert got.instances[(SAGA, "", "completed")] == 2
        assert (got.outbox_backlog, got.outbox_oldest) == (1, 9.0)  # failed rows are not work
        assert (got.timers_pending, got.timers_due, got.parked) == (1, 0, 1)
        assert await store.counts() == {"running": 3, "completed": 2}  # counts() agrees

    @pytest.mark.parametrize(
        "rule",
        [
            StuckRule(cutoffs=((SAGA, "reserving", 20.0),)),
            StuckRule(cutoffs=((SAGA, "reserving", 40.0), (SAGA, "reserving", 1.0)), default=25.0),
            StuckRule(default=15.0),
            StuckRule(cutoffs=(("trip", "booking", 0.5), (SAGA, "charging", 21.0)), default=100.0),
            StuckRule(),
        ],
    )
    async def test_stuck_is_what_the_listing_finds(self, store: Store, rule: StuckRule) -> None:
        await _fill(store)
        got = await store.census(100.0, rule)
        listed = await store.find(InstanceQuery(stuck=rule, limit=1000))
        want = dict.fromkeys(got.stuck, 0)
        for r in listed:
            want[(r.saga, r.state)] += 1
        assert got.stuck == want
        assert set(got.stuck) == {(SAGA, "reserving"), (SAGA, "charging"), ("trip", "booking")}

    async def test_stuck_counts(self, store: Store) -> None:
        await _fill(store)
        rule = StuckRule(cutoffs=((SAGA, "reserving", 20.0),), default=25.0)
        got = await store.census(100.0, rule)
        assert got.stuck == {(SAGA, "reserving"): 1, (SAGA, "charging"): 1, ("trip", "booking"): 1}


class TestMemory(Cases):
    @pytest.fixture
    def store_factory(self) -> Callable[[], Store]:
        return MemoryStore


class TestSqlite(Cases):
    @pytest.fixture
    def store_factory(self, tmp_path: Path) -> Callable[[], Store]:
        return lambda: SqliteStore.from_url(f"sqlite:///{tmp_path / 'census.db'}")


@pytest.mark.postgres
class TestPostgres(Cases):
    @pytest.fixture
    def store_factory(self, database_url: str) -> Callable[[], Store]:
        return lambda: PostgresStore.from_url(database_url)
