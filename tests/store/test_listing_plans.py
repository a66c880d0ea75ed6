"""Every filter of the operator's listing is served by an index on SQLite.

``Store.find`` must stay fast on millions of instances (docs/performance.md measures
it on ten million). What keeps it fast is the plan, not the row count, so this asks
SQLite for the plan (``EXPLAIN QUERY PLAN``) of the very statement ``find_sql`` builds,
on a real store's schema, for each filter shape, on its first page and on a page
reached by a cursor: none may scan the table (``SCAN instances`` without an index),
none may sort every matching row (``USE TEMP B-TREE FOR ORDER BY``; sorting the ties of
one ``updated_at``, ``FOR RIGHT PART OF ORDER BY``, is fine), and each is served by the
index ``_schema._LIST_INDEXES`` names for it. The store is left without statistics
(no ``ANALYZE``), as the store itself leaves it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import sqlite3
from collections.abc import Iterator

import pytest

from orchestrator.store._admin_sql import find_sql
from orchestrator.store._schema import _LIST_INDEXES, INSTANCE_COLUMNS
from orchestrator.store.base import InstanceQuery, StuckRule
from orchestrator.store.sqlite import SqliteStore

NOW = 1_800_000_000.0
RULE = StuckRule(cutoffs=(("order", "charging", NOW - 300),), default=NOW - 3600)

SHAPES: dict[str, tuple[InstanceQuery, str]] = {
    "none": (InstanceQuery(), "instances_recent"),
    "saga": (InstanceQuery(saga="order"), "instances_saga_recent"),
    "saga+status": (InstanceQuery(saga="order", status="running"), "instances_saga"),
    "status": (InstanceQuery(status="compensation_failed"), "instances_status_recent"),
    "saga+state": (InstanceQuery(saga="order", state="charging"), "instances_saga_recent"),
    "saga+status+state": (
        InstanceQuery(saga="order", status="running", state="charging"),
        "instances_saga",
    ),
    "correlation_id": (InstanceQuery(correlation_id="c-42"), "instances_correlation"),
    "window": (
        InstanceQuery(updated_after=NOW - 86_400, updated_before=NOW - 3600),
        "instances_recent",
    ),
    "saga+window": (
        InstanceQuery(saga="trip", updated_after=NOW - 86_400),
        "instances_saga_recent",
    ),
    "stuck": (InstanceQuery(stuck=RULE), "instances_status_recent"),
    "saga+stuck": (InstanceQuery(saga="order", stuck=RULE), "instances_saga"),
    "status+stuck": (InstanceQuery(status="running", stuck=RULE), "instances_status_recent"),
}


@pytest.fixture(scope="module")
def conn(tmp_path_factory: pytest.TempPathFactory) -> Iterator[sqlite3.Connection]:
    """A store's database (schema as the store writes it) with 5,000 instances."""
    path = tmp_path_factory.mktemp("plans") / "listing.db"

    async def create() -> None:
        store = SqliteStore(str(path))
        await store.open()
        await store.close()

    asyncio.run(create())
    db = sqlite3.connect(path)
    statuses = ("completed",) * 17 + ("compensated", "compensated", "running")
    rows = [
        (
            ("order", "checkout", "trip", "refund", "subscription")[i % 5],
            f"c-{i}",
            ("reserving", "charging", "completed")[i % 3],
            statuses[i % 20],
            1,
            b"{}",
            b"{}",
            NOW - i,
            NOW - i // 3,
        )
        for i in range(5000)
    ]
    with db:
        db.executemany(
            f"INSERT INTO instances ({INSTANCE_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?)", rows
        )
    yield db
    db.close()


def _plan(conn: sqlite3.Connection, query: InstanceQuery) -> list[str]:
    sql, args = find_sql(query, "sqlite")
    return [row[3] for row in conn.execute("EXPLAIN QUERY PLAN " + sql, args)]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("page", ["first", "after a cursor"])
def test_each_filter_is_served_by_its_index(
    conn: sqlite3.Connection, shape: str, page: str
) -> None:
    query, index = SHAPES[shape]
    if page != "first":
        query = dataclasses.replace(query, after=(NOW - 100, "order", "c-300"))
    plan = _plan(conn, query)
    text = "\n".join(plan)
    scans = [line for line in plan if line.startswith("SCAN instances") and "USING" not in line]
    assert not scans, f"{shape}: a full scan of instances:\n{text}"
    assert any(f"USING INDEX {index} " in line + " " for line in plan), (
        f"{shape}: expected {index}:\n{text}"
    )
    if shape != "correlation_id":  # at most a row per saga to sort
        assert "USE TEMP B-TREE FOR ORDER BY" not in plan, f"{shape}: sorts every match:\n{text}"


def test_the_plans_see_the_real_indexes(conn: sqlite3.Connection) -> None:
    """The indexes this test names are the ones the store created."""
    names = {
        row[0]
        for row in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'instances'"
        )
    }
    assert {name for name, _ in _LIST_INDEXES} <= names
    assert {index for _, index in SHAPES.values()} <= {name for name, _ in _LIST_INDEXES}


def test_a_full_scan_would_be_seen(conn: sqlite3.Connection) -> None:
    """The check above reads plans the way SQLite writes a scan without an index."""
    plan = [
        row[3]
        for row in conn.execute("EXPLAIN QUERY PLAN SELECT * FROM instances WHERE version = 3")
    ]
    assert any(line.startswith("SCAN instances") and "USING" not in line for line in plan)
