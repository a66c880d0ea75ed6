"""SQLite store: one file, one connection, used by one caller at a time.

Where the SQL runs: the engine's per-batch calls (commit, load, seen, due
timers, parked) run on the event loop's thread, each in one go; the calls that
may scan many rows (prune, listings, the outbox backlog after an outage) and
open/close run on a dedicated thread so they never stall the loop. An
``asyncio.Lock`` keeps the two from using the connection at once. A third thread,
with a connection of its own, copies the WAL back into the database file after
commits (:mod:`orchestrator.store._sqlite_checkpoint`), so that SQLite's own
checkpoint inside a COMMIT on the loop's thread finds little left to do.

Why not all on a thread (the first design) or through aiosqlite: every
``sqlite3_step`` releases the GIL, and a worker thread must then win it back
from the loop thread, which is busy whenever there is load. A group commit is a
dozen statements, so it spent most of its time waiting: 17 ms for 80 units on
a NATS bench, about 200 us a unit, against about 60 us a unit with an idle
loop. aiosqlite hops threads once per statement, which is worse still. Writes
are set-based (:mod:`orchestrator.store._sqlite_write`): one multi-row
statement per table per batch. The busy timeout (another *process* holding the
write lock) therefore blocks the loop for up to ``busy_timeout`` ms; a
sidecar's store file is its own, so that is an operator's manual session at
most. ``ping`` runs on the thread, so an engine waiting for the lock to free
(or for room on a full disk) polls without blocking the loop.

When it fails: a lock held past the busy timeout, a full disk and an I/O error
are retryable StoreErrors saying which and what clears it; the call's
transaction is rolled back whole, and the same open store goes on once the
condition passes (:mod:`orchestrator.store._sqlite_health`).

Durability: the journal is WAL. ``synchronous=NORMAL`` (the default) does not
fsync on each commit, only at checkpoints: a committed transaction survives the
process being killed (``kill -9``, OOM) because the WAL is already in the OS page
cache, but the last commits may be lost if the *machine* loses power. Use
``?synchronous=FULL`` in the URL to fsync the WAL at every commit when that
matters more than latency.

URLs: ``sqlite:///relative/path.db``, ``sqlite:////absolute/path.db`` and
``sqlite:///:memory:``; query options ``synchronous=NORMAL|FULL``,
``busy_timeout`` (milliseconds another process's write lock is waited for) and
``cache_mb`` (SQLite's page cache, default 32).
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from orchestrator.store import _admin_sql as a
from orchestrator.store import _census as census
from orchestrator.store import _leases_sql as leases
from orchestrator.store import _schema as s
from orchestrator.store import _sqlite_read as r
from orchestrator.store._plan import plan_batch
from orchestrator.store._sqlite_checkpoint import WalCheckpointer
from orchestrator.store._sqlite_health import probe, translate
from orchestrator.store._sqlite_open import connect, migrate, parse_url
from orchestrator.store._sqlite_write import delete_by_id, move_to_failed, write_plan
from orchestrator.store.base import (
    Census,
    DeadLetterQuery,
    DeadLetterRecord,
    FailedOutboxRecord,
    HistoryRecord,
    InstanceKey,
    InstanceQuery,
    InstanceRecord,
    LeaseView,
    OutboxRecord,
    Outcome,
    ParkedRecord,
    StoreInfo,
    StuckRule,
    TimerRecord,
    UnitOfWork,
)
from schemas.errors import ConfigError, StoreError

__all__ = ["SqliteStore"]

T = TypeVar("T")

_SYNCHRONOUS = ("NORMAL", "FULL", "EXTRA")
_PING_TIMEOUT = 2.0  # seconds ping() waits in all, for the connection and the write lock
_PING_LOCK_WAIT_MS = 1000  # of which, at most, for another process's write lock


def _rollback(conn: sqlite3.Connection) -> None:
    """End the transaction a failed call began, if it is still open (SQLite ends some
    by itself on SQLITE_FULL or an I/O error). A rollback that fails is left for the
    next call's, which comes first (see ``_call``): the caller's error says more."""
    if conn.in_transaction:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")


async def _until_done(work: asyncio.Future[T]) -> T:
    """Await ``work``, running on the store's thread; if the caller is cancelled, still
    wait for it before letting the cancellation through: the thread is using the
    connection, and the caller's lock must not be released until it stops."""
    try:
        return await asyncio.shield(work)
    except asyncio.CancelledError:
        while not work.done():
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait({work})
        raise


class SqliteStore:
    """The Store protocol on one SQLite file (see the module docstring for the URL)."""

    def __init__(
        self,
        path: str,
        *,
        synchronous: str = "NORMAL",
        busy_timeout_ms: int = 5000,
        cache_mb: int = 32,
    ) -> None:
        if synchronous.upper() not in _SYNCHRONOUS:
            raise ConfigError(
                f"sqlite synchronous={synchronous!r} is not one of {', '.join(_SYNCHRONOUS)}"
            )
        self.path = path
        self.synchronous = synchronous.upper()
        self.busy_timeout_ms = busy_timeout_ms
        self.cache_mb = cache_mb
        self._conn: sqlite3.Connection | None = None
        self._wal = False
        self._executor: ThreadPoolExecutor | None = None
        self._lock = asyncio.Lock()  # one user of the connection at a time, on either thread
        self._schema_version = 0
        self._checkpointer: WalCheckpointer | None = None

    @classmethod
    def from_url(cls, url: str) -> SqliteStore:
        o = parse_url(url)
        return cls(
            o.path,
            synchronous=o.synchronous,
            busy_timeout_ms=o.busy_timeout_ms,
            cache_mb=o.cache_mb,
        )

    # -- plumbing -------------------------------------------------------------------

    async def _call(self, fn: Callable[[sqlite3.Connection], T], *, inline: bool = False) -> T:
        """Run ``fn`` with the connection, one call at a time; translate driver errors.

        ``inline`` runs it on the event loop's thread, the rest on the store's own
        thread. The engine's per-batch calls (commit, load, seen, timers, parked)
        are inline: on the thread, each of a commit's dozen statements gives up the
        GIL around ``sqlite3_step`` and then waits for the busy loop thread to let
        go of it again (a millisecond or more each), so a 17 ms commit was mostly
        waiting. Measured inline: ~10% more transitions per second on the in-memory
        broker and ~15% more on NATS. Calls that may scan many rows (prune, listings,
        the outbox backlog) stay on the thread so they never stall the loop."""
        if self._executor is None:
            raise StoreError(
                f"sqlite store {self.path} is not open; call open() first", retryable=False
            )

        def run() -> T:
            conn = self._conn
            if conn is None:
                raise StoreError(f"sqlite store {self.path} is closed", retryable=False)
            try:
                _rollback(conn)  # left open only if an earlier call's rollback failed
                return fn(conn)
            except sqlite3.Error as exc:
                _rollback(conn)
                raise translate(exc, self.path) from exc
            except BaseException:
                _rollback(conn)
                raise

        async with self._lock:
            executor = self._executor
            if executor is None:  # closed while this call waited for the lock
                raise StoreError(f"sqlite store {self.path} is closed", retryable=False)
            if inline:
                return run()
            return await _until_done(asyncio.get_running_loop().run_in_executor(executor, run))

    async def open(self) -> None:
        if self._executor is not None:
            return
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sagawire-sqlite")
        loop = asyncio.get_running_loop()
        try:
            self._conn, self._wal = await loop.run_in_executor(
                self._executor,
                lambda: connect(
                    self.path,
                    synchronous=self.synchronous,
                    busy_timeout_ms=self.busy_timeout_ms,
                    cache_mb=self.cache_mb,
                ),
            )
            self._schema_version = await self._call(lambda c: migrate(c, self.path))
            if self._wal:
                self._checkpointer = WalCheckpointer(self.path)
                self._checkpointer.start()
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        """Close after the call in progress (and those already waiting) are done."""
        if self._executor is None:
            return
        async with self._lock:
            executor, self._executor = self._executor, None
            if executor is None:
                return

            def shut() -> None:
                checkpointer, self._checkpointer = self._checkpointer, None
                try:
                    if checkpointer is not None:
                        checkpointer.close()
                finally:
                    conn, self._conn = self._conn, None
                    if conn is not None:
                        conn.close()

            try:
                await _until_done(asyncio.get_running_loop().run_in_executor(executor, shut))
            finally:
                executor.shutdown(wait=True)

    def info(self) -> StoreInfo:
        """What this store is, for ``/readyz`` and logs."""
        return StoreInfo(
            kind="sqlite",
            location=self.path,
            schema_version=self._schema_version,
            extra={
                "journal_mode": "wal" if self._wal else "memory",
                "synchronous": self.synchronous.lower(),
            },
        )

    async def ping(self) -> None:
        """Whether a commit could begin now (:func:`~orchestrator.store._sqlite_health.probe`
        says what is checked), within :data:`_PING_TIMEOUT` seconds. On the store's
        thread: waiting for another process's write lock must not stall the loop."""
        wait_ms = min(self.busy_timeout_ms, _PING_LOCK_WAIT_MS)
        try:
            async with asyncio.timeout(_PING_TIMEOUT):
                await self._call(
                    lambda c: probe(
                        c, self.path, wait_ms=wait_ms, busy_timeout_ms=self.busy_timeout_ms
                    )
                )
        except TimeoutError:
            raise StoreError(
                f"sqlite store {self.path}: no answer within {_PING_TIMEOUT:g} s (another "
                "call has held the connection that long)",
                retryable=True,
            ) from None

    # -- reads (SQL in orchestrator.store._sqlite_read) -------------------------------

    async def load(self, keys: Sequence[InstanceKey]) -> dict[InstanceKey, InstanceRecord]:
        keys = list(dict.fromkeys(keys))
        rows = await self._call(
            lambda c: r.select_pairs(
                c, s.INSTANCE_COLUMNS, "instances", ("saga", "correlation_id"), keys
            ),
            inline=True,
        )
        return {(row[0], row[1]): s.instance_from_row(row) for row in rows}

    async def seen(self, marks: Sequence[tuple[str, str]]) -> set[tuple[str, str]]:
        marks = list(dict.fromkeys(marks))
        return await self._call(lambda c: r.seen(c, marks), inline=True)

    async def pending_outbox(
        self, limit: int = 1000, *, exclude: Sequence[str] = ()
    ) -> list[OutboxRecord]:
        sql, args = r.pending_outbox(limit, exclude)
        rows = await self._call(lambda c: c.execute(sql, args).fetchall())
        return [s.outbox_from_row(row) for row in rows]

    async def failed_outbox(self, limit: int = 100) -> list[FailedOutboxRecord]:
        rows = await self._call(lambda c: c.execute(r.FAILED_OUTBOX, (limit,)).fetchall())
        return [s.failed_from_row(row) for row in rows]

    async def due_timers(self, now: float, limit: int = 1000) -> list[TimerRecord]:
        rows = await self._call(
            lambda c: c.execute(r.DUE_TIMERS, (now, limit)).fetchall(), inline=True
        )
        return [s.timer_from_row(row) for row in rows]

    async def next_timer_due(self) -> float | None:
        row = await self._call(lambda c: c.execute(r.NEXT_TIMER_DUE).fetchone(), inline=True)
        return None if row is None or row[0] is None else float(row[0])

    async def parked(self, keys: Sequence[InstanceKey]) -> list[ParkedRecord]:
        columns = f"{s.PARKED_COLUMNS}, t.rowid"
        keys = list(dict.fromkeys(keys))
        rows = await self._call(
            lambda c: r.select_pairs(c, columns, "parked", ("saga", "correlation_id"), keys),
            inline=True,
        )
        rows.sort(key=lambda row: (row[5], row[8]))  # parked_at, then insertion order
        return [s.parked_from_row(row) for row in rows]

    async def parked_keys(self) -> set[InstanceKey]:
        rows = await self._call(lambda c: c.execute(r.PARKED_KEYS).fetchall())
        return {(row[0], row[1]) for row in rows}

    async def expired_parked(self, now: float, limit: int = 1000) -> list[ParkedRecord]:
        rows = await self._call(lambda c: c.execute(r.EXPIRED_PARKED, (now, limit)).fetchall())
        return [s.parked_from_row(row) for row in rows]

    async def history(self, key: InstanceKey) -> list[HistoryRecord]:
        rows = await self._call(lambda c: c.execute(r.HISTORY, key).fetchall())
        return [s.history_from_row(row) for row in rows]

    async def instances(
        self, saga: str | None = None, status: str | None = None, limit: int = 100
    ) -> list[InstanceRecord]:
        rows = await self._call(lambda c: c.execute(r.INSTANCES, (saga, status, limit)).fetchall())
        return [s.instance_from_row(row) for row in rows]

    async def counts(self) -> dict[str, int]:
        rows = await self._call(lambda c: c.execute(r.COUNTS).fetchall())
        return {row[0]: int(row[1]) for row in rows}

    async def census(self, now: float, stuck: StuckRule | None = None) -> Census:
        sql, args = census.running_sql(stuck, "sqlite")
        totals = census.totals_sql("sqlite")
        running, finished, row = await self._call(
            lambda c: (
                c.execute(sql, args).fetchall(),
                c.execute(census.FINISHED).fetchall(),
                c.execute(totals, (now,)).fetchone(),
            )
        )
        return census.census_from_rows(running, finished, row)

    # -- the operator's reads and writes (on the store's thread: they may scan) --------

    async def find(self, query: InstanceQuery) -> list[InstanceRecord]:
        sql, args = a.find_sql(query, "sqlite")
        rows = await self._call(lambda c: c.execute(sql, args).fetchall())
        return [s.instance_from_row(row) for row in rows]

    async def timers_of(self, key: InstanceKey) -> list[TimerRecord]:
        rows = await self._call(lambda c: c.execute(r.TIMERS_OF, key).fetchall())
        return [s.timer_from_row(row) for row in rows]

    async def outbox_rows(self, ids: Sequence[str]) -> list[OutboxRecord]:
        ids = list(ids)

        def run(conn: sqlite3.Connection) -> list[OutboxRecord]:
            out = []
            for start in range(0, len(ids), 500):
                part = ids[start : start + 500]
                marks = ",".join("?" * len(part))
                sql = f"SELECT {s.OUTBOX_COLUMNS}, rowid FROM outbox WHERE id IN ({marks})"
                out.extend(conn.execute(sql, part).fetchall())
            out.sort(key=lambda row: row[-1])
            return [s.outbox_from_row(row) for row in out]

        return await self._call(run) if ids else []

    async def recent_deviations(self, limit: int = 20) -> list[HistoryRecord]:
        sql, args = a.recent_deviations_sql(limit, "sqlite")
        rows = await self._call(lambda c: c.execute(sql, args).fetchall())
        return [s.history_from_row(row) for row in rows]

    async def keep_dead_letters(self, records: Sequence[DeadLetterRecord]) -> None:
        params = [a.dead_letter_params(d) for d in records]

        def run(conn: sqlite3.Connection) -> None:
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany(
                f"INSERT INTO deadletters ({a.INSERT_COLUMNS}) VALUES ({','.join('?' * 11)})",
                params,
            )
            conn.execute("COMMIT")

        if params:
            await self._call(run)
            self._wrote()

    async def dead_letters(self, query: DeadLetterQuery) -> list[DeadLetterRecord]:
        sql, args = a.dead_letters_sql(query, "sqlite")
        rows = await self._call(lambda c: c.execute(sql, args).fetchall())
        return [a.dead_letter_from_row(row) for row in rows]

    async def dead_letter(self, id: int) -> DeadLetterRecord | None:
        sql = f"SELECT {a.DEADLETTER_COLUMNS} FROM deadletters WHERE id = ?"
        rows = await self._call(lambda c: c.execute(sql, (id,)).fetchall())
        return a.dead_letter_from_row(rows[0]) if rows else None

    async def mark_redriven(
        self,
        id: int,
        at: float,
        by: str,
        inbox: Sequence[tuple[str, str]],
        copy: OutboxRecord,
    ) -> bool:
        marks = list(inbox)

        def run(conn: sqlite3.Connection) -> bool:
            conn.execute("BEGIN IMMEDIATE")
            took = conn.execute(
                "UPDATE deadletters SET redriven_at = ?, redriven_by = ?"
                " WHERE id = ? AND redriven_at IS NULL",
                (at, by, id),
            ).rowcount
            if took:
                conn.executemany("DELETE FROM inbox WHERE saga = ? AND message_id = ?", marks)
                conn.execute(
                    f"INSERT OR IGNORE INTO outbox ({s.OUTBOX_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)",
                    s.outbox_params(copy),
                )
            conn.execute("COMMIT")
            return bool(took)

        done = await self._call(run)
        self._wrote()
        return done

    async def prune_dead_letters(self, before: float) -> int:
        def run(conn: sqlite3.Connection) -> int:
            conn.execute("BEGIN IMMEDIATE")
            n = conn.execute("DELETE FROM deadletters WHERE at < ?", (before,)).rowcount
            conn.execute("COMMIT")
            return int(n)

        return await self._call(run)

    # -- writes ---------------------------------------------------------------------

    async def commit(
        self, units: Sequence[UnitOfWork], *, published: Sequence[str] = ()
    ) -> list[Outcome]:
        units = list(units)
        published = list(published)
        outcomes = await self._call(lambda c: self._commit(c, units, published), inline=True)
        self._wrote()
        return outcomes

    def _commit(
        self, conn: sqlite3.Connection, units: list[UnitOfWork], published: list[str]
    ) -> list[Outcome]:
        # BEGIN IMMEDIATE takes the write lock first, so what we read below cannot
        # change before COMMIT: deciding in Python from it is as safe as per-row checks.
        conn.execute("BEGIN IMMEDIATE")
        marks = list(dict.fromkeys(u.inbox for u in units if u.inbox is not None))
        keys = list(dict.fromkeys(e[0] for e in (u.expects() for u in units) if e is not None))
        plan = plan_batch(units, r.seen(conn, marks), r.versions(conn, keys))
        write_plan(conn, plan)
        if published:
            delete_by_id(conn, "outbox", "id", published)
        conn.execute("COMMIT")
        return plan.outcomes

    async def mark_published(self, ids: Sequence[str]) -> None:
        ids = list(ids)

        def run(conn: sqlite3.Connection) -> None:
            conn.execute("BEGIN IMMEDIATE")
            delete_by_id(conn, "outbox", "id", ids)
            conn.execute("COMMIT")

        if ids:
            await self._call(run, inline=True)
            self._wrote()

    async def mark_failed(self, failures: Sequence[tuple[str, str]], at: float) -> None:
        """On the store's thread: rare, and it copies each row's bytes."""
        reasons = s.first_reasons(failures)

        def run(conn: sqlite3.Connection) -> None:
            conn.execute("BEGIN IMMEDIATE")
            move_to_failed(conn, reasons, at)
            conn.execute("COMMIT")

        if reasons:
            await self._call(run)
            self._wrote()

    def _wrote(self) -> None:
        """A transaction went into the WAL: let the checkpointer copy it back
        (:mod:`orchestrator.store._sqlite_checkpoint`)."""
        if self._checkpointer is not None:
            self._checkpointer.nudge()

    async def prune(self, *, inbox_before: float, history_before: float | None = None) -> int:
        """Delete inbox marks (and, if asked, history rows) older than the given times.

        The inbox only has to outlive the broker's redelivery window; after that a
        mark is dead weight. Returns the number of rows deleted."""

        def run(conn: sqlite3.Connection) -> int:
            conn.execute("BEGIN IMMEDIATE")
            n = conn.execute("DELETE FROM inbox WHERE at < ?", (inbox_before,)).rowcount
            if history_before is not None:
                n += conn.execute("DELETE FROM history WHERE at < ?", (history_before,)).rowcount
            conn.execute("COMMIT")
            return n

        return await self._call(run)

    # -- replicas sharing the file (SQL in orchestrator.store._leases_sql) ------------

    async def lease_round(
        self,
        group: str,
        member: str,
        *,
        claim: Sequence[str] = (),
        release: Sequence[str] = (),
        ttl: float,
    ) -> LeaseView:
        """On the store's thread: replicas sharing the file are other processes, whose
        commits hold the write lock the round waits for (up to ``busy_timeout``), and
        once a second is no reason to stall the loop for that."""
        ttl = leases.check_ttl(ttl)
        wanted, given_up = leases.requests(claim, release)
        view = await self._call(
            lambda c: leases.sqlite_round(c, group, member, wanted, given_up, ttl)
        )
        self._wrote()
        return view

    async def leave(self, group: str, member: str) -> None:
        await self._call(lambda c: leases.sqlite_leave(c, group, member))
        self._wrote()
