"""A service's reply memory in SQLite or PostgreSQL: one small table, kept for a while.

Why a table of its own and not the saga store's: the store's inbox keeps *marks* (a
message was handled), and a participant must answer a copy with its first replies'
bytes; its instance rows are saga instances (listed by the HTTP API, counted in
metrics, never deleted), and a participant's memory is neither. What is shared with
the store is what should be: the URL and its options (``?synchronous=FULL``,
``?command_timeout=5``...), the SQLite connection's pragmas (WAL: a committed record
survives kill -9) and the way driver errors become retryable
:class:`~schemas.errors.StoreError`\\ s naming the database. The table can live in the
sidecar's database or a file of the service's own; ``consumer`` (the service's group)
keeps services sharing one apart::

    sagawire_client_replies (consumer, source, id) -> (sent, at)

``sent`` is :func:`~orchestrator.client.replies.pack` of the replies; ``at`` when they
were recorded, for :meth:`DurableReplies.prune`.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import asyncpg

from adapters._util import redact_url
from orchestrator.client.replies import Key, RecentReplies, ReplyMemory, Sent, pack, unpack
from orchestrator.store._postgres_health import translated
from orchestrator.store._postgres_open import parse_url as parse_postgres_url
from orchestrator.store._sqlite_health import translate
from orchestrator.store._sqlite_open import connect
from orchestrator.store._sqlite_open import parse_url as parse_sqlite_url
from schemas.errors import ConfigError, StoreError

__all__ = ["DurableReplies", "open_replies"]

TABLE = "sagawire_client_replies"
_CHUNK = 400  # keys per statement: 800 parameters, under SQLite's oldest limit (999)


def open_replies(url: str, consumer: str) -> ReplyMemory:
    """The durable reply memory of ``consumer`` (a service's group) at ``url``
    (``sqlite:///path``, ``postgresql://...``), not yet opened; ``memory://`` is a
    :class:`RecentReplies`."""
    scheme = url.partition("://")[0]
    if scheme == "memory":
        return RecentReplies()
    if scheme in ("sqlite", "postgresql", "postgres"):
        return DurableReplies.from_url(url, consumer)
    raise ConfigError(
        f"unknown reply store URL {redact_url(url)!r}: use sqlite:///path,"
        " postgresql://user@host/db or memory://"
    )


class DurableReplies:
    """:class:`~orchestrator.client.replies.ReplyMemory` in a database (``from_url``)."""

    def __init__(self, backend: _Sqlite | _Postgres) -> None:
        self.backend = backend

    @classmethod
    def from_url(cls, url: str, consumer: str) -> DurableReplies:
        if url.startswith("sqlite:"):
            return cls(_Sqlite(url, consumer))
        return cls(_Postgres(url, consumer))

    async def open(self) -> None:
        await self.backend.open()

    async def close(self) -> None:
        await self.backend.close()

    async def recall(self, keys: Sequence[Key]) -> dict[Key, Sent]:
        found: dict[Key, Sent] = {}
        for start in range(0, len(keys), _CHUNK):
            rows = await self.backend.select(keys[start : start + _CHUNK])
            for source, id, raw in rows:
                found[(source, id)] = unpack(raw)
        return found

    async def remember(self, handled: Sequence[tuple[Key, Sent]], now: float) -> None:
        if handled:
            await self.backend.insert([(s, i, pack(sent), now) for (s, i), sent in handled])

    async def prune(self, before: float) -> int:
        return await self.backend.delete_before(before)


class _Sqlite:
    """On a thread of its own, one call (and one transaction) per batch: the service's
    loop never waits on the disk, and the thread hop is paid once per batch."""

    def __init__(self, url: str, consumer: str) -> None:
        self.options = parse_sqlite_url(url)
        self.consumer = consumer
        self._conn: sqlite3.Connection | None = None
        self._executor: ThreadPoolExecutor | None = None

    async def _run(self, fn: Any, *args: Any) -> Any:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(1, thread_name_prefix="sagawire-replies")
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def open(self) -> None:
        if self._conn is None:
            self._conn = await self._run(self._open)

    def _open(self) -> sqlite3.Connection:
        o = self.options
        conn, _ = connect(
            o.path,
            synchronous=o.synchronous,
            busy_timeout_ms=o.busy_timeout_ms,
            cache_mb=o.cache_mb,
        )
        try:
            conn.execute(
                f"CREATE TABLE IF NOT EXISTS {TABLE} (consumer TEXT NOT NULL, source TEXT NOT"
                " NULL, id TEXT NOT NULL, sent BLOB NOT NULL, at REAL NOT NULL,"
                " PRIMARY KEY (consumer, source, id)) WITHOUT ROWID"
            )
            conn.execute(f"CREATE INDEX IF NOT EXISTS {TABLE}_at ON {TABLE} (consumer, at)")
        except sqlite3.Error as exc:
            conn.close()
            raise translate(exc, o.path) from exc
        return conn

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            await self._run(conn.close)
        if self._executor is not None:
            self._executor.shutdown(wait=False)
            self._executor = None

    def _require(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StoreError(f"reply store {self.options.path} is not open; call open() first")
        return self._conn

    async def select(self, keys: Sequence[Key]) -> list[tuple[str, str, bytes]]:
        conn = self._require()
        pairs = ",".join(["(?, ?)"] * len(keys))
        sql = f"SELECT source, id, sent FROM {TABLE} WHERE consumer = ? AND (source, id) IN (VALUES {pairs})"  # noqa: E501
        params = [self.consumer, *(v for key in keys for v in key)]

        def run() -> list[tuple[str, str, bytes]]:
            try:
                return conn.execute(sql, params).fetchall()
            except sqlite3.Error as exc:
                raise translate(exc, self.options.path) from exc

        rows: list[tuple[str, str, bytes]] = await self._run(run)
        return rows

    async def insert(self, rows: Sequence[tuple[str, str, bytes, float]]) -> None:
        conn = self._require()
        consumer = self.consumer

        def run() -> None:
            try:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    conn.executemany(
                        f"INSERT OR IGNORE INTO {TABLE} VALUES (?, ?, ?, ?, ?)",
                        [(consumer, *row) for row in rows],
                    )
                    conn.execute("COMMIT")
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise
            except sqlite3.Error as exc:
                raise translate(exc, self.options.path) from exc

        await self._run(run)

    async def delete_before(self, before: float) -> int:
        conn = self._require()

        def run() -> int:
            try:
                n = conn.execute(
                    f"DELETE FROM {TABLE} WHERE consumer = ? AND at < ?", (self.consumer, before)
                ).rowcount
                return int(n)
            except sqlite3.Error as exc:
                raise translate(exc, self.options.path) from exc

        deleted: int = await self._run(run)
        return deleted


class _Postgres:
    """Through a small asyncpg pool, with the store's time limits."""

    def __init__(self, url: str, consumer: str) -> None:
        self.options = parse_postgres_url(url)
        self.where = f"reply store {redact_url(url)}"
        self.consumer = consumer
        self._pool: Any = None

    def _errors(self, operation: str) -> Any:
        o = self.options
        return translated(
            self.where,
            operation,
            f"connect_timeout={o.connect_timeout:g}s, command_timeout={o.command_timeout:g}s",
        )

    async def open(self) -> None:
        if self._pool is not None:
            return
        o = self.options
        with self._errors("connect"):
            self._pool = await asyncpg.create_pool(
                o.dsn,
                min_size=1,
                max_size=min(4, o.pool_max),
                timeout=o.connect_timeout,
                command_timeout=o.command_timeout,
            )
        try:
            with self._errors("create table"):
                async with self._pool.acquire(timeout=o.acquire_timeout) as conn:
                    await conn.execute(
                        f"CREATE TABLE IF NOT EXISTS {TABLE} (consumer text NOT NULL, source"
                        " text NOT NULL, id text NOT NULL, sent bytea NOT NULL, at double"
                        " precision NOT NULL, PRIMARY KEY (consumer, source, id))"
                    )
                    await conn.execute(
                        f"CREATE INDEX IF NOT EXISTS {TABLE}_at ON {TABLE} (consumer, at)"
                    )
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()

    def _require(self) -> Any:
        if self._pool is None:
            raise StoreError(f"{self.where} is not open; call open() first")
        return self._pool

    async def select(self, keys: Sequence[Key]) -> list[tuple[str, str, bytes]]:
        pool = self._require()
        with self._errors("recall"):
            rows = await pool.fetch(
                f"SELECT r.source, r.id, r.sent FROM {TABLE} r JOIN unnest($2::text[],"
                " $3::text[]) AS k(source, id) ON r.source = k.source AND r.id = k.id"
                " WHERE r.consumer = $1",
                self.consumer,
                [k[0] for k in keys],
                [k[1] for k in keys],
            )
        return [(r[0], r[1], bytes(r[2])) for r in rows]

    async def insert(self, rows: Sequence[tuple[str, str, bytes, float]]) -> None:
        pool = self._require()
        with self._errors("remember"):
            await pool.execute(
                f"INSERT INTO {TABLE} (consumer, source, id, sent, at) SELECT $1, * FROM"
                " unnest($2::text[], $3::text[], $4::bytea[], $5::float8[])"
                " ON CONFLICT DO NOTHING",
                self.consumer,
                [r[0] for r in rows],
                [r[1] for r in rows],
                [r[2] for r in rows],
                [r[3] for r in rows],
            )

    async def delete_before(self, before: float) -> int:
        pool = self._require()
        with self._errors("prune"):
            status: str = await pool.execute(
                f"DELETE FROM {TABLE} WHERE consumer = $1 AND at < $2", self.consumer, before
            )
        return int(status.rpartition(" ")[2] or 0)
