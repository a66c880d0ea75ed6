"""The PostgreSQL store's group commit in SQL: one ``unnest`` statement per table.

:mod:`orchestrator.store.postgres` runs these inside its transaction (see its docstring
for the order and why); here are the statements and :func:`write_plan`, which writes a
:class:`~orchestrator.store._plan.Plan`'s net rows. Beside it,
:mod:`orchestrator.store._sqlite_write` does the same for SQLite.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from orchestrator.store import _schema as s
from orchestrator.store._plan import Plan
from orchestrator.store.base import InstanceKey

__all__ = [
    "KEYS",
    "SQL_INBOX_DELETE",
    "SQL_INBOX_INSERT",
    "SQL_LOCK_VERSIONS",
    "SQL_MARK_FAILED",
    "ConcurrentInsert",
    "columns",
    "write_plan",
]


class ConcurrentInsert(Exception):
    """Another writer created an instance this batch inserts, after the batch's reads:
    roll the batch back and decide it again from fresh reads."""


def columns(rows: Sequence[Sequence[Any]], width: int) -> list[list[Any]]:
    """Rows to per-column lists, the shape ``unnest($1::t[], $2::u[], ...)`` takes."""
    return [list(col) for col in zip(*rows, strict=True)] if rows else [[] for _ in range(width)]


KEYS = "unnest($1::text[], $2::text[]) AS k(ks, kc)"
"""Pairs of keys passed as two arrays, for joins (the reads use it too)."""
SQL_MARK_FAILED = (
    "WITH gone AS (DELETE FROM outbox o USING unnest($1::text[], $2::text[]) AS f(id, reason) "
    "WHERE o.id = f.id RETURNING o.id, o.destination, o.key, o.body, o.headers, o.created_at, "
    f"f.reason) INSERT INTO outbox_failed ({s.FAILED_COLUMNS}) "
    "SELECT id, destination, key, body, headers, created_at, reason, $3 FROM gone "
    + s.upsert_clause(s.FAILED_COLUMNS, ("id",))
)
"""Move outbox rows (ids, reasons) into ``outbox_failed`` at time $3, in one statement:
ids not in the outbox are skipped; one failed before and committed anew takes its new
bytes and reason."""
_INSTANCE_UNNEST = (
    "unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::int8[], $6::bytea[], "
    "$7::bytea[], $8::float8[], $9::float8[]) "
    "AS u(saga, correlation_id, state, status, version, data, meta, created_at, updated_at)"
)
SQL_LOCK_VERSIONS = (
    "SELECT i.saga, i.correlation_id, i.version FROM instances i JOIN "
    + KEYS
    + " ON i.saga = k.ks AND i.correlation_id = k.kc "
    "ORDER BY i.saga, i.correlation_id FOR UPDATE OF i"
)
SQL_INBOX_INSERT = (
    "INSERT INTO inbox (saga, message_id, at) "
    "SELECT * FROM unnest($1::text[], $2::text[], $3::float8[]) "
    "ON CONFLICT DO NOTHING RETURNING saga, message_id"
)
SQL_INBOX_REDATE = (
    "UPDATE inbox i SET at = k.at "
    "FROM unnest($1::text[], $2::text[], $3::float8[]) AS k (ks, kc, at) "
    "WHERE i.saga = k.ks AND i.message_id = k.kc"
)
SQL_INBOX_DELETE = (
    "DELETE FROM inbox i USING " + KEYS + " WHERE i.saga = k.ks AND i.message_id = k.kc"
)
_SQL_INSTANCE_UPDATE = (
    "UPDATE instances i SET state = u.state, status = u.status, version = u.version, "
    "data = u.data, meta = u.meta, created_at = u.created_at, updated_at = u.updated_at "
    "FROM " + _INSTANCE_UNNEST + " WHERE i.saga = u.saga AND i.correlation_id = u.correlation_id"
)
_SQL_INSTANCE_INSERT = (
    f"INSERT INTO instances ({s.INSTANCE_COLUMNS}) SELECT * FROM {_INSTANCE_UNNEST} "
    "ON CONFLICT DO NOTHING RETURNING saga"
)
_SQL_HISTORY_INSERT = (
    f"INSERT INTO history ({s.HISTORY_COLUMNS}) "
    "SELECT saga, cid, seq, mid, mtype, from_s, to_s, commands::jsonb, at, note FROM unnest("
    "$1::text[], $2::text[], $3::int8[], $4::text[], $5::text[], $6::text[], $7::text[], "
    "$8::text[], $9::float8[], $10::text[]) WITH ORDINALITY "
    "AS u(saga, cid, seq, mid, mtype, from_s, to_s, commands, at, note, ord) ORDER BY ord"
)
_SQL_OUTBOX_UPSERT = (
    f"INSERT INTO outbox ({s.OUTBOX_COLUMNS}) "
    "SELECT id, dest, key, body, headers::jsonb, created_at FROM unnest("
    "$1::text[], $2::text[], $3::text[], $4::bytea[], $5::text[], $6::float8[]) "
    "WITH ORDINALITY AS u(id, dest, key, body, headers, created_at, ord) ORDER BY ord "
    + s.upsert_clause(s.OUTBOX_COLUMNS, ("id",))
)
_SQL_TIMER_DELETE = (
    "DELETE FROM timers t USING unnest($1::text[], $2::text[], $3::text[]) AS k(ks, kc, kn) "
    "WHERE t.saga = k.ks AND t.correlation_id = k.kc AND t.name = k.kn"
)
_SQL_TIMER_UPSERT = (
    f"INSERT INTO timers ({s.TIMER_COLUMNS}) "
    "SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::float8[], $5::bytea[]) "
    + s.upsert_clause(s.TIMER_COLUMNS, ("saga", "correlation_id", "name"))
)
_SQL_PARKED_DELETE = (
    "DELETE FROM parked p USING " + KEYS + " WHERE p.saga = k.ks AND p.message_id = k.kc"
)
_SQL_PARKED_INSERT = (
    f"INSERT INTO parked ({s.PARKED_COLUMNS}) "
    "SELECT saga, cid, mid, dest, body, parked_at, expires, reason FROM unnest("
    "$1::text[], $2::text[], $3::text[], $4::text[], $5::bytea[], $6::float8[], "
    "$7::float8[], $8::text[]) WITH ORDINALITY "
    "AS u(saga, cid, mid, dest, body, parked_at, expires, reason, ord) ORDER BY ord "
    "ON CONFLICT (saga, message_id) DO NOTHING"
)


async def write_plan(conn: Any, plan: Plan, versions: dict[InstanceKey, int]) -> None:
    """Write ``plan``'s net rows inside the caller's transaction; ``versions`` are the
    stored versions read (and locked) first: an instance there is updated, one not
    there inserted. Raises :class:`ConcurrentInsert` if an insert lost a race."""
    updates = [s.instance_params(i) for i in plan.instances if i.key in versions]
    inserts = [s.instance_params(i) for i in plan.instances if i.key not in versions]
    if updates:
        await conn.execute(_SQL_INSTANCE_UPDATE, *columns(updates, 9))
    if inserts:
        created = await conn.fetch(_SQL_INSTANCE_INSERT, *columns(inserts, 9))
        if len(created) != len(inserts):
            raise ConcurrentInsert  # another writer created one of them after our reads
    if plan.history:
        rows = [s.history_params(h) for h in plan.history]
        await conn.execute(_SQL_HISTORY_INSERT, *columns(rows, 10))
    if plan.outbox:
        rows = [s.outbox_params(o) for o in plan.outbox]
        await conn.execute(_SQL_OUTBOX_UPSERT, *columns(rows, 6))
    if plan.timer_deletes:
        await conn.execute(_SQL_TIMER_DELETE, *columns(plan.timer_deletes, 3))
    if plan.timer_upserts:
        rows = [s.timer_params(t) for t in plan.timer_upserts]
        await conn.execute(_SQL_TIMER_UPSERT, *columns(rows, 5))
    if plan.parked_deletes:
        await conn.execute(_SQL_PARKED_DELETE, *columns(plan.parked_deletes, 2))
    if plan.parked_inserts:
        rows = [s.parked_params(p) for p in plan.parked_inserts]
        await conn.execute(_SQL_PARKED_INSERT, *columns(rows, 8))
