"""Many rows in one SQLite statement: the chunking and placeholder text both the
store's reads (:mod:`orchestrator.store._sqlite_read`) and writes
(:mod:`orchestrator.store._sqlite_write`) use.

Row counts are cut into power-of-two chunks (256, 128, ..., 1) so that only a few
distinct SQL strings exist per statement shape, and sqlite3's statement cache keeps
them prepared: a batch of any size reuses statements already compiled.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

__all__ = ["MAX_ROWS", "chunks", "flat", "keyed_join", "marks", "tuples"]

MAX_ROWS = 256
"""Rows per statement at most; fewer when SQLite's bound-parameter limit is lower (999
before SQLite 3.32, 32,766 since): 9 columns x 256 rows = 2,304 parameters."""


def chunks(conn: sqlite3.Connection, n: int, width: int) -> list[tuple[int, int]]:
    """``(start, size)`` pieces of ``n`` rows of ``width`` values, each size a power of
    two, within MAX_ROWS and this SQLite's bound-parameter limit."""
    fit = conn.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER) // width
    cap = min(MAX_ROWS, 1 << (fit.bit_length() - 1))
    out = []
    i = 0
    while i < n:
        k = min(cap, 1 << ((n - i).bit_length() - 1))
        out.append((i, k))
        i += k
    return out


@lru_cache(maxsize=512)
def tuples(width: int, rows: int) -> str:
    """``(?,...),(?,...)``: ``rows`` groups of ``width`` placeholders."""
    one = "(" + ",".join("?" * width) + ")"
    return ",".join([one] * rows)


@lru_cache(maxsize=64)
def marks(n: int) -> str:
    """``?,?,...``: ``n`` placeholders."""
    return ",".join("?" * n)


@lru_cache(maxsize=256)
def keyed_join(table: str, columns: tuple[str, ...], rows: int) -> str:
    """``(VALUES (?,..),..) AS k CROSS JOIN {table} t ON t.c1 = k.column1 AND ...``: the
    rows of ``table`` matching ``rows`` keys on ``columns``, aliased ``t``.

    Why a cross join: SQLite plans a row-value ``(a, b) IN (VALUES ...)`` as a full
    table scan; the cross join makes the key list the outer loop, with one primary-key
    lookup per key. The reads select from it, the deletes take its rowids."""
    on = " AND ".join(f"t.{c} = k.column{i + 1}" for i, c in enumerate(columns))
    return f"(VALUES {tuples(len(columns), rows)}) AS k CROSS JOIN {table} t ON {on}"


def flat(rows: Sequence[Sequence[Any]]) -> list[Any]:
    """The rows' values in one list, as the statements bind them."""
    return [v for r in rows for v in r]
