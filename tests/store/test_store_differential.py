"""Differential tests: SQLite and PostgreSQL must answer exactly like MemoryStore.

``MemoryStore.commit`` is the reference semantics of the store contract; the durable
stores reach the same answers differently (a batch planned in Python by
``_plan.plan_batch``, then written set-based). Here the same operations go to the
memory store and to one durable store, and after every operation every observable
read is compared: outcomes, instances, inbox marks, history, outbox (and its order),
timers (``due_timers`` at several times and limits, ``next_timer_due``), parked
messages (per instance, all at once, keys, expired), listings and counts.

Three kinds of test:

* deterministic scenarios of the tricky in-batch sequences (bumped twice, set /
  cancel / set timers, park / unpark / park, duplicate marks, a conflict then a
  valid unit, repeated outbox ids, ``published`` naming the batch's own ids);
* minimal reproductions of divergences found by the randomized tests;
* randomized sequences of batches, seeded with plain :mod:`random` and bounded, so
  every run replays the same operations (:func:`random_ops` rebuilds one seed's).

The PostgreSQL variants share one database created for this module and dropped
after it (as ``tests.support.postgres`` does per test), each store starting from
truncated tables: skipped without a server, a failure under ``CI=true``.
"""

from __future__ import annotations

import asyncio
import itertools
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from orchestrator.store.base import (
    HistoryRecord,
    InstanceKey,
    InstanceRecord,
    OutboxRecord,
    ParkedRecord,
    Store,
    TimerRecord,
    UnitOfWork,
)
from orchestrator.store.memory import MemoryStore
from orchestrator.store.postgres import PostgresStore
from orchestrator.store.sqlite import SqliteStore
from tests.support.postgres import HOST, PORT, admin_connection
from tests.support.services import require, unique

# -- the world the operations live in: small, so that keys collide often -------------

SAGAS = ("order", "Ship")
CIDS = ("a", "b", "B", "é")  # case and a non-ASCII id: key order must agree too
KEYS: tuple[InstanceKey, ...] = tuple(itertools.product(SAGAS, CIDS))
MISSING: InstanceKey = ("order", "nope")
TIMER_KEYS: tuple[tuple[str, str, str], ...] = tuple((s, c, n) for s, c in KEYS for n in ("t", "u"))
STATES = ("started", "paid", "done")
STATUSES = ("running", "completed", "failed")
MESSAGE_IDS = tuple(f"m{i}" for i in range(8))
MARKS: tuple[tuple[str, str], ...] = tuple(itertools.product(SAGAS, MESSAGE_IDS))
OUTBOX_IDS = tuple(f"o{i}" for i in range(8))
PARKED_IDS = tuple(f"p{i}" for i in range(5))
S = "order"  # the saga of the hand-written cases


# -- operations ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Commit:
    """``store.commit(units, published=...)``."""

    units: tuple[UnitOfWork, ...]
    published: tuple[str, ...] = ()
    now: float = 10.0  # the time the reads after it ask about


@dataclass(frozen=True, slots=True)
class Publish:
    """``store.mark_published(ids)``."""

    ids: tuple[str, ...]
    now: float = 10.0


@dataclass(frozen=True, slots=True)
class Prune:
    """``store.prune(inbox_before=..., history_before=...)``."""

    inbox_before: float
    history_before: float | None = None
    now: float = 10.0


@dataclass(frozen=True, slots=True)
class Fail:
    """``store.mark_failed(failures, at)``: rows the broker refused for good."""

    failures: tuple[tuple[str, str], ...]
    at: float
    now: float = 10.0


Op = Commit | Publish | Prune | Fail


async def apply(store: Store, op: Op) -> object:
    """Run ``op`` on ``store``; what it returned (outcomes, a count, None)."""
    if isinstance(op, Commit):
        return await store.commit(op.units, published=op.published)
    if isinstance(op, Publish):
        await store.mark_published(op.ids)
        return None
    if isinstance(op, Fail):
        await store.mark_failed(op.failures, op.at)
        return None
    return await store.prune(inbox_before=op.inbox_before, history_before=op.history_before)


def _ranked(rows: Sequence[InstanceRecord]) -> list[InstanceRecord]:
    """Instances newest first, ties by key: the contract orders listings by
    ``updated_at`` only, so rows updated at the same time may come in any order."""
    return sorted(rows, key=lambda r: (-r.updated_at, r.saga, r.correlation_id))


async def observe(store: Store, now: float) -> dict[str, Any]:
    """Every read of the contract, in a fixed order (the memory store's ``due_timers``
    and ``next_timer_due`` tidy its heap, so the order of calls is part of the test)."""
    got: dict[str, Any] = {}
    got["load"] = await store.load([*KEYS, MISSING])
    got["seen"] = await store.seen([*MARKS, ("order", "zz")])
    for key in KEYS:
        got[f"history{key}"] = await store.history(key)
    got["pending_outbox"] = await store.pending_outbox()
    got["pending_outbox(2)"] = await store.pending_outbox(limit=2)
    got["failed_outbox"] = await store.failed_outbox()
    got["failed_outbox(2)"] = await store.failed_outbox(limit=2)
    got["next_timer_due"] = await store.next_timer_due()
    for at, limit in ((now - 0.5, 1000), (now, 1), (now + 3.0, 2), (now + 3.0, 1000), (1e9, 3)):
        got[f"due_timers({at}, {limit})"] = await store.due_timers(at, limit=limit)
    got["next_timer_due again"] = await store.next_timer_due()
    for key in KEYS:
        got[f"parked{key}"] = await store.parked([key])
    got["parked(all)"] = await store.parked([*KEYS, MISSING])
    got["parked_keys"] = await store.parked_keys()
    for at in (now, 1e9):
        got[f"expired_parked({at})"] = await store.expired_parked(at)
        got[f"expired_parked({at}, 2)"] = await store.expired_parked(at, limit=2)
    listing = await store.instances(limit=1000)
    got["instances"] = _ranked(listing)
    got["instances newest first"] = [r.updated_at for r in listing]
    got["instances(limit=2) times"] = [r.updated_at for r in await store.instances(limit=2)]
    for saga, status in ((SAGAS[0], None), (None, STATUSES[0]), (SAGAS[1], STATUSES[1])):
        got[f"instances({saga}, {status})"] = _ranked(await store.instances(saga, status, 1000))
    got["counts"] = await store.counts()
    return got


def _differences(want: dict[str, Any], got: dict[str, Any]) -> list[str]:
    return [
        f"  {name}:\n    memory:  {want[name]!r}\n    durable: {got[name]!r}"
        for name in want
        if want[name] != got[name]
    ]


async def run_both(
    reference: Store, durable: Store, ops: Sequence[Op], label: str = ""
) -> list[str]:
    """Apply ``ops`` to both stores; after each one, compare its result and every read.
    Returns the differences after the first operation where there are any (else [])."""
    for n, op in enumerate(ops):
        want = {"result": await apply(reference, op)}
        got = {"result": await apply(durable, op)}
        want.update(await observe(reference, op.now))
        got.update(await observe(durable, op.now))
        diffs = _differences(want, got)
        if diffs:
            head = f"{label}operation {n} of {len(ops)} ({type(op).__name__}):\n  {op!r}"
            return [head, *diffs]
    return []


# -- stores ---------------------------------------------------------------------------

FreshStore = Callable[[], Awaitable[Store]]
_TABLES = "instances, inbox, history, outbox, outbox_failed, timers, parked"


@pytest.fixture(scope="module")
def module_database_url() -> Iterator[str]:
    """A database of this module's own, created and dropped like ``database_url`` does
    for each test (and, like it, skipped without a server, a failure under ``CI=true``),
    but once: every store here starts from truncated tables instead. Only the URL
    leaves the fixture, so its short-lived event loops do not meet the tests'."""
    require("postgres", HOST, PORT)
    name = unique("sw_diff_")

    async def admin(sql: str) -> str:
        conn, user = await admin_connection()
        try:
            await conn.execute(sql)
        finally:
            await conn.close()
        return user

    user = asyncio.run(admin(f'CREATE DATABASE "{name}"'))
    try:
        yield f"postgresql://{user}@{HOST}:{PORT}/{name}"
    finally:
        asyncio.run(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def durable_location(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, str]:
    """``(kind, where)``: a temporary directory for SQLite, this module's database for
    PostgreSQL."""
    if request.param == "sqlite":
        return ("sqlite", str(tmp_path))
    url: str = request.getfixturevalue("module_database_url")
    return ("postgres", url)


@pytest.fixture
async def fresh_durable(durable_location: tuple[str, str]) -> AsyncIterator[FreshStore]:
    """A factory of opened, empty durable stores of one kind; all closed afterwards."""
    kind, where = durable_location
    opened: list[Store] = []
    counter = itertools.count()

    async def fresh() -> Store:
        store: Store
        if kind == "sqlite":
            store = SqliteStore(str(Path(where) / f"diff{next(counter)}.db"))
            await store.open()
        else:
            store = PostgresStore(where, pool_min=1, pool_max=2)
            await store.open()
            conn = await asyncpg.connect(where)
            try:
                await conn.execute(f"TRUNCATE {_TABLES} RESTART IDENTITY")
            finally:
                await conn.close()
        opened.append(store)
        return store

    try:
        yield fresh
    finally:
        for store in opened:
            await store.close()


async def check(fresh: FreshStore, ops: Sequence[Op]) -> None:
    reference = MemoryStore()
    await reference.open()
    durable = await fresh()
    diffs = await run_both(reference, durable, ops)
    assert not diffs, f"{type(durable).__name__} differs from MemoryStore after\n" + "\n".join(
        diffs
    )


# -- record builders ------------------------------------------------------------------


def inst(
    cid: str, version: int, *, at: float = 1.0, state: str = "started", saga: str = S
) -> InstanceRecord:
    return InstanceRecord(
        saga, cid, state, "running", version, f'{{"v":{version}}}'.encode(), b"{}", 1.0, at
    )


def hist(cid: str, seq: int, *, at: float = 1.0, saga: str = S) -> HistoryRecord:
    return HistoryRecord(saga, cid, seq, f"{cid}-m{seq}", "Evt", f"s{seq - 1}", f"s{seq}", (), at)


def out(mid: str, *, body: bytes = b"{}", at: float = 1.0) -> OutboxRecord:
    return OutboxRecord(mid, "dest", None, body, (("h", "1"),), at)


def timer(cid: str, name: str, due: float, *, payload: bytes = b"{}") -> TimerRecord:
    return TimerRecord(S, cid, name, due, payload)


def park(
    cid: str, mid: str, *, at: float = 1.0, expires: float = 5.0, body: bytes = b"{}"
) -> ParkedRecord:
    return ParkedRecord(S, cid, mid, "dest", body, at, expires, "waiting")


def bump(cid: str, version: int, *, at: float = 1.0, mark: str | None = None) -> UnitOfWork:
    """Instance ``cid`` from ``version - 1`` to ``version``, with inbox and history."""
    return UnitOfWork(
        instance=inst(cid, version, at=at),
        expected_version=version - 1,
        inbox=(S, mark or f"{cid}-m{version}"),
        history=(hist(cid, version, at=at),),
    )


def commit(*units: UnitOfWork, published: Sequence[str] = (), now: float = 10.0) -> Commit:
    return Commit(tuple(units), tuple(published), now)


# -- in-batch sequences that must net out like the reference (found equal) ------------

SCENARIOS: dict[str, list[Op]] = {
    "same instance bumped twice, then twice again": [
        commit(bump("a", 1), bump("a", 2, at=2.0)),
        commit(bump("a", 3, at=3.0), bump("a", 4, at=3.0), bump("b", 1, at=3.0)),
    ],
    "a conflict, then a valid unit for the same instance and mark": [
        commit(bump("a", 1)),
        commit(
            UnitOfWork(instance=inst("a", 3), expected_version=2, inbox=(S, "m")),
            UnitOfWork(instance=inst("a", 2, at=2.0), expected_version=1, inbox=(S, "m")),
            UnitOfWork(instance=inst("a", 3, at=3.0), expected_version=2, inbox=(S, "m")),
            UnitOfWork(instance=inst("a", 3, at=3.0), expected_version=2, inbox=(S, "m2")),
        ),
    ],
    "a valid unit, then a conflict that would have set and parked things": [
        commit(
            bump("a", 1),
            UnitOfWork(
                instance=inst("a", 1, state="late"),
                inbox=(S, "late"),
                history=(hist("a", 9),),
                outbox=(out("o-late"),),
                timers_set=(timer("a", "t", 1.0),),
                timers_cancelled=((S, "a", "u"),),
                parked=(park("a", "p-late"),),
                unparked=((S, "p-late"),),
            ),
        ),
    ],
    "duplicate inbox marks inside one batch": [
        commit(
            UnitOfWork(inbox=(S, "m"), outbox=(out("o1"),)),
            UnitOfWork(inbox=(S, "m"), outbox=(out("o2"),), timers_set=(timer("a", "t", 1.0),)),
            bump("a", 1, mark="m"),
            bump("a", 1, mark="m2"),
        ),
        commit(bump("a", 2, mark="m2"), bump("a", 2, mark="m3")),
    ],
    "timer set, cancelled, set again; in one unit and across units": [
        commit(UnitOfWork(timers_set=(timer("a", "t", 5.0),))),
        commit(
            UnitOfWork(timers_set=(timer("a", "t", 1.0), timer("b", "t", 2.0))),
            UnitOfWork(timers_cancelled=((S, "a", "t"), (S, "b", "t"))),
            UnitOfWork(timers_set=(timer("a", "t", 3.0, payload=b"again"),)),
            UnitOfWork(
                timers_cancelled=((S, "b", "t"),),
                timers_set=(timer("b", "t", 2.0), timer("b", "t", 4.0)),
            ),
        ),
        commit(UnitOfWork(timers_cancelled=((S, "a", "t"),), timers_set=(timer("a", "t", 3.0),))),
    ],
    "timer set twice at the same due time, then moved away and back": [
        commit(
            UnitOfWork(timers_set=(timer("a", "t", 2.0),)),
            UnitOfWork(timers_set=(timer("a", "t", 2.0, payload=b"second"),)),
            UnitOfWork(timers_set=(timer("b", "t", 2.0),)),
        ),
        commit(UnitOfWork(timers_set=(timer("a", "t", 2.0, payload=b"third"),))),
        commit(UnitOfWork(timers_set=(timer("a", "t", 7.0),))),
        commit(UnitOfWork(timers_set=(timer("a", "t", 2.0, payload=b"back"),))),
        commit(UnitOfWork(timers_cancelled=((S, "b", "t"),))),
        commit(UnitOfWork(timers_cancelled=((S, "a", "t"),))),
    ],
    "parked, then un-parked, in one unit and across units": [
        commit(UnitOfWork(parked=(park("a", "kept", body=b"old"),))),
        commit(
            UnitOfWork(parked=(park("a", "gone"),)),
            UnitOfWork(unparked=((S, "gone"),)),
            UnitOfWork(parked=(park("a", "same"),), unparked=((S, "same"),)),
            UnitOfWork(parked=(park("a", "kept", body=b"new"),)),
            UnitOfWork(parked=(park("b", "other", at=0.5),)),
        ),
    ],
    "outbox ids repeated in a unit, across units and over a stored row": [
        commit(UnitOfWork(outbox=(out("o1"), out("o2")))),
        commit(
            UnitOfWork(outbox=(out("o3"), out("o3", body=b"3b"), out("o1", body=b"1b"))),
            UnitOfWork(outbox=(out("o4"),)),
            UnitOfWork(outbox=(out("o3", body=b"3c"),)),
        ),
    ],
    "published ids include ids written by the same batch": [
        commit(UnitOfWork(outbox=(out("o1"), out("o2")))),
        commit(
            UnitOfWork(outbox=(out("o3"), out("o1", body=b"again"))),
            UnitOfWork(outbox=(out("o4"),)),
            published=("o3", "o1", "o9", "o3"),
        ),
        commit(UnitOfWork(outbox=(out("o1"), out("o3"))), published=("o4",)),
    ],
    "pending_outbox order after mark_published and re-adding": [
        commit(UnitOfWork(outbox=(out("o1"), out("o2"), out("o3"), out("o4")))),
        Publish(("o4", "o2")),
        commit(UnitOfWork(outbox=(out("o4"), out("o5"), out("o2")))),
        Publish(("o1", "o5", "o5")),
        commit(UnitOfWork(outbox=(out("o1"), out("o3", body=b"moved?")))),
    ],
    "failed rows leave the outbox, and come back when committed again": [
        commit(UnitOfWork(outbox=(out("o1"), out("o2"), out("o3"), out("o4")))),
        Fail((("o2", "too large"), ("o9", "unknown"), ("o2", "again")), at=1.0),
        Fail((("o4", "bad subject"), ("o1", "bad header")), at=1.0),
        commit(UnitOfWork(outbox=(out("o2", body=b"new"), out("o5"))), published=("o4",)),
        Fail((("o2", "too large still"), ("o5", "no")), at=2.0),
        Publish(("o1", "o2")),
    ],
}


@pytest.mark.parametrize("name", list(SCENARIOS))
async def test_in_batch_sequences_net_out_like_memory(fresh_durable: FreshStore, name: str) -> None:
    await check(fresh_durable, SCENARIOS[name])


# -- divergences found (minimal reproductions) ----------------------------------------


async def test_message_parked_again_within_a_batch_goes_last(fresh_durable: FreshStore) -> None:
    """MemoryStore: a message parked, un-parked and parked again in one batch is a new
    row, placed after the messages parked in between (``parked`` and
    ``expired_parked`` read ties of ``parked_at``/``expires`` in insertion order).
    ``plan_batch`` keeps the key at its first position in its dict, so the durable
    stores insert it first: [x, y] instead of [y, x]."""
    await check(
        fresh_durable,
        [
            commit(
                UnitOfWork(parked=(park("a", "x"), park("a", "y")), unparked=((S, "x"),)),
                UnitOfWork(parked=(park("a", "x", body=b"again"),)),
            )
        ],
    )


async def test_stored_message_unparked_then_parked_again_goes_last(
    fresh_durable: FreshStore,
) -> None:
    """The same with the first copy stored by an earlier batch."""
    await check(
        fresh_durable,
        [
            commit(UnitOfWork(parked=(park("a", "x"),))),
            commit(
                UnitOfWork(unparked=((S, "x"),)),
                UnitOfWork(parked=(park("a", "y"), park("a", "x", body=b"again"))),
            ),
        ],
    )


async def test_inbox_mark_time_after_a_conflicting_unit_with_the_same_mark(
    fresh_durable: FreshStore,
) -> None:
    """A unit that conflicts and a later one with the same inbox mark that commits: the
    mark is the committed unit's, written at its time (5.0). PostgreSQL inserts the
    batch's marks before deciding, at the time of the *first* unit carrying each, and
    keeps that row: the mark is dated 1.0 and the prune at 3.0 drops it."""
    await check(
        fresh_durable,
        [
            commit(
                UnitOfWork(instance=inst("a", 2, at=1.0), expected_version=1, inbox=(S, "m")),
                UnitOfWork(instance=inst("a", 1, at=5.0), expected_version=0, inbox=(S, "m")),
            ),
            Prune(inbox_before=3.0),
        ],
    )


async def test_inbox_mark_time_of_a_unit_with_history_but_no_instance(
    fresh_durable: FreshStore,
) -> None:
    """MemoryStore dates such a mark by its *first* history entry (1.0),
    ``_plan.unit_time`` by its *last* (9.0). Only ``prune`` sees the date. This and the
    next test ask the stores to agree; either rule would do (the engine's own units
    with an inbox mark always carry an instance, dated by its ``updated_at``)."""
    unit = UnitOfWork(inbox=(S, "m"), history=(hist("a", 1, at=1.0), hist("a", 2, at=9.0)))
    await check(fresh_durable, [commit(unit), Prune(inbox_before=5.0)])


async def test_inbox_mark_time_of_a_unit_with_no_instance_or_history(
    fresh_durable: FreshStore,
) -> None:
    """MemoryStore dates such a mark 0.0, so the first prune drops it and a redelivery
    after that would be applied again; ``_plan.unit_time`` takes the last parked
    record's ``parked_at``, else the last outbox row's ``created_at``, else the latest
    time of any unit in the batch."""
    await check(
        fresh_durable,
        [
            commit(
                UnitOfWork(inbox=(S, "parks"), parked=(park("a", "p", at=6.0),)),
                UnitOfWork(inbox=(S, "sends"), outbox=(out("o", at=7.0),)),
                UnitOfWork(inbox=(S, "bare")),
                UnitOfWork(instance=inst("b", 1, at=8.0)),
            ),
            Prune(inbox_before=5.0),
        ],
    )


# -- randomized sequences ---------------------------------------------------------------


def _random_unit(rng: random.Random, versions: dict[InstanceKey, int], t: float) -> UnitOfWork:
    """A unit touching a random subset of everything; ``versions`` is the generator's
    guess of each instance's version, updated as if the unit commits (it may not)."""
    unit = UnitOfWork()
    saga = rng.choice(SAGAS)
    if rng.random() < 0.6:
        key = rng.choice(KEYS)
        saga = key[0]
        have = versions.get(key, 0)
        expected = have if rng.random() < 0.75 else rng.choice((have + 1, max(have - 1, 0), 0))
        unit.instance = InstanceRecord(
            key[0],
            key[1],
            rng.choice(STATES),
            rng.choice(STATUSES),
            expected + 1,
            rng.randbytes(rng.randrange(4)),
            f'{{"n":{rng.randrange(3)}}}'.encode(),
            rng.choice((0.0, 1.0)),
            t + rng.choice((0.0, 0.0, 0.5)),
        )
        unit.expected_version = expected
        if expected == have:
            versions[key] = expected + 1
    if rng.random() < 0.8:
        unit.inbox = (saga, rng.choice(MESSAGE_IDS))
    if rng.random() < 0.5:
        key = unit.instance.key if unit.instance is not None else rng.choice(KEYS)
        unit.history = tuple(
            HistoryRecord(
                key[0],
                key[1],
                rng.randrange(1, 9),
                rng.choice(MESSAGE_IDS),
                rng.choice(("A", "B")),
                rng.choice(STATES),
                rng.choice(STATES),
                tuple(rng.sample(("X:1", "Y:2", "Z:é"), rng.randrange(3))),
                t - rng.choice((0.0, 1.0, 2.5)),
            )
            for _ in range(rng.randrange(1, 3))
        )
    if rng.random() < 0.5:
        unit.outbox = tuple(
            OutboxRecord(
                rng.choice(OUTBOX_IDS),
                rng.choice(("d1", "d2")),
                rng.choice((None, "k")),
                rng.randbytes(rng.randrange(3)),
                tuple(rng.sample((("a", "1"), ("a", "2"), ("b", "é")), rng.randrange(3))),
                t - rng.choice((0.0, 0.5)),
            )
            for _ in range(rng.randrange(1, 3))
        )
    if rng.random() < 0.4:
        unit.timers_cancelled = tuple(rng.sample(TIMER_KEYS, rng.randrange(1, 3)))
    if rng.random() < 0.5:
        unit.timers_set = tuple(
            TimerRecord(*rng.choice(TIMER_KEYS), t + rng.randrange(-4, 8) / 2, rng.randbytes(2))
            for _ in range(rng.randrange(1, 3))
        )
    if rng.random() < 0.35:
        unit.parked = tuple(
            ParkedRecord(
                rng.choice(SAGAS),
                rng.choice(CIDS),
                rng.choice(PARKED_IDS),
                "dest",
                rng.randbytes(2),
                at := t - rng.choice((0.0, 0.0, 1.0)),
                at + rng.choice((1.0, 2.0, 4.0)),
                rng.choice(("", "why")),
            )
            for _ in range(rng.randrange(1, 3))
        )
    if rng.random() < 0.3:
        unit.unparked = tuple(
            (rng.choice(SAGAS), rng.choice(PARKED_IDS)) for _ in range(rng.randrange(1, 3))
        )
    return unit


def random_ops(
    seed: int, count: int, *, prune: bool = True, repark: bool = True, fail: bool = False
) -> list[Op]:
    """``count`` operations, the same ones for the same seed. ``prune=False`` leaves
    out prunes and ``repark=False`` un-parking (both expose known divergences), so
    that the rest can be searched past them; ``fail=True`` adds ``mark_failed`` (off
    by default, so that the other searches replay the seeds they always did)."""
    rng = random.Random(seed)
    versions: dict[InstanceKey, int] = {}
    ops: list[Op] = []
    for n in range(count):
        t = float(n // 2)  # two operations per time step: equal times are common
        roll = rng.random()
        if roll < 0.1:
            ops.append(Publish(tuple(rng.sample(OUTBOX_IDS, rng.randrange(1, 4))), now=t))
        elif roll < 0.18 and prune:
            history_before = rng.choice((None, t - 2.0))
            ops.append(Prune(t - rng.choice((0.0, 1.0, 3.0)), history_before, now=t))
        elif fail and roll > 0.88:
            failures = [(rng.choice(OUTBOX_IDS), rng.choice(("big", "bad"))) for _ in range(3)]
            ops.append(Fail(tuple(failures), at=t - rng.choice((0.0, 1.0)), now=t))
        else:
            units = [_random_unit(rng, versions, t) for _ in range(rng.randrange(1, 7))]
            if not repark:
                for unit in units:
                    unit.unparked = ()
            published = (
                tuple(rng.sample(OUTBOX_IDS, rng.randrange(3))) if rng.random() < 0.3 else ()
            )
            ops.append(Commit(tuple(units), published, now=t))
    return ops


async def search(fresh: FreshStore, seeds: range, count: int, **kinds: bool) -> None:
    for seed in seeds:
        reference = MemoryStore()
        await reference.open()
        durable = await fresh()
        ops = random_ops(seed, count, **kinds)
        diffs = await run_both(reference, durable, ops, f"seed {seed}, {kinds}, ")
        assert not diffs, (
            f"{type(durable).__name__} differs from MemoryStore; replay with "
            f"random_ops({seed}, {count}, **{kinds}):\n" + "\n".join(diffs)
        )


async def test_random_batches_without_prune_or_unpark_match_memory(
    fresh_durable: FreshStore,
) -> None:
    """Everything but the two known divergences (prune dates, re-parking order)."""
    await search(fresh_durable, range(10), 25, prune=False, repark=False)


async def test_random_batches_match_memory(fresh_durable: FreshStore) -> None:
    await search(fresh_durable, range(100, 106), 25)


async def test_random_batches_with_failed_rows_match_memory(fresh_durable: FreshStore) -> None:
    await search(fresh_durable, range(200, 206), 25, prune=False, repark=False, fail=True)


# -- timers only: the memory store's heap after many moves and cancels ------------------


def random_timer_ops(seed: int, count: int) -> list[Op]:
    """Batches that only set, move, re-set and cancel a few timers, many times, with
    due times on a coarse grid so that ties (same due, same key) are common. Some
    batches cancel exactly the timers that ``due_timers`` would return, as the
    engine's housekeeping does after firing them."""
    rng = random.Random(seed)
    keys = TIMER_KEYS[:6]
    ops: list[Op] = []
    for n in range(count):
        t = n / 4
        units: list[UnitOfWork] = []
        for _ in range(rng.randrange(1, 5)):
            unit = UnitOfWork()
            if rng.random() < 0.4:
                unit.timers_cancelled = tuple(rng.sample(keys, rng.randrange(1, 3)))
            if rng.random() < 0.8:
                unit.timers_set = tuple(
                    TimerRecord(*rng.choice(keys), t + rng.randrange(0, 12) / 2, rng.randbytes(1))
                    for _ in range(rng.randrange(1, 4))
                )
            units.append(unit)
        ops.append(Commit(tuple(units), now=t))
    return ops


async def timer_reads(store: Store, rng: random.Random, now: float) -> list[object]:
    reads: list[object] = []
    for _ in range(4):
        at = now + rng.randrange(-2, 10) / 2
        limit = rng.choice((1, 2, 3, 1000))
        reads.append(await store.due_timers(at, limit=limit))
        reads.append(await store.next_timer_due())
    return reads


async def test_random_timer_moves_match_memory(fresh_durable: FreshStore) -> None:
    for seed in range(3):
        reference = MemoryStore()
        await reference.open()
        durable = await fresh_durable()
        ops = random_timer_ops(seed, 120)
        for n, op in enumerate(ops):
            assert isinstance(op, Commit)
            assert await reference.commit(op.units) == await durable.commit(op.units)
            reads = random.Random(seed * 1000 + n)
            want = await timer_reads(reference, reads, op.now)
            reads = random.Random(seed * 1000 + n)
            got = await timer_reads(durable, reads, op.now)
            assert want == got, f"seed {seed}, operation {n}: {op!r}"
            if n % 3 == 0:  # fire what is due, as housekeeping does: cancel it
                fired = await reference.due_timers(op.now)
                assert fired == await durable.due_timers(op.now)
                cancel = Commit((UnitOfWork(timers_cancelled=tuple(x.key for x in fired)),))
                assert await reference.commit(cancel.units) == await durable.commit(cancel.units)
        assert await reference.due_timers(1e9) == await durable.due_timers(1e9)


def test_random_ops_are_deterministic() -> None:
    assert repr(random_ops(7, 20)) == repr(random_ops(7, 20))
    assert repr(random_timer_ops(7, 20)) == repr(random_timer_ops(7, 20))
    assert any(isinstance(op, Prune) for op in random_ops(7, 40))
    assert not any(isinstance(op, Prune) for op in random_ops(7, 40, prune=False))
    assert any(isinstance(op, Fail) for op in random_ops(7, 40, fail=True))
    assert not any(isinstance(op, Fail) for op in random_ops(7, 40))
