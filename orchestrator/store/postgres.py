"""PostgreSQL store on an asyncpg pool: one transaction per group commit.

A batch is decided the way the in-memory store decides it (``_plan``), from two
facts read *inside* the transaction, then written with one ``unnest`` statement
per table — about a dozen round trips per batch whatever its size, instead of a
savepoint and five statements per unit:

1. the stored instances the batch touches are locked ``FOR UPDATE`` (in key
   order, so two orchestrators cannot deadlock on them) and their versions read;
2. the batch's inbox marks are inserted ``ON CONFLICT DO NOTHING``; the marks that
   did not insert already existed (this waits for a concurrent writer of the same
   mark, so exactly one of two deliveries wins);
3. outcomes are decided; marks of units that did not commit are deleted again;
4. net rows are written. A new instance is inserted ``ON CONFLICT DO NOTHING``:
   if another writer created it since step 1 (nothing was there to lock), the
   whole transaction is rolled back and the batch decided again from fresh reads.

The commit's statements and step 4 live in :mod:`orchestrator.store._postgres_write`.

When the database goes away: every operation ends within a bounded time with a
*retryable* StoreError, never hangs, whether the connection is refused, reset, or
stalls (the TCP connection stays open and no bytes come back). Three limits bound
it: ``connect_timeout`` (opening a connection, handshake included),
``command_timeout`` (each statement, the ROLLBACK after a failure and the reset of
a connection going back to the pool included) and ``acquire_timeout`` (waiting for
a pooled connection, connecting a new one included); ``prune`` and the schema
migration, which may touch many rows, get 12 times ``command_timeout``. A
connection that failed or timed out is dropped, and the pool opens a new one at
the next use: once the database is back, the same open store works again by
itself. A commit cut in flight either committed or did not (one transaction);
retrying it is safe, since its inbox marks make a unit that did commit a
DUPLICATE the second time. ``ping`` answers within :data:`_PING_TIMEOUT` seconds.

URL: ``postgresql://user[:password]@host[:port]/db`` (``postgres://`` too) with any
libpq-style options asyncpg accepts, plus ``pool_min`` / ``pool_max`` (default 1 /
10) and ``connect_timeout`` / ``command_timeout`` / ``acquire_timeout`` (seconds,
default 5 each: a database that has not answered in 5 s is down as far as a
sidecar's latency goes, and a few seconds leave room for a busy server).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

import asyncpg

from orchestrator.store import _admin_sql as a
from orchestrator.store import _census as census
from orchestrator.store import _leases_sql as leases
from orchestrator.store import _postgres_write as w
from orchestrator.store import _schema as s
from orchestrator.store._plan import batch_time, plan_batch, unit_time
from orchestrator.store._postgres_health import probe, translated
from orchestrator.store._postgres_open import migrate, parse_url
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
from schemas.errors import StoreError

__all__ = ["PostgresStore"]

_ATTEMPTS = 5
_SLOW = 12  # prune and migrations get this many times command_timeout
_PING_TIMEOUT = 2.0


def _count(status: str) -> int:
    """Rows affected, from asyncpg's command status (``"DELETE 3"``)."""
    return int(status.rsplit(" ", 1)[-1])


class PostgresStore:
    """The Store protocol on PostgreSQL (see the module docstring for the URL)."""

    def __init__(
        self,
        dsn: str,
        *,
        pool_min: int = 1,
        pool_max: int = 10,
        connect_timeout: float = 5.0,
        command_timeout: float = 5.0,
        acquire_timeout: float = 5.0,
    ) -> None:
        self.dsn = dsn
        self.pool_min = pool_min
        self.pool_max = pool_max
        self.connect_timeout = connect_timeout
        self.command_timeout = command_timeout
        self.acquire_timeout = acquire_timeout
        parts = urlsplit(dsn)
        host = parts.netloc.rpartition("@")[2]
        user = parts.username or ""
        self.location = f"{user}@{host}{parts.path}" if user else f"{host}{parts.path}"
        self._pool: Any = None
        self._schema_version = 0
        self._limits = (  # for error messages
            f"connect_timeout={connect_timeout:g} s, command_timeout={command_timeout:g} s, "
            f"acquire_timeout={acquire_timeout:g} s"
        )

    @classmethod
    def from_url(cls, url: str) -> PostgresStore:
        o = parse_url(url)
        return cls(
            o.dsn,
            pool_min=o.pool_min,
            pool_max=o.pool_max,
            connect_timeout=o.connect_timeout,
            command_timeout=o.command_timeout,
            acquire_timeout=o.acquire_timeout,
        )

    # -- plumbing -------------------------------------------------------------------

    def _errors(self, operation: str) -> contextlib.AbstractContextManager[None]:
        """Driver errors as StoreErrors (:mod:`orchestrator.store._postgres_health`)."""
        return translated(f"postgres store {self.location}", operation, self._limits)

    @property
    def _p(self) -> Any:
        if self._pool is None:
            raise StoreError(
                f"postgres store {self.location} is not open; call open() first", retryable=False
            )
        return self._pool

    async def open(self) -> None:
        if self._pool is not None:
            return
        with self._errors("connect"):
            self._pool = await asyncpg.create_pool(
                self.dsn,
                min_size=self.pool_min,
                max_size=self.pool_max,
                timeout=self.connect_timeout,
                command_timeout=self.command_timeout,
            )
        try:
            with self._errors("schema migration"):
                async with self._conn() as conn, conn.transaction():
                    self._schema_version = await migrate(conn, self.location, self._slow)
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        """Close the pool gracefully, within the command limit; past it (a call still
        running on a stalled database), drop the connections."""
        pool, self._pool = self._pool, None
        if pool is None:
            return
        try:
            async with asyncio.timeout(self.command_timeout):
                await pool.close()
        except (TimeoutError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
            pool.terminate()  # nothing left to say to a database that is gone

    @property
    def _slow(self) -> float:
        """The limit for statements that may touch many rows (prune, migrations)."""
        return _SLOW * self.command_timeout

    def _conn(self) -> Any:
        """A pooled connection (``async with``), within ``acquire_timeout``: asyncpg's
        pool methods (``pool.fetch``...) wait for one without a limit."""
        return self._p.acquire(timeout=self.acquire_timeout)

    def info(self) -> StoreInfo:
        """What this store is, for ``/readyz`` and logs (no password)."""
        return StoreInfo(
            kind="postgresql",
            location=self.location,
            schema_version=self._schema_version,
            extra={"pool_max": str(self.pool_max)},
        )

    async def _fetch(self, operation: str, sql: str, *args: Any) -> list[Any]:
        with self._errors(operation):
            async with self._conn() as conn:
                rows: list[Any] = await conn.fetch(sql, *args)
                return rows

    async def ping(self) -> None:
        """``SELECT 1``, answered within :data:`_PING_TIMEOUT` seconds or reported
        unreachable (:func:`~orchestrator.store._postgres_health.probe`)."""
        limit = min(_PING_TIMEOUT, self.command_timeout, self.acquire_timeout)
        with self._errors("ping"):
            await probe(self._p, limit=limit, deadline=_PING_TIMEOUT)

    # -- reads ----------------------------------------------------------------------

    async def load(self, keys: Sequence[InstanceKey]) -> dict[InstanceKey, InstanceRecord]:
        sql = (
            f"SELECT {s.INSTANCE_COLUMNS} FROM instances i JOIN {w.KEYS} "
            "ON i.saga = k.ks AND i.correlation_id = k.kc"
        )
        rows = await self._fetch("load", sql, *w.columns(list(dict.fromkeys(keys)), 2))
        return {(r[0], r[1]): s.instance_from_row(r) for r in rows}

    async def seen(self, marks: Sequence[tuple[str, str]]) -> set[tuple[str, str]]:
        sql = (
            f"SELECT i.saga, i.message_id FROM inbox i JOIN {w.KEYS} "
            "ON i.saga = k.ks AND i.message_id = k.kc"
        )
        rows = await self._fetch("seen", sql, *w.columns(list(dict.fromkeys(marks)), 2))
        return {(r[0], r[1]) for r in rows}

    async def pending_outbox(
        self, limit: int = 1000, *, exclude: Sequence[str] = ()
    ) -> list[OutboxRecord]:
        sql = (
            f"SELECT {s.OUTBOX_COLUMNS} FROM outbox WHERE NOT (destination = ANY($2::text[]))"
            " ORDER BY seq LIMIT $1"
        )
        rows = await self._fetch("pending_outbox", sql, limit, list(exclude))
        return [s.outbox_from_row(r) for r in rows]

    async def due_timers(self, now: float, limit: int = 1000) -> list[TimerRecord]:
        sql = (
            f"SELECT {s.TIMER_COLUMNS} FROM timers WHERE due <= $1 ORDER BY due, "
            'saga COLLATE "C", correlation_id COLLATE "C", name COLLATE "C" LIMIT $2'
        )
        return [s.timer_from_row(r) for r in await self._fetch("due_timers", sql, now, limit)]

    async def next_timer_due(self) -> float | None:
        rows = await self._fetch("next_timer_due", "SELECT min(due) FROM timers")
        return None if rows[0][0] is None else float(rows[0][0])

    async def parked(self, keys: Sequence[InstanceKey]) -> list[ParkedRecord]:
        sql = (
            f"SELECT {s.PARKED_COLUMNS} FROM parked p JOIN {w.KEYS} "
            "ON p.saga = k.ks AND p.correlation_id = k.kc ORDER BY p.parked_at, p.seq"
        )
        rows = await self._fetch("parked", sql, *w.columns(list(dict.fromkeys(keys)), 2))
        return [s.parked_from_row(r) for r in rows]

    async def parked_keys(self) -> set[InstanceKey]:
        rows = await self._fetch("parked_keys", "SELECT DISTINCT saga, correlation_id FROM parked")
        return {(r[0], r[1]) for r in rows}

    async def expired_parked(self, now: float, limit: int = 1000) -> list[ParkedRecord]:
        sql = (
            f"SELECT {s.PARKED_COLUMNS} FROM parked WHERE expires <= $1 "
            "ORDER BY expires, seq LIMIT $2"
        )
        rows = await self._fetch("expired_parked", sql, now, limit)
        return [s.parked_from_row(r) for r in rows]

    async def history(self, key: InstanceKey) -> list[HistoryRecord]:
        sql = (
            f"SELECT {s.HISTORY_COLUMNS} FROM history "
            "WHERE saga = $1 AND correlation_id = $2 ORDER BY id"
        )
        return [s.history_from_row(r) for r in await self._fetch("history", sql, *key)]

    async def instances(
        self, saga: str | None = None, status: str | None = None, limit: int = 100
    ) -> list[InstanceRecord]:
        sql = (
            f"SELECT {s.INSTANCE_COLUMNS} FROM instances "
            "WHERE ($1::text IS NULL OR saga = $1) AND ($2::text IS NULL OR status = $2) "
            'ORDER BY updated_at DESC, saga COLLATE "C", correlation_id COLLATE "C" LIMIT $3'
        )
        rows = await self._fetch("instances", sql, saga, status, limit)
        return [s.instance_from_row(r) for r in rows]

    async def counts(self) -> dict[str, int]:
        rows = await self._fetch("counts", "SELECT status, count(*) FROM instances GROUP BY status")
        return {r[0]: int(r[1]) for r in rows}

    async def census(self, now: float, stuck: StuckRule | None = None) -> Census:
        sql, args = census.running_sql(stuck, "postgres")
        with self._errors("census"):
            async with self._conn() as conn:
                running = await conn.fetch(sql, *args)
                finished = await conn.fetch(census.FINISHED)
                totals = await conn.fetchrow(census.totals_sql("postgres"), now)
        return census.census_from_rows(running, finished, totals)

    # -- the operator's reads and writes --------------------------------------------

    async def find(self, query: InstanceQuery) -> list[InstanceRecord]:
        sql, args = a.find_sql(query, "postgres")
        return [s.instance_from_row(r) for r in await self._fetch("find", sql, *args)]

    async def timers_of(self, key: InstanceKey) -> list[TimerRecord]:
        sql = (
            f"SELECT {s.TIMER_COLUMNS} FROM timers WHERE saga = $1 AND correlation_id = $2"
            ' ORDER BY due, name COLLATE "C"'
        )
        return [s.timer_from_row(r) for r in await self._fetch("timers_of", sql, *key)]

    async def outbox_rows(self, ids: Sequence[str]) -> list[OutboxRecord]:
        if not ids:
            return []
        sql = f"SELECT {s.OUTBOX_COLUMNS} FROM outbox WHERE id = ANY($1::text[]) ORDER BY seq"
        return [s.outbox_from_row(r) for r in await self._fetch("outbox_rows", sql, list(ids))]

    async def recent_deviations(self, limit: int = 20) -> list[HistoryRecord]:
        sql, args = a.recent_deviations_sql(limit, "postgres")
        return [s.history_from_row(r) for r in await self._fetch("recent_deviations", sql, *args)]

    async def keep_dead_letters(self, records: Sequence[DeadLetterRecord]) -> None:
        if not records:
            return
        marks = ", ".join(f"${i}" for i in range(1, 12))
        sql = f"INSERT INTO deadletters ({a.INSERT_COLUMNS}) VALUES ({marks})"
        with self._errors("keep_dead_letters"):
            async with self._conn() as conn:
                await conn.executemany(sql, [a.dead_letter_params(d) for d in records])

    async def dead_letters(self, query: DeadLetterQuery) -> list[DeadLetterRecord]:
        sql, args = a.dead_letters_sql(query, "postgres")
        return [a.dead_letter_from_row(r) for r in await self._fetch("dead_letters", sql, *args)]

    async def dead_letter(self, id: int) -> DeadLetterRecord | None:
        sql = f"SELECT {a.DEADLETTER_COLUMNS} FROM deadletters WHERE id = $1"
        rows = await self._fetch("dead_letter", sql, id)
        return a.dead_letter_from_row(rows[0]) if rows else None

    async def mark_redriven(
        self,
        id: int,
        at: float,
        by: str,
        inbox: Sequence[tuple[str, str]],
        copy: OutboxRecord,
    ) -> bool:
        with self._errors("mark_redriven"):
            async with self._conn() as conn, conn.transaction():
                status = await conn.execute(
                    "UPDATE deadletters SET redriven_at = $1, redriven_by = $2"
                    " WHERE id = $3 AND redriven_at IS NULL",
                    at,
                    by,
                    id,
                )
                if not _count(status):
                    return False
                if inbox:
                    await conn.execute(
                        "DELETE FROM inbox WHERE (saga, message_id) IN"
                        " (SELECT * FROM unnest($1::text[], $2::text[]))",
                        [m[0] for m in inbox],
                        [m[1] for m in inbox],
                    )
                await conn.execute(
                    f"INSERT INTO outbox ({s.OUTBOX_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6)"
                    " ON CONFLICT (id) DO NOTHING",
                    *s.outbox_params(copy),
                )
                return True

    async def prune_dead_letters(self, before: float) -> int:
        with self._errors("prune_dead_letters"):
            async with self._conn() as conn:
                status = await conn.execute(
                    "DELETE FROM deadletters WHERE at < $1", before, timeout=self._slow
                )
                return _count(status)

    # -- writes ---------------------------------------------------------------------

    async def commit(
        self, units: Sequence[UnitOfWork], *, published: Sequence[str] = ()
    ) -> list[Outcome]:
        units = list(units)
        published = list(published)
        for _ in range(_ATTEMPTS):
            try:
                with self._errors("commit"):
                    async with self._conn() as conn, conn.transaction():
                        return await self._commit(conn, units, published)
            except w.ConcurrentInsert:
                continue
        raise StoreError(
            f"postgres store {self.location}: commit raced with another writer "
            f"{_ATTEMPTS} times in a row; try again",
            retryable=True,
        )

    async def _commit(
        self, conn: Any, units: list[UnitOfWork], published: list[str]
    ) -> list[Outcome]:
        keys = sorted({e[0] for e in (u.expects() for u in units) if e is not None})
        versions: dict[InstanceKey, int] = {}
        if keys:
            rows = await conn.fetch(w.SQL_LOCK_VERSIONS, *w.columns(keys, 2))
            versions = {(r[0], r[1]): int(r[2]) for r in rows}

        fallback = batch_time(units)
        marks: dict[tuple[str, str], float] = {}
        for u in units:
            if u.inbox is not None and u.inbox not in marks:
                at = unit_time(u)
                marks[u.inbox] = fallback if at is None else at
        inserted: set[tuple[str, str]] = set()
        if marks:
            rows = sorted((*m, at) for m, at in marks.items())
            got = await conn.fetch(w.SQL_INBOX_INSERT, *w.columns(rows, 3))
            inserted = {(r[0], r[1]) for r in got}

        plan = plan_batch(units, set(marks) - inserted, versions)
        undo = inserted - {(m[0], m[1]) for m in plan.inbox}
        if undo:
            await conn.execute(w.SQL_INBOX_DELETE, *w.columns(sorted(undo), 2))
        # a mark was inserted with the time of the first unit carrying it; if that unit
        # did not commit (a conflict) and a later one did, the mark takes the later's
        redate = sorted(m for m in plan.inbox if marks[(m[0], m[1])] != m[2])
        if redate:
            await conn.execute(w.SQL_INBOX_REDATE, *w.columns(redate, 3))
        await w.write_plan(conn, plan, versions)
        if published:
            await conn.execute("DELETE FROM outbox WHERE id = ANY($1::text[])", published)
        return plan.outcomes

    async def mark_published(self, ids: Sequence[str]) -> None:
        if ids:
            with self._errors("mark_published"):
                async with self._conn() as conn:
                    await conn.execute("DELETE FROM outbox WHERE id = ANY($1::text[])", list(ids))

    async def mark_failed(self, failures: Sequence[tuple[str, str]], at: float) -> None:
        reasons = s.first_reasons(failures)
        if reasons:
            with self._errors("mark_failed"):
                async with self._conn() as conn:
                    await conn.execute(w.SQL_MARK_FAILED, list(reasons), list(reasons.values()), at)

    async def failed_outbox(self, limit: int = 100) -> list[FailedOutboxRecord]:
        sql = (
            f"SELECT {s.FAILED_COLUMNS} FROM outbox_failed "
            'ORDER BY failed_at DESC, id COLLATE "C" LIMIT $1'
        )
        return [s.failed_from_row(r) for r in await self._fetch("failed_outbox", sql, limit)]

    async def prune(self, *, inbox_before: float, history_before: float | None = None) -> int:
        """Delete inbox marks (and, if asked, history rows) older than the given times.

        The inbox only has to outlive the broker's redelivery window; after that a
        mark is dead weight. Returns the number of rows deleted. Under the slow limit:
        the first prune of a big inbox may take a while."""
        with self._errors("prune"):
            async with self._conn() as conn, conn.transaction():
                status = await conn.execute(
                    "DELETE FROM inbox WHERE at < $1", inbox_before, timeout=self._slow
                )
                n = _count(status)
                if history_before is not None:
                    status = await conn.execute(
                        "DELETE FROM history WHERE at < $1", history_before, timeout=self._slow
                    )
                    n += _count(status)
                return n

    # -- replicas sharing the database (SQL in orchestrator.store._leases_sql) ---------

    async def lease_round(
        self,
        group: str,
        member: str,
        *,
        claim: Sequence[str] = (),
        release: Sequence[str] = (),
        ttl: float,
    ) -> LeaseView:
        """One statement, one round trip, on the server's clock (``_leases_sql`` says
        why not a transaction of several)."""
        ttl = leases.check_ttl(ttl)
        wanted, given_up = leases.requests(claim, release)
        rows = await self._fetch(
            "lease_round", leases.PG_ROUND, group, member, wanted, given_up, ttl
        )
        return leases.view_from_pg_rows(rows, member)

    async def leave(self, group: str, member: str) -> None:
        with self._errors("leave"):
            async with self._conn() as conn:
                await conn.execute(leases.PG_LEAVE, group, member)
