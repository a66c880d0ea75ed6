"""The SQLite store copies its WAL back on a thread of its own, not inside commits."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import threading
from pathlib import Path

import pytest
import structlog

from orchestrator.store._sqlite_checkpoint import WalCheckpointer
from orchestrator.store.sqlite import SqliteStore
from tests.store.contract import C, step
from tests.support.waiting import wait_until

THREAD = "sagawire-sqlite-checkpoint"


def _checkpoint_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == THREAD]


async def test_commits_are_copied_back_by_the_background_checkpointer(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    store = SqliteStore(str(path))
    await store.open()
    try:
        checkpointer = store._checkpointer
        assert checkpointer is not None
        assert len(_checkpoint_threads()) == 1
        for n in range(5):
            assert await store.commit([step(f"i{n}", 1)]) == [C]

        async def copied() -> bool:
            return checkpointer.runs >= 1

        await wait_until(copied, timeout=10)
        assert checkpointer.last is not None
        busy, frames, done = checkpointer.last
        assert busy == 0 and frames > 0
        assert done == frames  # all of the WAL, as it was then

        # The copy is in the database file itself: a reader that never saw the WAL
        # (immutable=1 ignores it) finds committed rows there.
        async def in_main_file() -> bool:
            return _rows_in_main_file(path) > 0

        await wait_until(in_main_file, timeout=10)
    finally:
        await store.close()
    assert _checkpoint_threads() == []


def _rows_in_main_file(path: Path) -> int:
    uri = f"file:{path}?immutable=1"
    with contextlib.closing(sqlite3.connect(uri, uri=True)) as conn:
        return int(conn.execute("SELECT count(*) FROM instances").fetchone()[0])


async def test_an_in_memory_database_has_no_checkpointer() -> None:
    store = SqliteStore(":memory:")
    await store.open()
    try:
        assert store._checkpointer is None
        assert store.info().extra["journal_mode"] == "memory"  # no WAL to copy back
        assert await store.commit([step("i", 1)]) == [C]
    finally:
        await store.close()


async def test_a_checkpointer_that_cannot_connect_warns_once_and_creates_nothing(
    tmp_path: Path,
) -> None:
    """A missing file is not created (``mode=rw``): a stray empty database would hide the
    mistake. The warning comes once per streak, not once per commit."""
    missing = tmp_path / "gone.db"
    checkpointer = WalCheckpointer(str(missing), interval=0.0)
    with structlog.testing.capture_logs() as logs:
        checkpointer.start()
        for _ in range(3):
            checkpointer.nudge()
            await asyncio.sleep(0.05)
        checkpointer.close()
    warnings = [e for e in logs if e["event"] == "background WAL checkpoint failed"]
    assert len(warnings) == 1
    assert "unable to open" in warnings[0]["error"]
    assert checkpointer.runs == 0
    assert not missing.exists()
    assert _checkpoint_threads() == []


async def test_a_reopened_store_checkpoints_again(tmp_path: Path) -> None:
    store = SqliteStore(str(tmp_path / "s.db"))
    for round_ in range(2):
        await store.open()
        try:
            checkpointer = store._checkpointer
            assert checkpointer is not None and checkpointer.runs == 0

            async def copied() -> bool:
                return checkpointer.runs >= 1  # noqa: B023 (awaited in this iteration)

            assert await store.commit([step(f"i{round_}", 1)]) == [C]
            await wait_until(copied, timeout=10)
        finally:
            await store.close()
        assert store._checkpointer is None
        assert _checkpoint_threads() == []


async def test_close_is_idempotent_and_a_never_started_checkpointer_closes(tmp_path: Path) -> None:
    checkpointer = WalCheckpointer(str(tmp_path / "s.db"))
    checkpointer.close()
    checkpointer.start()
    checkpointer.close()
    checkpointer.close()
    assert _checkpoint_threads() == []


async def test_a_bug_in_the_checkpointer_is_logged_not_swallowed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = SqliteStore(str(tmp_path / "s.db"))
    await store.open()
    try:
        checkpointer = store._checkpointer
        assert checkpointer is not None

        def broken(conn: sqlite3.Connection) -> None:
            raise RuntimeError("a bug")

        monkeypatch.setattr(checkpointer, "_checkpoint", broken)
        with structlog.testing.capture_logs() as logs:
            assert await store.commit([step("i", 1)]) == [C]

            async def logged() -> bool:
                return any(e["event"] == "background WAL checkpointer stopped" for e in logs)

            await wait_until(logged, timeout=10)
        assert await store.commit([step("i", 2)]) == [C]  # commits go on without it
    finally:
        await store.close()
    assert _checkpoint_threads() == []


async def test_the_wal_stays_bounded_under_steady_writes(tmp_path: Path) -> None:
    """A background checkpoint cannot rewind the WAL while a writer keeps appending;
    the writer's own autocheckpoint does, so the file stays near its threshold. (With
    the autocheckpoint off, this run's WAL grew to ~25 MB; with it, ~0.5 MB.)"""
    path = tmp_path / "s.db"
    store = SqliteStore(str(path))
    await store.open()
    try:
        assert store._conn is not None
        store._conn.execute("PRAGMA wal_autocheckpoint=100")  # pages; 10,000 in production
        largest = 0
        for n in range(300):
            assert await store.commit([step(f"c{n}-{k}", 1) for k in range(20)]) == [C] * 20
            await asyncio.sleep(0.002)  # the loop's other work: the checkpointer runs meanwhile
            largest = max(largest, (tmp_path / "s.db-wal").stat().st_size)
        assert store._checkpointer is not None and store._checkpointer.runs >= 1
    finally:
        await store.close()
    assert largest < 4 * 1024 * 1024
