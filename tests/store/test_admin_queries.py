"""The operator's store queries (``find``, timers and outbox of an instance, dead
letters and their redrive), the same cases on memory, SQLite and PostgreSQL."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from orchestrator.store.base import (
    DeadLetterQuery,
    DeadLetterRecord,
    HistoryRecord,
    InstanceQuery,
    Store,
    StuckRule,
    UnitOfWork,
)
from orchestrator.store.memory import MemoryStore
from orchestrator.store.postgres import PostgresStore
from orchestrator.store.sqlite import SqliteStore
from tests.store.contract import inst, out, timer


async def _fill(store: Store) -> None:
    rows = [
        inst("a1", saga="order", state="reserving", at=10.0),
        inst("a2", saga="order", state="charging", at=20.0),
        inst("a3", saga="order", state="completed", status="completed", at=30.0),
        inst("b1", saga="trip", state="booking", at=20.0),
        inst("b2", saga="trip", state="booking", at=40.0),
        inst("same", saga="trip", state="booking", at=50.0),
        inst("same", saga="order", state="reserving", at=50.0),
    ]
    await store.commit([UnitOfWork(instance=r, expected_version=0) for r in rows])


def _keys(rows: list[object]) -> list[tuple[str, str]]:
    return [(r.saga, r.correlation_id) for r in rows]  # type: ignore[attr-defined]


def _dead(
    mid: str, *, type: str = "order.placed", kind: str = "payload", at: float = 1.0
) -> DeadLetterRecord:
    return DeadLetterRecord(
        id=0,
        message_id=mid,
        type=type,
        saga="order",
        correlation_id=f"c-{mid}",
        destination="orders.events",
        key=f"c-{mid}",
        body=b'{"binary":"\x00\xff"}',
        headers=(("content-type", "application/json"), ("x", "1")),
        kind=kind,
        reason=f"bad data 100% in {mid}",
        at=at,
    )


class AdminQueries:
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

    async def test_find_newest_first_with_every_filter(self, store: Store) -> None:
        await _fill(store)
        everything = await store.find(InstanceQuery())
        assert _keys(everything) == [
            ("trip", "same"),
            ("order", "same"),
            ("trip", "b2"),
            ("order", "a3"),
            ("trip", "b1"),
            ("order", "a2"),
            ("order", "a1"),
        ]
        assert _keys(await store.find(InstanceQuery(saga="order", status="running"))) == [
            ("order", "same"),
            ("order", "a2"),
            ("order", "a1"),
        ]
        assert _keys(await store.find(InstanceQuery(status="completed"))) == [("order", "a3")]
        assert _keys(await store.find(InstanceQuery(saga="trip", state="booking", limit=2))) == [
            ("trip", "same"),
            ("trip", "b2"),
        ]
        assert _keys(await store.find(InstanceQuery(correlation_id="same"))) == [
            ("trip", "same"),
            ("order", "same"),
        ]
        window = InstanceQuery(updated_after=10.0, updated_before=40.0)
        assert _keys(await store.find(window)) == [("order", "a3"), ("trip", "b1"), ("order", "a2")]
        assert await store.find(InstanceQuery(saga="nothing")) == []

    async def test_find_pages_by_cursor_without_gaps_or_repeats(self, store: Store) -> None:
        await _fill(store)
        seen: list[tuple[str, str]] = []
        query = InstanceQuery(limit=2)
        while True:
            page = await store.find(query)
            seen += _keys(page)
            if len(page) < query.limit:
                break
            last = page[-1]
            query = dataclasses.replace(
                query, after=(last.updated_at, last.saga, last.correlation_id)
            )
        assert seen == _keys(await store.find(InstanceQuery()))
        assert len(set(seen)) == 7

    async def test_find_stuck_by_state_cut_off_and_default(self, store: Store) -> None:
        await _fill(store)
        # order/reserving is stuck when updated before 15 (a1, not "same" at 50); any other
        # running state when updated before 25 (a2, b1), completed instances never
        rule = StuckRule(cutoffs=(("order", "reserving", 15.0),), default=25.0)
        assert _keys(await store.find(InstanceQuery(stuck=rule))) == [
            ("trip", "b1"),
            ("order", "a2"),
            ("order", "a1"),
        ]
        only_listed = StuckRule(cutoffs=(("order", "reserving", 60.0),))
        assert _keys(await store.find(InstanceQuery(stuck=only_listed, saga="order"))) == [
            ("order", "same"),
            ("order", "a1"),
        ]
        assert await store.find(InstanceQuery(stuck=rule, status="completed")) == []

    async def test_recent_deviations_newest_first(self, store: Store) -> None:
        plain = HistoryRecord("order", "c1", 1, "m1", "a", "s0", "s1", (), 1.0)
        early = dataclasses.replace(
            plain, seq=2, message_id="m2", at=2.0, note="deviation early: x"
        )
        late = dataclasses.replace(plain, seq=3, message_id="m3", at=3.0, note="deviation late: y")
        await store.commit([UnitOfWork(inbox=("order", "i"), history=(plain, early, late))])
        assert [h.message_id for h in await store.recent_deviations(5)] == ["m3", "m2"]
        assert [h.message_id for h in await store.recent_deviations(1)] == ["m3"]

    async def test_timers_and_unsent_outbox_of_one_instance(self, store: Store) -> None:
        await store.commit(
            [
                UnitOfWork(
                    instance=inst("t1"),
                    timers_set=(timer("t1", "late", 9.0), timer("t1", "early", 3.0)),
                    outbox=(out("m1"), out("m2"), out("m3")),
                ),
                UnitOfWork(instance=inst("t2"), timers_set=(timer("t2", "x", 1.0),)),
            ]
        )
        assert [t.name for t in await store.timers_of(("order", "t1"))] == ["early", "late"]
        await store.mark_published(["m2"])
        assert [o.id for o in await store.outbox_rows(["m3", "m1", "m2", "zz"])] == ["m1", "m3"]
        assert await store.outbox_rows([]) == []

    async def test_dead_letters_kept_listed_filtered_and_redriven_once(self, store: Store) -> None:
        await store.keep_dead_letters(
            [_dead("d1", at=1.0), _dead("d2", kind="decode", at=2.0), _dead("d3", type="x", at=3.0)]
        )
        listed = await store.dead_letters(DeadLetterQuery())
        assert [d.message_id for d in listed] == ["d3", "d2", "d1"]
        assert listed[2].body == b'{"binary":"\x00\xff"}'
        assert listed[2].headers == (("content-type", "application/json"), ("x", "1"))
        assert [d.message_id for d in await store.dead_letters(DeadLetterQuery(kind="decode"))] == [
            "d2"
        ]
        assert [d.message_id for d in await store.dead_letters(DeadLetterQuery(type="x"))] == ["d3"]
        assert [
            d.message_id for d in await store.dead_letters(DeadLetterQuery(reason="100% in d1"))
        ] == ["d1"]
        assert await store.dead_letters(DeadLetterQuery(reason="100_ in")) == []  # no wildcards
        assert await store.dead_letters(DeadLetterQuery(reason="BAD data")) == []  # case counts
        assert [d.message_id for d in await store.dead_letters(DeadLetterQuery(since=2.0))] == [
            "d3",
            "d2",
        ]
        page = await store.dead_letters(DeadLetterQuery(limit=1))
        rest = await store.dead_letters(DeadLetterQuery(before_id=page[0].id))
        assert [d.message_id for d in page + rest] == ["d3", "d2", "d1"]

        first = listed[2]
        await store.commit([UnitOfWork(inbox=("order", "d1"))])
        assert await store.seen([("order", "d1")]) == {("order", "d1")}
        copy = out("d1:redrive", body=first.body)
        assert await store.mark_redriven(first.id, 5.0, "ops", [("order", "d1")], copy)
        assert await store.seen([("order", "d1")]) == set()  # the copy will be handled
        assert [o.id for o in await store.pending_outbox()] == ["d1:redrive"]  # same commit
        assert (await store.pending_outbox())[0].body == first.body
        other = out("d1:redrive-again")
        assert not await store.mark_redriven(first.id, 6.0, "ops", [], other)  # once
        assert [o.id for o in await store.pending_outbox()] == ["d1:redrive"]  # no 2nd copy
        again = await store.dead_letter(first.id)
        assert again is not None
        assert (again.redriven_at, again.redriven_by) == (5.0, "ops")
        assert [d.message_id for d in await store.dead_letters(DeadLetterQuery(redriven=True))] == [
            "d1"
        ]
        assert await store.dead_letter(10_000) is None
        assert not await store.mark_redriven(10_000, 1.0, "ops", [], other)
        assert await store.prune_dead_letters(2.5) == 2
        assert [d.message_id for d in await store.dead_letters(DeadLetterQuery())] == ["d3"]


class TestMemory(AdminQueries):
    @pytest.fixture
    def store_factory(self) -> Callable[[], Store]:
        return MemoryStore


class TestSqlite(AdminQueries):
    @pytest.fixture
    def store_factory(self, tmp_path: Path) -> Callable[[], Store]:
        return lambda: SqliteStore.from_url(f"sqlite:///{tmp_path / 'admin.db'}")


@pytest.mark.postgres
class TestPostgres(AdminQueries):
    @pytest.fixture
    def store_factory(self, database_url: str) -> Callable[[], Store]:
        return lambda: PostgresStore.from_url(database_url)
