"""The SQLite store's reads: keyed lookups of many keys in one statement, and the SQL of
its scans. Functions of a connection, no state; :mod:`orchestrator.store.sqlite` decides
on which thread they run, :mod:`orchestrator.store._sqlite_write` holds the writes."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

from orchestrator.store import _schema as s
from orchestrator.store._sqlite_rows import chunks, flat, keyed_join
from orchestrator.store.base import InstanceKey

__all__ = [
    "COUNTS",
    "DUE_TIMERS",
    "EXPIRED_PARKED",
    "FAILED_OUTBOX",
    "HISTORY",
    "INSTANCES",
    "NEXT_TIMER_DUE",
    "PARKED_KEYS",
    "PENDING_OUTBOX",
    "TIMERS_OF",
    "pending_outbox",
    "seen",
    "select_pairs",
    "versions",
]


def select_pairs(
    conn: sqlite3.Connection,
    columns: str,
    table: str,
    on: tuple[str, str],
    pairs: Sequence[tuple[str, str]],
) -> list[Any]:
    """``columns`` of the rows of ``table`` whose ``on`` columns equal one of ``pairs``
    (through :func:`~orchestrator.store._sqlite_rows.keyed_join`, which says why).
    Chunked in powers of two: this runs at every commit, and a statement per batch
    size would be compiled again and again."""
    rows: list[Any] = []
    for start, k in chunks(conn, len(pairs), 2):
        sql = f"SELECT {columns} FROM {keyed_join(table, on, k)}"
        rows.extend(conn.execute(sql, flat(pairs[start : start + k])))
    return rows


def seen(conn: sqlite3.Connection, marks: Sequence[tuple[str, str]]) -> set[tuple[str, str]]:
    """The inbox marks (saga, message id) among ``marks`` already recorded."""
    rows = select_pairs(conn, "saga, message_id", "inbox", ("saga", "message_id"), marks)
    return {(r[0], r[1]) for r in rows}


def versions(conn: sqlite3.Connection, keys: Sequence[InstanceKey]) -> dict[InstanceKey, int]:
    """The stored version of each instance of ``keys`` that exists."""
    rows = select_pairs(
        conn, "saga, correlation_id, version", "instances", ("saga", "correlation_id"), keys
    )
    return {(r[0], r[1]): int(r[2]) for r in rows}


PENDING_OUTBOX = f"SELECT {s.OUTBOX_COLUMNS} FROM outbox ORDER BY rowid LIMIT ?"


def pending_outbox(limit: int, exclude: Sequence[str]) -> tuple[str, tuple[object, ...]]:
    """The pending-outbox query and its arguments, without the ``exclude`` destinations."""
    if not exclude:
        return PENDING_OUTBOX, (limit,)
    marks = ",".join("?" * len(exclude))
    sql = (
        f"SELECT {s.OUTBOX_COLUMNS} FROM outbox WHERE destination NOT IN ({marks})"
        " ORDER BY rowid LIMIT ?"
    )
    return sql, (*exclude, limit)


FAILED_OUTBOX = f"SELECT {s.FAILED_COLUMNS} FROM outbox_failed ORDER BY failed_at DESC, id LIMIT ?"
DUE_TIMERS = (
    f"SELECT {s.TIMER_COLUMNS} FROM timers WHERE due <= ? "
    "ORDER BY due, saga, correlation_id, name LIMIT ?"
)
NEXT_TIMER_DUE = "SELECT min(due) FROM timers"
PARKED_KEYS = "SELECT DISTINCT saga, correlation_id FROM parked"
EXPIRED_PARKED = (
    f"SELECT {s.PARKED_COLUMNS} FROM parked WHERE expires <= ? ORDER BY expires, rowid LIMIT ?"
)
HISTORY = (
    f"SELECT {s.HISTORY_COLUMNS} FROM history WHERE saga = ? AND correlation_id = ? ORDER BY id"
)
INSTANCES = (
    f"SELECT {s.INSTANCE_COLUMNS} FROM instances "
    "WHERE (?1 IS NULL OR saga = ?1) AND (?2 IS NULL OR status = ?2) "
    "ORDER BY updated_at DESC, saga, correlation_id LIMIT ?3"
)
TIMERS_OF = (
    f"SELECT {s.TIMER_COLUMNS} FROM timers WHERE saga = ? AND correlation_id = ? ORDER BY due, name"
)
COUNTS = "SELECT status, count(*) FROM instances GROUP BY status"
