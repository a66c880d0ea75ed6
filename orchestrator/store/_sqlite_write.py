"""The SQLite store's writes: a batch's :class:`~orchestrator.store._plan.Plan` as a
handful of multi-row statements.

Why not ``executemany``: it runs the statement once per row, and every run of
``sqlite3_step`` lets go of the GIL and must take it back before the next row.
While the event loop thread is busy (it always is under load), taking it back
waits for that thread to yield, so a commit of 80 units measured 17 ms on a NATS
bench, about 200 us per unit, against about 60 us when the loop thread was idle.
One ``INSERT ... VALUES (...), (...), ...`` per table steps once for all its rows
(chunked as :mod:`orchestrator.store._sqlite_rows` says).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

from orchestrator.store import _schema as s
from orchestrator.store._plan import Plan
from orchestrator.store._sqlite_rows import chunks, flat, keyed_join, marks, tuples

__all__ = ["delete_by_id", "delete_by_key", "insert_rows", "move_to_failed", "write_plan"]


def insert_rows(
    conn: sqlite3.Connection, head: str, tail: str, rows: Sequence[Sequence[Any]]
) -> None:
    """``{head} VALUES (...), ... {tail}`` for ``rows`` (all of one width), in order."""
    width = len(rows[0])
    for start, k in chunks(conn, len(rows), width):
        conn.execute(f"{head} VALUES {tuples(width, k)} {tail}", flat(rows[start : start + k]))


def delete_by_id(conn: sqlite3.Connection, table: str, column: str, ids: Sequence[Any]) -> None:
    """Delete the rows of ``table`` whose ``column`` (its primary key) is in ``ids``."""
    for start, k in chunks(conn, len(ids), 1):
        conn.execute(
            f"DELETE FROM {table} WHERE {column} IN ({marks(k)})",
            list(ids[start : start + k]),
        )


def delete_by_key(
    conn: sqlite3.Connection, table: str, columns: tuple[str, ...], keys: Sequence[Sequence[Any]]
) -> None:
    """Delete the rows of ``table`` whose ``columns`` equal one of ``keys``, by the rowids
    of :func:`~orchestrator.store._sqlite_rows.keyed_join` (which says why a join)."""
    for start, k in chunks(conn, len(keys), len(columns)):
        conn.execute(
            f"DELETE FROM {table} WHERE rowid IN"
            f" (SELECT t.rowid FROM {keyed_join(table, columns, k)})",
            flat(keys[start : start + k]),
        )


_INSTANCES = (
    f"INSERT INTO instances ({s.INSTANCE_COLUMNS})",
    s.upsert_clause(s.INSTANCE_COLUMNS, ("saga", "correlation_id")),
)
_OUTBOX = (
    f"INSERT INTO outbox ({s.OUTBOX_COLUMNS})",
    s.upsert_clause(s.OUTBOX_COLUMNS, ("id",)),
)
_TIMERS = (
    f"INSERT INTO timers ({s.TIMER_COLUMNS})",
    s.upsert_clause(s.TIMER_COLUMNS, ("saga", "correlation_id", "name")),
)


def write_plan(conn: sqlite3.Connection, plan: Plan) -> None:
    """Write ``plan``'s net rows (inside the caller's transaction), table by table in
    the order the plan's rules assume: deletes of a table before its inserts."""
    if plan.inbox:
        insert_rows(conn, "INSERT INTO inbox (saga, message_id, at)", "", plan.inbox)
    if plan.instances:
        insert_rows(conn, *_INSTANCES, [s.instance_params(i) for i in plan.instances])
    if plan.history:
        history = [s.history_params(h) for h in plan.history]
        insert_rows(conn, f"INSERT INTO history ({s.HISTORY_COLUMNS})", "", history)
    if plan.outbox:
        insert_rows(conn, *_OUTBOX, [s.outbox_params(o) for o in plan.outbox])
    if plan.timer_deletes:
        delete_by_key(conn, "timers", ("saga", "correlation_id", "name"), plan.timer_deletes)
    if plan.timer_upserts:
        insert_rows(conn, *_TIMERS, [s.timer_params(t) for t in plan.timer_upserts])
    if plan.parked_deletes:
        delete_by_key(conn, "parked", ("saga", "message_id"), plan.parked_deletes)
    if plan.parked_inserts:
        parked = [s.parked_params(p) for p in plan.parked_inserts]
        insert_rows(
            conn,
            f"INSERT INTO parked ({s.PARKED_COLUMNS})",
            "ON CONFLICT (saga, message_id) DO NOTHING",
            parked,
        )


def move_to_failed(conn: sqlite3.Connection, reasons: dict[str, str], at: float) -> None:
    """Move the outbox rows ``reasons`` names into ``outbox_failed`` with their reasons
    and ``at`` (inside the caller's transaction); ids not in the outbox are skipped. A
    row failed before and pending again (the same id committed anew) takes its new
    bytes and reason."""
    pairs = list(reasons.items())
    for start, k in chunks(conn, len(pairs), 2):
        conn.execute(
            f"INSERT INTO outbox_failed ({s.FAILED_COLUMNS}) "
            f"SELECT {', '.join('t.' + c for c in s.OUTBOX_COLUMNS.split(', '))}, k.column2, ? "
            f"FROM (VALUES {tuples(2, k)}) AS k CROSS JOIN outbox t ON t.id = k.column1 "
            # WHERE true: without it SQLite reads the upsert's ON as the join's
            f"WHERE true {s.upsert_clause(s.FAILED_COLUMNS, ('id',))}",
            [at, *flat(pairs[start : start + k])],
        )
    delete_by_id(conn, "outbox", "id", list(reasons))
