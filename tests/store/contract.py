"""Store contract tests, written once and run against every store.

Subclass :class:`StoreContract` in ``test_<store>.py`` and provide the
``store_factory`` fixture: a callable returning a *new, unopened* store on the
test's own database (calling it twice must reach the same data for a durable
store, which is how close/reopen is tested). Set ``durable = True`` when data
outlives ``close()``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Callable
from typing import Any, ClassVar

import pytest

from orchestrator.store import _schema
from orchestrator.store.base import (
    FailedOutboxRecord,
    HistoryRecord,
    InstanceRecord,
    OutboxRecord,
    Outcome,
    ParkedRecord,
    Store,
    TimerRecord,
    UnitOfWork,
)
from schemas.errors import StoreError

StoreFactory = Callable[[], Any]

SAGA = "order"
BINARY = bytes(range(256)) + b"\x00\xff\xfe{not json"

C, D, X = Outcome.COMMITTED, Outcome.DUPLICATE, Outcome.CONFLICT


def inst(
    cid: str,
    version: int = 1,
    *,
    saga: str = SAGA,
    state: str = "started",
    status: str = "running",
    at: float | None = None,
    data: bytes | None = None,
) -> InstanceRecord:
    at = float(version) if at is None else at
    return InstanceRecord(
        saga=saga,
        correlation_id=cid,
        state=state,
        status=status,
        version=version,
        data=data if data is not None else f'{{"v":{version}}}'.encode(),
        meta=b'{"attempts":0}',
        created_at=1.0,
        updated_at=at,
    )


def hist(cid: str, seq: int, *, saga: str = SAGA, at: float | None = None) -> HistoryRecord:
    return HistoryRecord(
        saga=saga,
        correlation_id=cid,
        seq=seq,
        message_id=f"{cid}-m{seq}",
        message_type="OrderPlaced",
        from_state=f"s{seq - 1}",
        to_state=f"s{seq}",
        commands=(f"Reserve:{cid}-{seq}", f"Notify:{cid}-{seq}"),
        at=float(seq) if at is None else at,
    )


def out(
    mid: str, *, body: bytes = b"{}", at: float = 1.0, destination: str = "payments.commands"
) -> OutboxRecord:
    return OutboxRecord(
        id=mid,
        destination=destination,
        key="k-" + mid,
        body=body,
        headers=(("ce-type", "Reserve"), ("x-dup", "1"), ("x-dup", "2")),
        created_at=at,
    )


def timer(cid: str, name: str, due: float, *, payload: bytes = b"{}") -> TimerRecord:
    return TimerRecord(saga=SAGA, correlation_id=cid, name=name, due=due, payload=payload)


def park(
    cid: str, mid: str, *, at: float = 1.0, expires: float = 100.0, body: bytes = b"{}"
) -> ParkedRecord:
    return ParkedRecord(
        saga=SAGA,
        correlation_id=cid,
        message_id=mid,
        destination="orders.events",
        body=body,
        parked_at=at,
        expires=expires,
        reason="no instance yet",
    )


def step(cid: str, version: int, **kw: Any) -> UnitOfWork:
    """A typical unit: instance ``cid`` goes to ``version`` with inbox, history, outbox."""
    return UnitOfWork(
        instance=inst(cid, version, **kw),
        expected_version=version - 1,
        inbox=(SAGA, f"{cid}-m{version}"),
        history=(hist(cid, version),),
        outbox=(out(f"{cid}-o{version}"),),
    )


class StoreContract:
    durable: ClassVar[bool] = False

    @pytest.fixture
    def store_factory(self) -> StoreFactory:
        raise NotImplementedError("subclasses provide store_factory")

    @pytest.fixture
    async def store(self, store_factory: StoreFactory) -> AsyncIterator[Store]:
        st: Store = store_factory()
        await st.open()
        yield st
        await st.close()

    # -- lifecycle ------------------------------------------------------------------

    async def test_is_a_store(self, store: Store) -> None:
        assert isinstance(store, Store)

    async def test_use_before_open_raises_store_error(self, store_factory: StoreFactory) -> None:
        st: Store = store_factory()
        with pytest.raises(StoreError):
            await st.load([(SAGA, "a")])

    async def test_close_is_idempotent(self, store_factory: StoreFactory) -> None:
        st: Store = store_factory()
        await st.open()
        await st.close()
        await st.close()

    async def test_empty_inputs(self, store: Store) -> None:
        assert await store.load([]) == {}
        assert await store.seen([]) == set()
        assert await store.commit([]) == []
        assert await store.parked([]) == []
        await store.mark_published([])
        assert await store.pending_outbox() == []
        assert await store.due_timers(1e12) == []
        assert await store.next_timer_due() is None
        assert await store.parked_keys() == set()
        assert await store.expired_parked(1e12) == []
        assert await store.history((SAGA, "nope")) == []
        assert await store.instances() == []
        assert await store.counts() == {}
        await store.mark_failed([], at=1.0)
        assert await store.failed_outbox() == []

    async def test_ping(self, store: Store) -> None:
        await store.ping()
        await store.commit([step("a", 1)])
        await store.ping()  # answers, and changes nothing
        assert [o.id for o in await store.pending_outbox()] == ["a-o1"]
        assert await store.commit([step("a", 2)]) == [C]

    async def test_ping_before_open_raises_store_error(self, store_factory: StoreFactory) -> None:
        st: Store = store_factory()
        with pytest.raises(StoreError, match="not open"):
            await st.ping()

    # -- instances and versions -----------------------------------------------------

    async def test_create_and_load(self, store: Store) -> None:
        record = inst("a", data=BINARY)
        assert await store.commit([UnitOfWork(instance=record)]) == [C]
        loaded = await store.load([(SAGA, "a"), (SAGA, "missing"), ("other", "a")])
        assert loaded == {(SAGA, "a"): record}
        assert loaded[(SAGA, "a")].data == BINARY

    async def test_update_replaces_the_whole_record(self, store: Store) -> None:
        await store.commit([UnitOfWork(instance=inst("a"))])
        new = inst("a", 2, state="paid", status="completed", data=b"\x00two")
        assert await store.commit([UnitOfWork(instance=new, expected_version=1)]) == [C]
        assert (await store.load([(SAGA, "a")]))[(SAGA, "a")] == new

    async def test_optimistic_version_conflict(self, store: Store) -> None:
        assert await store.commit([step("a", 1)]) == [C]
        # Another writer believed the instance did not exist yet.
        assert await store.commit([UnitOfWork(instance=inst("a", 1), inbox=(SAGA, "z"))]) == [X]
        assert await store.commit([step("a", 2)]) == [C]
        stale = UnitOfWork(
            instance=inst("a", 2, state="stale"),
            expected_version=1,
            inbox=(SAGA, "stale"),
            history=(hist("a", 9),),
            outbox=(out("stale"),),
            timers_set=(timer("a", "t", 5.0),),
            parked=(park("a", "p"),),
        )
        assert await store.commit([stale]) == [X]
        assert (await store.load([(SAGA, "a")]))[(SAGA, "a")] == inst("a", 2)
        assert await store.seen([(SAGA, "stale"), (SAGA, "z")]) == set()
        assert [h.seq for h in await store.history((SAGA, "a"))] == [1, 2]
        assert [o.id for o in await store.pending_outbox()] == ["a-o1", "a-o2"]
        assert await store.due_timers(1e9) == []
        assert await store.parked_keys() == set()

    async def test_expected_version_for_missing_instance_conflicts(self, store: Store) -> None:
        unit = UnitOfWork(instance=inst("a", 4), expected_version=3)
        assert await store.commit([unit]) == [X]
        assert await store.load([(SAGA, "a")]) == {}

    # -- inbox ----------------------------------------------------------------------

    async def test_duplicate_inbox_is_not_applied(self, store: Store) -> None:
        assert await store.commit([step("a", 1)]) == [C]
        assert await store.seen([(SAGA, "a-m1"), (SAGA, "a-m2"), ("other", "a-m1")]) == {
            (SAGA, "a-m1")
        }
        again = UnitOfWork(
            instance=inst("a", 2),
            expected_version=1,
            inbox=(SAGA, "a-m1"),
            history=(hist("a", 2),),
            outbox=(out("dup"),),
        )
        assert await store.commit([again]) == [D]
        assert (await store.load([(SAGA, "a")]))[(SAGA, "a")].version == 1
        assert [o.id for o in await store.pending_outbox()] == ["a-o1"]
        assert len(await store.history((SAGA, "a"))) == 1

    async def test_inbox_is_per_saga(self, store: Store) -> None:
        one = UnitOfWork(inbox=("s1", "m"))
        two = UnitOfWork(inbox=("s2", "m"))
        assert await store.commit([one, two]) == [C, C]
        assert await store.seen([("s1", "m"), ("s2", "m")]) == {("s1", "m"), ("s2", "m")}

    async def test_unit_without_instance(self, store: Store) -> None:
        unit = UnitOfWork(inbox=(SAGA, "m"), outbox=(out("o"),), parked=(park("a", "p"),))
        assert await store.commit([unit]) == [C]
        assert await store.seen([(SAGA, "m")]) == {(SAGA, "m")}
        assert [o.id for o in await store.pending_outbox()] == ["o"]
        assert await store.commit([UnitOfWork(inbox=(SAGA, "m"))]) == [D]

    # -- all-or-nothing per unit in a mixed batch -------------------------------------

    async def test_mixed_batch_applies_exactly_the_good_units(self, store: Store) -> None:
        assert await store.commit([step("old", 1)]) == [C]
        batch = [
            step("a", 1),  # new instance
            UnitOfWork(  # conflict: "b" does not exist at version 3
                instance=inst("b", 4),
                expected_version=3,
                inbox=(SAGA, "b-m4"),
                history=(hist("b", 4),),
                outbox=(out("b-o4"),),
                timers_set=(timer("b", "t", 1.0),),
                parked=(park("b", "bp"),),
            ),
            UnitOfWork(  # duplicate of a mark already stored
                instance=inst("old", 2),
                expected_version=1,
                inbox=(SAGA, "old-m1"),
                outbox=(out("old-dup"),),
                timers_set=(timer("old", "t", 1.0),),
            ),
            step("c", 1),
            step("a", 2),  # builds on the first unit of this same batch
            UnitOfWork(  # duplicate of a mark written earlier in this batch
                instance=inst("a", 3), expected_version=2, inbox=(SAGA, "a-m1")
            ),
            UnitOfWork(instance=inst("a", 2, state="late"), expected_version=1),  # stale
        ]
        assert await store.commit(batch) == [C, X, D, C, C, D, X]
        loaded = await store.load([(SAGA, k) for k in ("a", "b", "c", "old")])
        assert {k[1]: v.version for k, v in loaded.items()} == {"a": 2, "c": 1, "old": 1}
        assert loaded[(SAGA, "a")].state == "started"
        assert [o.id for o in await store.pending_outbox()] == ["old-o1", "a-o1", "c-o1", "a-o2"]
        assert await store.seen([(SAGA, "b-m4")]) == set()
        assert await store.history((SAGA, "b")) == []
        assert [h.seq for h in await store.history((SAGA, "a"))] == [1, 2]
        assert await store.due_timers(1e9) == []
        assert await store.parked_keys() == set()

    async def test_a_conflicting_unit_does_not_consume_its_inbox_mark(self, store: Store) -> None:
        bad = UnitOfWork(instance=inst("a", 2), expected_version=1, inbox=(SAGA, "m"))
        good = UnitOfWork(instance=inst("a", 1), expected_version=0, inbox=(SAGA, "m"))
        assert await store.commit([bad, good]) == [X, C]
        assert await store.seen([(SAGA, "m")]) == {(SAGA, "m")}

    async def test_a_unit_chained_on_a_conflicting_one_conflicts_too(self, store: Store) -> None:
        """The engine decides several messages for one instance in a batch, each on the
        version the one before wrote. If the first conflicts (another replica moved the
        instance to that same version number), the next must not land on the other's."""
        assert await store.commit([step("a", 1)]) == [C]
        assert await store.commit([step("a", 2)]) == [C]  # another replica's version 2
        mine = UnitOfWork(instance=inst("a", 2, state="mine"), expected_version=1)
        next_ = UnitOfWork(instance=inst("a", 3, state="mine"), expected_version=2)
        assert await store.commit([mine, next_]) == [X, X]
        assert (await store.load([(SAGA, "a")]))[(SAGA, "a")].version == 2

    async def test_a_check_commits_only_on_the_version_it_names(self, store: Store) -> None:
        """A unit that writes no instance but was decided on one (a message parked or
        dead-lettered, a timer ignored) names the version it saw: 0 for none."""
        key = (SAGA, "a")
        parked = UnitOfWork(parked=(park("a", "p"),), check=(key, 0))
        assert await store.commit([parked]) == [C]
        assert await store.commit([step("a", 1)]) == [C]
        late = UnitOfWork(parked=(park("a", "q"),), check=(key, 0))
        ignored = UnitOfWork(timers_cancelled=((SAGA, "a", "t"),), check=(key, 1))
        assert await store.commit([late, ignored]) == [X, C]
        assert await store.commit([step("a", 2)]) == [C]
        # decided on version 2 while this batch's own first unit, which conflicted, would
        # have written 2 again: chained on it, so it conflicts even though 2 is stored
        chained = UnitOfWork(check=(key, 2))
        again = UnitOfWork(instance=inst("a", 2, state="again"), expected_version=1)
        assert await store.commit([again, chained]) == [X, X]
        # the same when the unit it builds on was a duplicate (another replica applied
        # that message, and wrote its own version 3)
        theirs = UnitOfWork(instance=inst("a", 3), expected_version=2, inbox=(SAGA, "m3"))
        assert await store.commit([theirs]) == [C]
        ours = UnitOfWork(
            instance=inst("a", 3, state="ours"), expected_version=2, inbox=(SAGA, "m3")
        )
        assert await store.commit([ours, UnitOfWork(check=(key, 3))]) == [D, X]
        assert [p.message_id for p in await store.parked([key])] == ["p"]

    async def test_large_batch(self, store: Store) -> None:
        units = [step(f"i{n}", 1) for n in range(700)]
        assert await store.commit(units) == [C] * 700
        assert len(await store.load([(SAGA, f"i{n}") for n in range(700)])) == 700
        assert len(await store.seen([(SAGA, f"i{n}-m1") for n in range(700)])) == 700
        assert await store.commit(units[::2]) == [D] * 350
        assert (await store.counts()) == {"running": 700}

    async def test_large_batch_keeps_order_and_net_effects(self, store: Store) -> None:
        """Big enough that set-based stores split every table's rows into several
        statements: order and net effects must hold across the pieces."""
        n = 700
        units = [
            UnitOfWork(
                instance=inst(f"j{i}"),
                inbox=(SAGA, f"j{i}-m1"),
                history=(hist(f"j{i}", 1),),
                outbox=(out(f"o{i:04d}-{(i * 7919) % n}"),),
                timers_set=(timer(f"j{i}", "t", 10.0 + i),),
            )
            for i in range(n)
        ]
        assert await store.commit(units) == [C] * n
        pending = await store.pending_outbox(limit=n + 10)
        assert [o.id for o in pending] == [u.outbox[0].id for u in units]
        assert [t.correlation_id for t in await store.due_timers(10.0 + n)] == [
            f"j{i}" for i in range(n)
        ]
        cancel = [UnitOfWork(timers_cancelled=((SAGA, f"j{i}", "t"),)) for i in range(0, n, 2)]
        assert await store.commit(cancel, published=[o.id for o in pending]) == [C] * len(cancel)
        assert await store.pending_outbox() == []
        assert [t.correlation_id for t in await store.due_timers(10.0 + n)] == [
            f"j{i}" for i in range(1, n, 2)
        ]

    # -- outbox ---------------------------------------------------------------------

    async def test_outbox_pending_in_insertion_order(self, store: Store) -> None:
        await store.commit([UnitOfWork(outbox=(out("z"), out("a")))])
        await store.commit([UnitOfWork(outbox=(out("m"),)), UnitOfWork(outbox=(out("b"),))])
        assert [o.id for o in await store.pending_outbox()] == ["z", "a", "m", "b"]
        assert [o.id for o in await store.pending_outbox(limit=2)] == ["z", "a"]
        assert (await store.pending_outbox())[0] == out("z")

    async def test_mark_published(self, store: Store) -> None:
        await store.commit([UnitOfWork(outbox=(out("1"), out("2"), out("3"), out("4")))])
        await store.mark_published(["2", "4", "unknown"])
        assert [o.id for o in await store.pending_outbox()] == ["1", "3"]
        await store.mark_published(["2"])  # again: no error
        assert [o.id for o in await store.pending_outbox()] == ["1", "3"]

    async def test_commit_removes_published_in_the_same_transaction(self, store: Store) -> None:
        await store.commit([UnitOfWork(outbox=(out("1"), out("2")))])
        outcomes = await store.commit(
            [UnitOfWork(outbox=(out("3"), out("4")))], published=["1", "4", "nope"]
        )
        assert outcomes == [C]
        assert [o.id for o in await store.pending_outbox()] == ["2", "3"]
        assert await store.commit([], published=["2"]) == []
        assert [o.id for o in await store.pending_outbox()] == ["3"]

    async def test_outbox_binary_body_headers_and_null_key(self, store: Store) -> None:
        record = OutboxRecord(
            id="b", destination="d", key=None, body=BINARY, headers=(), created_at=2.5
        )
        await store.commit([UnitOfWork(outbox=(record, out("h", body=b"\x00")))])
        assert await store.pending_outbox() == [record, out("h", body=b"\x00")]

    async def test_outbox_same_id_again_keeps_its_place(self, store: Store) -> None:
        await store.commit([UnitOfWork(outbox=(out("1"), out("2")))])
        await store.commit(
            [UnitOfWork(outbox=(out("1", body=b"new"),)), UnitOfWork(outbox=(out("3"),))]
        )
        pending = await store.pending_outbox()
        assert [(o.id, o.body) for o in pending] == [("1", b"new"), ("2", b"{}"), ("3", b"{}")]

    async def test_pending_outbox_leaves_out_excluded_destinations(self, store: Store) -> None:
        """A destination backing off in the relay must not fill the window with its
        backlog and hide every other destination's rows."""
        rows = [out(f"x{i}", destination="down") for i in range(5)] + [out("y", destination="up")]
        await store.commit([UnitOfWork(outbox=tuple(rows))])
        assert [o.id for o in await store.pending_outbox(limit=2)] == ["x0", "x1"]
        assert [o.id for o in await store.pending_outbox(limit=2, exclude=["down"])] == ["y"]
        assert await store.pending_outbox(exclude=["down", "up"]) == []
        assert len(await store.pending_outbox(exclude=["elsewhere"])) == 6

    async def test_history_keeps_a_note(self, store: Store) -> None:
        """A deviation from the declared flow is written to the history in words."""
        unit = step("a", 1)
        noted = dataclasses.replace(unit.history[0], note="deviation early: x.y m-9 ...")
        unit.history = (noted,)
        assert await store.commit([unit]) == [C]
        (got,) = await store.history((SAGA, "a"))
        assert got == noted

    # -- outbox rows the broker refused for good --------------------------------------

    async def test_mark_failed_takes_rows_out_of_pending_and_keeps_them(self, store: Store) -> None:
        bare = OutboxRecord(id="2", destination="d", key=None, body=BINARY, created_at=2.5)
        await store.commit([UnitOfWork(outbox=(out("1"), bare, out("3")))])
        await store.mark_failed([("2", "header too large"), ("unknown", "nope")], at=5.0)
        assert [o.id for o in await store.pending_outbox()] == ["1", "3"]
        failed = [FailedOutboxRecord(bare, "header too large", 5.0)]
        assert await store.failed_outbox() == failed  # bytes, key, headers, time: all kept
        # failing it again, publishing it: no harm, nothing moves
        await store.mark_failed([("2", "again")], at=6.0)
        await store.mark_published(["2"])
        assert await store.commit([], published=["2"]) == []
        assert await store.failed_outbox() == failed
        assert [o.id for o in await store.pending_outbox()] == ["1", "3"]
        await store.mark_published(["1", "3"])
        assert await store.pending_outbox() == []
        assert await store.failed_outbox() == failed

    async def test_failed_outbox_most_recent_first(self, store: Store) -> None:
        await store.commit([UnitOfWork(outbox=tuple(out(i) for i in "abcde"))])
        await store.mark_failed([("c", "too large"), ("a", "bad subject")], at=1.0)
        await store.mark_failed([("d", "bad header")], at=2.0)
        await store.mark_failed([("e", "first"), ("e", "second")], at=0.5)  # the first kept
        got = [(f.row.id, f.reason, f.failed_at) for f in await store.failed_outbox()]
        assert got == [
            ("d", "bad header", 2.0),
            ("a", "bad subject", 1.0),  # failed at the same time: by id
            ("c", "too large", 1.0),
            ("e", "first", 0.5),
        ]
        assert [f.row.id for f in await store.failed_outbox(limit=2)] == ["d", "a"]
        assert [o.id for o in await store.pending_outbox()] == ["b"]

    async def test_a_failed_row_blocks_nothing_behind_it(self, store: Store) -> None:
        """The relay reads the oldest rows first: a refused one at the head must leave
        the head, or every row behind it waits forever."""
        await store.commit([UnitOfWork(outbox=(out("poison"),))])
        await store.commit([step("a", 1), step("b", 1)])
        assert [o.id for o in await store.pending_outbox(limit=1)] == ["poison"]
        await store.mark_failed([("poison", "header size exceeds maximum allowed")], at=3.0)
        assert [o.id for o in await store.pending_outbox(limit=1)] == ["a-o1"]
        assert await store.commit([step("a", 2)], published=["a-o1", "b-o1"]) == [C]
        assert [o.id for o in await store.pending_outbox()] == ["a-o2"]

    async def test_mark_failed_many_rows(self, store: Store) -> None:
        n = 700  # past one statement's worth of rows in the set-based stores
        await store.commit([UnitOfWork(outbox=tuple(out(f"o{i:04d}") for i in range(n)))])
        await store.mark_failed([(f"o{i:04d}", f"r{i}") for i in range(0, n, 2)], at=1.0)
        pending = await store.pending_outbox(limit=n)
        assert [o.id for o in pending] == [f"o{i:04d}" for i in range(1, n, 2)]
        failed = await store.failed_outbox(limit=n)
        assert [(f.row.id, f.reason) for f in failed] == [
            (f"o{i:04d}", f"r{i}") for i in range(0, n, 2)
        ]

    async def test_an_id_committed_again_after_failing_is_pending_again(self, store: Store) -> None:
        """A failed id is not barred: a later commit of a row with that id asked for it
        to be sent, and the relay tries; refused again, it takes the new reason."""
        await store.commit([UnitOfWork(outbox=(out("x"),))])
        await store.mark_failed([("x", "first")], at=1.0)
        await store.commit([UnitOfWork(outbox=(out("x", body=b"new"),))])
        assert [(o.id, o.body) for o in await store.pending_outbox()] == [("x", b"new")]
        await store.mark_failed([("x", "second")], at=2.0)
        assert await store.pending_outbox() == []
        failed = await store.failed_outbox()
        assert [(f.row.body, f.reason, f.failed_at) for f in failed] == [(b"new", "second", 2.0)]

    # -- timers ---------------------------------------------------------------------

    async def test_timers_due_move_cancel(self, store: Store) -> None:
        await store.commit(
            [
                UnitOfWork(
                    timers_set=(
                        timer("a", "t1", 10.0, payload=BINARY),
                        timer("a", "t2", 5.0),
                        timer("b", "t1", 20.0),
                    )
                )
            ]
        )
        assert await store.next_timer_due() == 5.0
        due = await store.due_timers(10.0)
        assert [t.key for t in due] == [(SAGA, "a", "t2"), (SAGA, "a", "t1")]
        assert due[1].payload == BINARY
        assert [t.key for t in await store.due_timers(10.0, limit=1)] == [(SAGA, "a", "t2")]
        assert await store.due_timers(4.9) == []
        # Setting a timer again moves it.
        await store.commit([UnitOfWork(timers_set=(timer("a", "t2", 30.0),))])
        assert await store.next_timer_due() == 10.0
        assert [t.key for t in await store.due_timers(10.0)] == [(SAGA, "a", "t1")]
        await store.commit([UnitOfWork(timers_cancelled=((SAGA, "a", "t1"), (SAGA, "x", "y")))])
        assert await store.due_timers(15.0) == []
        assert await store.next_timer_due() == 20.0
        assert [t.due for t in await store.due_timers(100.0)] == [20.0, 30.0]

    async def test_timers_equal_due_ordered_by_key(self, store: Store) -> None:
        timers = (timer("b", "x", 1.0), timer("a", "y", 1.0), timer("a", "x", 1.0))
        await store.commit([UnitOfWork(timers_set=timers)])
        keys = [t.key for t in await store.due_timers(1.0)]
        assert keys == [(SAGA, "a", "x"), (SAGA, "a", "y"), (SAGA, "b", "x")]

    async def test_timer_net_effect_within_a_batch(self, store: Store) -> None:
        await store.commit(
            [
                UnitOfWork(timers_set=(timer("a", "t", 1.0), timer("b", "t", 1.0))),
                UnitOfWork(timers_cancelled=((SAGA, "a", "t"),)),
                # Cancel and set in one unit: the cancel comes first, so it stays set.
                UnitOfWork(
                    timers_cancelled=((SAGA, "b", "t"),), timers_set=(timer("b", "t", 2.0),)
                ),
            ]
        )
        assert [(t.key, t.due) for t in await store.due_timers(10.0)] == [((SAGA, "b", "t"), 2.0)]

    # -- parking --------------------------------------------------------------------

    async def test_parked_unpark_expired_keys(self, store: Store) -> None:
        await store.commit(
            [
                UnitOfWork(parked=(park("a", "p2", at=2.0, expires=50.0, body=BINARY),)),
                UnitOfWork(parked=(park("a", "p1", at=1.0, expires=60.0), park("b", "p3", at=3.0))),
            ]
        )
        assert [p.message_id for p in await store.parked([(SAGA, "a")])] == ["p1", "p2"]
        assert (await store.parked([(SAGA, "a")]))[1].body == BINARY
        assert [p.message_id for p in await store.parked([(SAGA, "a"), (SAGA, "b")])] == [
            "p1",
            "p2",
            "p3",
        ]
        assert await store.parked_keys() == {(SAGA, "a"), (SAGA, "b")}
        assert [p.message_id for p in await store.expired_parked(60.0)] == ["p2", "p1"]
        assert [p.message_id for p in await store.expired_parked(60.0, limit=1)] == ["p2"]
        assert await store.expired_parked(49.0) == []
        # Parking the same message again keeps the first record.
        await store.commit([UnitOfWork(parked=(park("a", "p1", at=9.0, body=b"again"),))])
        p1 = (await store.parked([(SAGA, "a")]))[0]
        assert (p1.message_id, p1.body, p1.parked_at) == ("p1", b"{}", 1.0)
        await store.commit([UnitOfWork(unparked=((SAGA, "p1"), (SAGA, "p2"), (SAGA, "zz")))])
        assert await store.parked([(SAGA, "a")]) == []
        assert await store.parked_keys() == {(SAGA, "b")}

    async def test_park_unpark_net_effect_within_a_batch(self, store: Store) -> None:
        await store.commit([UnitOfWork(parked=(park("a", "kept", body=b"old"),))])
        await store.commit(
            [
                UnitOfWork(parked=(park("a", "gone"),)),
                UnitOfWork(unparked=((SAGA, "gone"),)),
                UnitOfWork(unparked=((SAGA, "kept"),)),
                UnitOfWork(parked=(park("a", "kept", body=b"new"),)),
                UnitOfWork(parked=(park("a", "kept", body=b"newer"),)),
                # Parked and un-parked in one unit: un-parking comes last.
                UnitOfWork(parked=(park("a", "same"),), unparked=((SAGA, "same"),)),
            ]
        )
        assert [(p.message_id, p.body) for p in await store.parked([(SAGA, "a")])] == [
            ("kept", b"new")
        ]

    # -- history, listing, counts ---------------------------------------------------

    async def test_history_in_order(self, store: Store) -> None:
        await store.commit([step("a", 1), step("b", 1)])
        await store.commit([step("a", 2)])
        await store.commit([UnitOfWork(history=(hist("a", 3, at=0.5), hist("a", 4, at=0.1)))])
        history = await store.history((SAGA, "a"))
        assert [h.seq for h in history] == [1, 2, 3, 4]
        assert history[0] == hist("a", 1)
        assert history[0].commands == ("Reserve:a-1", "Notify:a-1")
        assert [h.seq for h in await store.history((SAGA, "b"))] == [1]

    async def test_instances_and_counts(self, store: Store) -> None:
        await store.commit(
            [
                UnitOfWork(instance=inst("a", at=3.0)),
                UnitOfWork(instance=inst("b", at=5.0, status="completed")),
                UnitOfWork(instance=inst("c", at=4.0, saga="shipping")),
                UnitOfWork(instance=inst("d", at=1.0, status="failed")),
            ]
        )
        assert [r.correlation_id for r in await store.instances()] == ["b", "c", "a", "d"]
        assert [r.correlation_id for r in await store.instances(limit=2)] == ["b", "c"]
        assert [r.correlation_id for r in await store.instances(saga=SAGA)] == ["b", "a", "d"]
        assert [r.correlation_id for r in await store.instances(status="running")] == ["c", "a"]

        assert [
            r.correlation_id for r in await store.instances(saga="shipping", status="running")
        ] == ["c"]
        assert await store.instances(saga="nope") == []
        assert await store.counts() == {"running": 2, "completed": 1, "failed": 1}
        done = inst("a", 2, status="completed", at=6.0)
        await store.commit([UnitOfWork(instance=done, expected_version=1)])
        assert await store.counts() == {"running": 1, "completed": 2, "failed": 1}
        assert (await store.instances())[0] == done

    async def test_instances_updated_at_the_same_time_come_by_key(self, store: Store) -> None:
        await store.commit([UnitOfWork(instance=inst(c, at=2.0)) for c in ("c", "a", "b")])
        await store.commit([UnitOfWork(instance=inst("a", 2, at=2.0), expected_version=1)])
        assert [r.correlation_id for r in await store.instances()] == ["a", "b", "c"]
        assert [r.correlation_id for r in await store.instances(limit=2)] == ["a", "b"]

    # -- durability -----------------------------------------------------------------

    async def test_close_and_reopen_keeps_everything(self, store_factory: StoreFactory) -> None:
        if not self.durable:
            pytest.skip("this store forgets everything on close")
        first: Store = store_factory()
        await first.open()
        unit = step("a", 1, data=BINARY)
        unit.timers_set = (timer("a", "t", 7.0, payload=BINARY),)
        unit.parked = (park("b", "p", body=BINARY),)
        unit.outbox = (*unit.outbox, out("refused", body=BINARY))
        await first.commit([unit, step("c", 1)], published=[])
        await first.mark_published(["c-o1"])
        await first.mark_failed([("refused", "too large")], at=4.0)
        await first.close()

        second: Store = store_factory()
        await second.open()
        try:
            assert (await second.load([(SAGA, "a")]))[(SAGA, "a")] == inst("a", 1, data=BINARY)
            assert await second.seen([(SAGA, "a-m1")]) == {(SAGA, "a-m1")}
            assert await second.pending_outbox() == [out("a-o1")]
            refused = FailedOutboxRecord(out("refused", body=BINARY), "too large", 4.0)
            assert await second.failed_outbox() == [refused]
            assert await second.due_timers(7.0) == [timer("a", "t", 7.0, payload=BINARY)]
            assert await second.next_timer_due() == 7.0
            assert await second.parked([(SAGA, "b")]) == [park("b", "p", body=BINARY)]
            assert await second.parked_keys() == {(SAGA, "b")}
            assert await second.history((SAGA, "a")) == [hist("a", 1)]
            assert await second.commit([step("a", 1)]) == [D]
            assert await second.commit([step("a", 2)]) == [C]
        finally:
            await second.close()

    async def test_prune_drops_old_inbox_marks(self, store: Store) -> None:
        prune = store.prune
        await store.commit([step("a", 1), step("a", 2), step("a", 3)])  # marks at 1.0, 2.0, 3.0
        assert await prune(inbox_before=2.5) == 2
        marks = [(SAGA, f"a-m{v}") for v in (1, 2, 3)]
        assert await store.seen(marks) == {(SAGA, "a-m3")}
        assert len(await store.history((SAGA, "a"))) == 3
        assert await prune(inbox_before=0.0, history_before=1.5) == 1
        assert [h.seq for h in await store.history((SAGA, "a"))] == [2, 3]

    # -- schema migration -----------------------------------------------------------

    async def test_a_database_of_the_previous_schema_is_migrated_at_open(
        self, store_factory: StoreFactory, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A database written by the previous release opens, is brought to this schema
        in place, and keeps everything. The previous release is this one with the
        schema version lowered: migrations are append-only, so its tables are exactly
        the ones the older migrations create (and it knows nothing newer: asked for
        failed rows, it finds no table). Its units write no history here: the columns
        this build writes there are newer than that schema (``note``, version 3)."""
        if not self.durable:
            pytest.skip("this store forgets everything on close")
        current = _schema.SCHEMA_VERSION
        monkeypatch.setattr(_schema, "SCHEMA_VERSION", current - 1)
        old: Store = store_factory()
        await old.open()
        try:
            assert old.info().schema_version == current - 1
            unit = step("a", 1, data=BINARY)
            unit.timers_set = (timer("a", "t", 7.0),)
            unit.history = ()
            second = step("b", 1)
            second.history = ()
            await old.commit([unit, second])
        finally:
            await old.close()
        monkeypatch.undo()

        new: Store = store_factory()
        await new.open()
        try:
            assert new.info().schema_version == current
            assert (await new.load([(SAGA, "a")]))[(SAGA, "a")] == inst("a", 1, data=BINARY)
            assert await new.seen([(SAGA, "a-m1"), (SAGA, "b-m1")]) == {
                (SAGA, "a-m1"),
                (SAGA, "b-m1"),
            }
            assert await new.history((SAGA, "a")) == []
            assert await new.due_timers(7.0) == [timer("a", "t", 7.0)]
            assert [o.id for o in await new.pending_outbox()] == ["a-o1", "b-o1"]
            await new.mark_failed([("a-o1", "too large")], at=9.0)
            assert [o.id for o in await new.pending_outbox()] == ["b-o1"]
            assert await new.commit([step("a", 2)]) == [C]
            assert await new.history((SAGA, "a")) == [hist("a", 2)]
        finally:
            await new.close()

        again: Store = store_factory()  # opening a migrated database migrates nothing
        await again.open()
        try:
            failed = await again.failed_outbox()
            assert [(f.row, f.reason) for f in failed] == [(out("a-o1"), "too large")]
            assert (await again.load([(SAGA, "a")]))[(SAGA, "a")].version == 2
        finally:
            await again.close()
