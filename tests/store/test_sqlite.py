"""The store contract against SQLite, plus SQLite's URL parsing and error translation."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import threading
import time
from pathlib import Path

import pytest

from orchestrator.store import open_store
from orchestrator.store._schema import SCHEMA_VERSION
from orchestrator.store.sqlite import SqliteStore
from schemas.errors import ConfigError, StoreError
from tests.store.contract import C, StoreContract, StoreFactory, step


class TestSqliteStore(StoreContract):
    durable = True

    @pytest.fixture
    def store_factory(self, tmp_path: Path) -> StoreFactory:
        path = tmp_path / "sagawire.db"
        return lambda: SqliteStore.from_url(f"sqlite:///{path}")


class TestSqliteMemoryDatabase(StoreContract):
    durable = False

    @pytest.fixture
    def store_factory(self) -> StoreFactory:
        return lambda: SqliteStore.from_url("sqlite:///:memory:")


@pytest.mark.parametrize(
    ("url", "path", "synchronous"),
    [
        ("sqlite:///data/s.db", "data/s.db", "NORMAL"),
        ("sqlite:////var/lib/s.db", "/var/lib/s.db", "NORMAL"),
        ("sqlite:///:memory:", ":memory:", "NORMAL"),
        ("sqlite:///s.db?synchronous=full", "s.db", "FULL"),
    ],
)
def test_from_url(url: str, path: str, synchronous: str) -> None:
    store = SqliteStore.from_url(url)
    assert (store.path, store.synchronous) == (path, synchronous)


def test_cache_mb_from_url() -> None:
    assert SqliteStore.from_url("sqlite:///s.db").cache_mb == 32
    assert SqliteStore.from_url("sqlite:///s.db?cache_mb=64").cache_mb == 64


def test_open_store_picks_sqlite() -> None:
    assert isinstance(open_store("sqlite:///x.db"), SqliteStore)


@pytest.mark.parametrize(
    "url",
    [
        "sqlite://host/s.db",
        "sqlite:///",
        "sqlite:///s.db?synchronous=OFF",
        "sqlite:///s.db?journal=delete",
        "sqlite:///s.db?busy_timeout=soon",
        "sqlite:///s.db?cache_mb=0",
        "sqlite:///s.db?cache_mb=lots",
    ],
)
def test_bad_urls_are_config_errors(url: str) -> None:
    with pytest.raises(ConfigError):
        SqliteStore.from_url(url)


async def test_pragmas_wal_and_synchronous(tmp_path: Path) -> None:
    store = SqliteStore.from_url(f"sqlite:///{tmp_path / 's.db'}?synchronous=FULL")
    await store.open()
    try:
        assert store.info().schema_version == SCHEMA_VERSION
        assert store.info().extra == {"journal_mode": "wal", "synchronous": "full"}
    finally:
        await store.close()
    with contextlib.closing(sqlite3.connect(tmp_path / "s.db")) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


async def test_not_a_database_is_a_non_retryable_store_error(tmp_path: Path) -> None:
    path = tmp_path / "junk.db"
    path.write_bytes(b"this is not an sqlite file at all" * 200)
    store = SqliteStore(str(path))
    with pytest.raises(StoreError) as info:
        await store.open()
    assert not info.value.retryable
    assert str(path) in str(info.value)
    await store.close()


async def test_write_lock_held_elsewhere_is_retryable(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    store = SqliteStore(str(path), busy_timeout_ms=50)
    await store.open()
    other = sqlite3.connect(path, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
        with pytest.raises(StoreError) as info:
            await store.mark_published(["x"])
        assert info.value.retryable
        other.execute("ROLLBACK")
        await store.mark_published(["x"])  # the store's connection is usable again
    finally:
        other.close()
        await store.close()


async def test_batches_fit_an_old_sqlite_parameter_limit(tmp_path: Path) -> None:
    """SQLite before 3.32 binds at most 999 parameters per statement: multi-row writes
    must split to fit (9 columns x 256 rows would not)."""
    store = SqliteStore.from_url(f"sqlite:///{tmp_path / 's.db'}")
    await store.open()
    try:
        assert store._conn is not None
        store._conn.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, 999)
        units = [step(f"i{n}", 1) for n in range(700)]
        assert await store.commit(units) == [C] * 700
        assert await store.commit([], published=[u.outbox[0].id for u in units]) == []
        assert await store.pending_outbox() == []
        assert (await store.counts()) == {"running": 700}
    finally:
        await store.close()


async def test_a_cancelled_thread_call_keeps_the_connection_until_it_ends(tmp_path: Path) -> None:
    """Cancelling a call running on the store's thread must not let another call use the
    connection before that thread is done with it (it would run inside, or roll back,
    the other's transaction)."""
    store = SqliteStore.from_url(f"sqlite:///{tmp_path / 's.db'}")
    await store.open()
    started = threading.Event()

    def slow(conn: sqlite3.Connection) -> None:
        conn.execute("BEGIN IMMEDIATE")
        started.set()
        time.sleep(0.3)
        conn.execute("INSERT INTO inbox (saga, message_id, at) VALUES ('order', 'slow', 1.0)")
        conn.execute("COMMIT")

    try:
        task = asyncio.ensure_future(store._call(slow))
        assert await asyncio.to_thread(started.wait, 5.0)  # the thread is inside BEGIN
        task.cancel()
        assert await store.commit([step("a", 1)]) == [C]  # waits for the thread, then runs
        with pytest.raises(asyncio.CancelledError):
            await task
        assert await store.seen([("order", "slow"), ("order", "a-m1")]) == {
            ("order", "slow"),
            ("order", "a-m1"),
        }
    finally:
        await store.close()


async def test_close_waits_for_the_call_in_progress(tmp_path: Path) -> None:
    store = SqliteStore.from_url(f"sqlite:///{tmp_path / 's.db'}")
    await store.open()
    running = asyncio.ensure_future(store.prune(inbox_before=0.0))
    await asyncio.sleep(0)  # prune takes the lock and starts on the store's thread
    await store.close()
    assert await running == 0
    with pytest.raises(StoreError, match="not open|closed"):
        await store.commit([step("a", 1)])
