"""SQLite when the disk fills up or another process holds the write lock: a retryable
StoreError that says which, nothing half-written, and the same open store going on by
itself once the condition clears (its thread included).

A full disk is the database's own limit, ``PRAGMA max_page_count`` on the store's
connection: SQLite answers a write that needs a page past it exactly as it answers a
full filesystem (``SQLITE_FULL``), and the test can lift it again. A held lock is a
second connection inside ``BEGIN IMMEDIATE``, as an operator's shell would hold it.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from orchestrator.store import _sqlite_health
from orchestrator.store.base import UnitOfWork
from orchestrator.store.sqlite import SqliteStore
from schemas.errors import StoreError
from tests.store.contract import SAGA, C, D, out, step, timer

BIG = bytes(range(256)) * 1024  # 256 KiB: dozens of overflow pages


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    st = SqliteStore(str(tmp_path / "s.db"), busy_timeout_ms=100)
    await st.open()
    yield st
    await st.close()


@pytest.fixture
def other(store: SqliteStore) -> Iterator[sqlite3.Connection]:
    """A second connection to the store's file: another process, as far as locks go."""
    conn = sqlite3.connect(store.path, isolation_level=None)
    yield conn
    conn.close()


async def fill_up(store: SqliteStore) -> int:
    """Cap the database at the pages it has now: any write that needs one more fails."""

    def cap(conn: sqlite3.Connection) -> int:
        pages = int(conn.execute("PRAGMA page_count").fetchone()[0])
        return int(conn.execute(f"PRAGMA max_page_count = {pages}").fetchone()[0])

    return await store._call(cap)


async def make_room(store: SqliteStore) -> None:
    await store._call(lambda c: c.execute("PRAGMA max_page_count = 1073741823"))


def big_unit(cid: str) -> UnitOfWork:
    """A unit whose outbox row, written after its inbox mark, instance and history rows,
    needs more pages than a full database has: it fails half-way through the writes."""
    unit = step(cid, 1)
    unit.outbox = (out(f"{cid}-o1", body=BIG),)
    unit.timers_set = (timer(cid, "t", 5.0),)
    return unit


async def assert_untouched(store: SqliteStore, cid: str) -> None:
    """Nothing of a failed commit of ``big_unit(cid)`` is in the database."""
    assert await store.load([(SAGA, cid)]) == {}
    assert await store.seen([(SAGA, f"{cid}-m1")]) == set()
    assert await store.history((SAGA, cid)) == []
    assert f"{cid}-o1" not in [o.id for o in await store.pending_outbox()]
    assert [t.correlation_id for t in await store.due_timers(10.0)] == []


async def test_a_full_disk_is_retryable_leaves_nothing_half_written_and_passes(
    store: SqliteStore,
) -> None:
    assert await store.commit([step("before", 1)]) == [C]
    await fill_up(store)

    with pytest.raises(StoreError) as info:
        await store.commit([step("small", 1), big_unit("big")])
    assert info.value.retryable
    assert "SQLITE_FULL" in str(info.value)
    assert "disk holding the database is full" in str(info.value)
    assert store.path in str(info.value)
    await assert_untouched(store, "big")
    assert await store.load([(SAGA, "small")]) == {}  # the whole batch, not only its end

    with pytest.raises(StoreError, match="max_page_count") as ping:
        await store.ping()  # says so before the next commit tries
    assert ping.value.retryable
    assert await store.counts() == {"running": 1}  # the store's thread answers
    assert await store.prune(inbox_before=0.0) == 0

    await make_room(store)
    await store.ping()
    assert await store.commit([step("small", 1), big_unit("big")]) == [C, C]
    assert [o.id for o in await store.pending_outbox()] == ["before-o1", "small-o1", "big-o1"]
    assert await store.commit([big_unit("big")]) == [D]


async def test_a_full_disk_on_the_stores_thread_leaves_the_row_where_it_was(
    store: SqliteStore,
) -> None:
    """``mark_failed`` copies a row's bytes on the store's thread: a full disk there
    moves nothing, and the thread takes the next call."""
    await store.commit([UnitOfWork(outbox=(out("refused", body=BIG), out("next")))])
    await fill_up(store)
    with pytest.raises(StoreError, match="SQLITE_FULL") as info:
        await store.mark_failed([("refused", "too large")], at=1.0)
    assert info.value.retryable
    assert [o.id for o in await store.pending_outbox()] == ["refused", "next"]
    assert await store.failed_outbox() == []

    await make_room(store)
    await store.mark_failed([("refused", "too large")], at=1.0)
    assert [o.id for o in await store.pending_outbox()] == ["next"]
    assert [(f.row.body, f.reason) for f in await store.failed_outbox()] == [(BIG, "too large")]


async def test_a_full_filesystem_is_told_by_ping(
    store: SqliteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_sqlite_health, "free_bytes", lambda path: 4096)
    with pytest.raises(StoreError, match=r"disk is full: 4096 bytes free") as info:
        await store.ping()
    assert info.value.retryable
    monkeypatch.undo()
    await store.ping()


async def test_a_write_lock_held_past_the_busy_timeout_is_retryable_and_passes(
    store: SqliteStore, other: sqlite3.Connection
) -> None:
    assert await store.commit([step("a", 1)]) == [C]
    other.execute("BEGIN IMMEDIATE")
    started = time.monotonic()
    with pytest.raises(StoreError) as info:
        await store.commit([step("a", 2), step("b", 1)])
    assert time.monotonic() - started < 2.0  # busy_timeout=100 ms, not more
    assert info.value.retryable
    assert "SQLITE_BUSY" in str(info.value)
    assert "another connection holds the write lock" in str(info.value)
    with pytest.raises(StoreError, match="SQLITE_BUSY") as ping:
        await store.ping()
    assert ping.value.retryable
    with pytest.raises(StoreError, match="SQLITE_BUSY"):
        await store.prune(inbox_before=10.0)  # on the store's thread: it fails, not wedges
    assert (await store.load([(SAGA, "a")]))[(SAGA, "a")].version == 1  # reads go on (WAL)

    other.execute("ROLLBACK")
    await store.ping()
    assert await store.commit([step("a", 2), step("b", 1)]) == [C, C]
    assert await store.prune(inbox_before=0.0) == 0


async def test_ping_does_not_wait_out_a_long_busy_timeout(
    tmp_path: Path,
) -> None:
    """An engine pings while it waits for the store: a minute's busy timeout must not
    make one ping take a minute, nor block the event loop meanwhile."""
    store = SqliteStore(str(tmp_path / "s.db"), busy_timeout_ms=60_000)
    await store.open()
    other = sqlite3.connect(store.path, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
        ticks = 0

        async def tick() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        ticker = asyncio.ensure_future(tick())
        started = time.monotonic()
        with pytest.raises(StoreError, match="SQLITE_BUSY"):
            await store.ping()
        elapsed = time.monotonic() - started
        ticker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await ticker
        assert 0.5 < elapsed < 3.0
        assert ticks > 20  # the loop went on while the ping waited for the lock
        other.execute("ROLLBACK")
        await store.ping()
        assert store._conn is not None
        # the store's own calls wait the full busy timeout again, not the ping's
        assert store._conn.execute("PRAGMA busy_timeout").fetchone()[0] == 60_000
    finally:
        other.close()
        await store.close()


def test_translate_names_the_condition_and_what_clears_it() -> None:
    def error(name: str) -> sqlite3.Error:
        exc = sqlite3.OperationalError("boom")
        exc.sqlite_errorname = name
        return exc

    full = _sqlite_health.translate(error("SQLITE_FULL"), "s.db")
    assert full.retryable and "s.db" in str(full) and "is full" in str(full)
    io = _sqlite_health.translate(error("SQLITE_IOERR_WRITE"), "s.db")
    assert io.retryable and "disk failed" in str(io)
    busy = _sqlite_health.translate(error("SQLITE_BUSY"), "s.db")
    assert busy.retryable and "write lock" in str(busy)
    corrupt = _sqlite_health.translate(error("SQLITE_CORRUPT"), "s.db")
    assert not corrupt.retryable and str(corrupt) == "sqlite store s.db: boom (SQLITE_CORRUPT)"
