"""Time the operator's listing (``Store.find``, ``GET /sagas``) on a store of N instances.

    .venv/bin/python scripts/bench_listing.py --store sqlite:///PATH --rows 10000000
    .venv/bin/python scripts/bench_listing.py --store postgresql://postgres@127.0.0.1/test \\
        --rows 10000000 [--keep]

Fills the ``instances`` table with N synthetic rows, then times every filter shape of
the listing through the real store's ``find`` (the first page, and a deep page reached
by following cursors), and prints each shape's plan so one can see which index serves
it. A full scan of ``instances`` is flagged, and so is a plan that sorts every matching
row (SQLite's ``USE TEMP B-TREE FOR ORDER BY``, PostgreSQL's ``Sort`` of a whole filter
rather than an ``Incremental Sort`` of the ties): both cost in proportion to the table,
not to the page.

The schema is the real one: the store class opens the database first (schema version
and indexes as the build writes them); the fill then drops the instances' secondary
indexes, writes the rows in bulk (SQLite: ``executemany`` in large transactions with
the journal and fsync off for the fill only; PostgreSQL: ``COPY``), and builds the same
indexes again from the definitions the database itself recorded, then analyses the
table on PostgreSQL (as autovacuum would; SQLite is left without statistics, as the
store leaves it). For PostgreSQL, ``--store`` names the server and a database to
connect to; the rows go into a new database, ``sagawire_listing_<hex>``, dropped at the
end unless ``--keep``. ``--no-fill`` measures a store filled before (the SQLite file,
or the PostgreSQL database the URL names), e.g. after changing a query.

The data: five sagas of skewed sizes (50/25/13/8/4%), eight states each (five running
ones and one per final status), statuses 85% completed, 10% compensated, 4% running
and 1% compensation_failed, ``updated_at`` over 30 days (running ones mostly in the last
quarter hour, a fifth of them older: stuck), and a quarter of the rows sharing their
timestamp with another row, as a batch commits many instances at one time.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import random
import re
import sqlite3
import statistics
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import asyncpg

from orchestrator.store import open_store
from orchestrator.store._admin_sql import find_sql
from orchestrator.store._schema import INSTANCE_COLUMNS
from orchestrator.store._sqlite_open import parse_url as parse_sqlite_url
from orchestrator.store.base import (
    InstanceQuery,
    InstanceRecord,
    Outcome,
    Store,
    StuckRule,
    UnitOfWork,
)

DAY = 86_400.0
SAGAS: tuple[tuple[str, float, tuple[str, ...], tuple[str, str, str]], ...] = (
    # name, share of the rows, running states, (completed, compensated, comp. failed) states
    (
        "order",
        0.50,
        ("reserving", "charging", "shipping", "awaiting_delivery", "releasing"),
        ("delivered", "cancelled", "refund_failed"),
    ),
    (
        "checkout",
        0.25,
        ("pricing", "authorizing", "capturing", "notifying", "voiding"),
        ("paid", "voided", "void_failed"),
    ),
    (
        "trip",
        0.13,
        ("booking_flight", "booking_hotel", "booking_car", "confirming", "unbooking"),
        ("booked", "unbooked", "unbook_failed"),
    ),
    (
        "refund",
        0.08,
        ("validating", "crediting", "restocking", "emailing", "reverting"),
        ("refunded", "reverted", "revert_failed"),
    ),
    (
        "subscription",
        0.04,
        ("provisioning", "billing", "activating", "welcoming", "deprovisioning"),
        ("active", "deprovisioned", "deprovision_failed"),
    ),
)
STATUSES = (  # status, cumulative share
    ("completed", 0.85),
    ("compensated", 0.95),
    ("running", 0.99),
    ("compensation_failed", 1.0),
)
COLUMNS = [c.strip() for c in INSTANCE_COLUMNS.split(",")]
SCAN = re.compile(r"\bSCAN instances\b(?! USING)")  # SQLite: a scan without an index


# -- the data ----------------------------------------------------------------------


def _rows(n: int, now: float, seed: int) -> Iterator[tuple[Any, ...]]:
    """``n`` instance rows in primary-key order (saga, correlation_id), so the fill
    appends to the key's B-tree instead of writing all over it."""
    rnd = random.Random(seed)
    recent = [now - 30 * DAY * rnd.random() for _ in range(64)]
    for saga, share, running, finals in sorted(SAGAS):
        count = round(n * share) if saga != "subscription" else n - _others(n)
        for i in range(count):
            u = rnd.random()
            status = next(s for s, cumulative in STATUSES if u < cumulative)
            if status == "running":
                state = running[rnd.randrange(len(running))]
                age = rnd.random() * 900 if rnd.random() < 0.8 else rnd.random() * 30 * DAY
            else:
                state = finals[("completed", "compensated", "compensation_failed").index(status)]
                age = rnd.random() * 30 * DAY
            if rnd.random() < 0.25:
                at = recent[rnd.randrange(64)]  # committed in the batch of a row before
            else:
                at = round(now - age, 6)
                recent[i % 64] = at
            cid = f"{i:010d}"  # shared by sagas: order 42 and checkout 42 and ...
            data = b'{"id":"%s","amount":%d,"items":%d,"customer":"c-%d"}' % (
                cid.encode(),
                rnd.randrange(100, 100_000),
                rnd.randrange(1, 9),
                rnd.randrange(1_000_000),
            )
            meta = b'{"attempts":{},"failure":null}'
            version = rnd.randrange(1, 9)
            yield (saga, cid, state, status, version, data, meta, at - rnd.random() * 600, at)


def _others(n: int) -> int:
    return sum(round(n * share) for saga, share, _, _ in SAGAS if saga != "subscription")


def _chunks(rows: Iterator[tuple[Any, ...]], size: int) -> Iterator[list[tuple[Any, ...]]]:
    chunk: list[tuple[Any, ...]] = []
    for row in rows:
        chunk.append(row)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _progress(done: int, total: int, started: float) -> None:
    rate = done / max(time.perf_counter() - started, 1e-9)
    print(f"  {done:,}/{total:,} rows, {rate:,.0f}/s", file=sys.stderr, flush=True)


# -- filling each store ------------------------------------------------------------


def fill_sqlite(path: str, n: int, now: float, seed: int) -> float:
    """Write ``n`` rows into the (opened, migrated, closed) store at ``path``; seconds."""
    started = time.perf_counter()
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        indexes = conn.execute(
            "SELECT name, sql FROM sqlite_master WHERE type = 'index'"
            " AND tbl_name = 'instances' AND sql IS NOT NULL"
        ).fetchall()
        for name, _ in indexes:
            conn.execute(f"DROP INDEX {name}")
        conn.execute("DELETE FROM instances")
        conn.execute("PRAGMA journal_mode=OFF")  # the fill only: WAL again below
        conn.execute("PRAGMA synchronous=OFF")
        conn.execute("PRAGMA cache_size=-1000000")
        marks = ", ".join("?" * len(COLUMNS))
        insert = f"INSERT INTO instances ({INSTANCE_COLUMNS}) VALUES ({marks})"
        done = 0
        for chunk in _chunks(_rows(n, now, seed), 500_000):
            conn.execute("BEGIN")
            conn.executemany(insert, chunk)
            conn.execute("COMMIT")
            done += len(chunk)
            _progress(done, n, started)
        for name, sql in indexes:
            t = time.perf_counter()
            conn.execute(sql)
            print(f"  index {name}: {time.perf_counter() - t:.1f} s", file=sys.stderr)
        conn.execute("PRAGMA journal_mode=WAL")
    finally:
        conn.close()
    return time.perf_counter() - started


async def fill_postgres(dsn: str, n: int, now: float, seed: int) -> float:
    started = time.perf_counter()
    conn = await asyncpg.connect(dsn)
    try:
        indexes = await conn.fetch(
            "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'instances'"
            " AND indexname <> 'instances_pkey'"
        )
        for row in indexes:
            await conn.execute(f"DROP INDEX {row['indexname']}")
        await conn.execute("TRUNCATE instances")
        done = 0
        for chunk in _chunks(_rows(n, now, seed), 500_000):
            await conn.copy_records_to_table("instances", records=chunk, columns=COLUMNS)
            done += len(chunk)
            _progress(done, n, started)
        await conn.execute("SET maintenance_work_mem = '512MB'")
        for row in indexes:
            t = time.perf_counter()
            await conn.execute(row["indexdef"])
            print(f"  index {row['indexname']}: {time.perf_counter() - t:.1f} s", file=sys.stderr)
        await conn.execute("VACUUM (ANALYZE) instances")
    finally:
        await conn.close()
    return time.perf_counter() - started


# -- the shapes --------------------------------------------------------------------


def shapes(now: float) -> list[tuple[str, InstanceQuery]]:
    """Every filter shape of ``GET /sagas``: the big saga (half the rows) and the small
    one (4%) where the choice of index could differ."""
    rule = StuckRule(
        cutoffs=(("order", "charging", now - 300), ("checkout", "authorizing", now - 900)),
        default=now - 3600,
    )
    return [
        ("none", InstanceQuery()),
        ("saga (big)", InstanceQuery(saga="order")),
        ("saga (small)", InstanceQuery(saga="subscription")),
        ("saga+status", InstanceQuery(saga="order", status="compensation_failed")),
        ("saga (small)+status", InstanceQuery(saga="subscription", status="running")),
        ("status", InstanceQuery(status="compensation_failed")),
        ("saga+state (running)", InstanceQuery(saga="order", state="charging")),
        ("saga+state (final)", InstanceQuery(saga="trip", state="unbook_failed")),
        ("saga+status+state", InstanceQuery(saga="order", status="running", state="charging")),
        ("correlation_id", InstanceQuery(correlation_id="0000004242")),
        (
            "updated window (1 day)",
            InstanceQuery(updated_after=now - 2 * DAY, updated_before=now - DAY),
        ),
        ("saga+window", InstanceQuery(saga="refund", updated_after=now - 2 * DAY)),
        ("stuck", InstanceQuery(stuck=rule)),
        ("saga+stuck", InstanceQuery(saga="order", stuck=rule)),
    ]


# -- measuring ---------------------------------------------------------------------


@dataclasses.dataclass
class Timing:
    shape: str
    rows: int
    first_cold_ms: float
    first_p50: float
    first_p95: float
    pages: int
    walk_ms: float
    deep_p50: float
    deep_p95: float
    index: str
    flags: list[str]


def _cursor(row: InstanceRecord) -> tuple[float, str, str]:
    return (row.updated_at, row.saga, row.correlation_id)


async def _timed(call: Callable[[], Awaitable[Any]], runs: int) -> tuple[float, float]:
    """p50 and p95 of ``runs`` calls, in ms (fewer when one call is slow)."""
    times: list[float] = []
    deadline = time.perf_counter() + 20
    for _ in range(runs):
        t = time.perf_counter()
        await call()
        times.append((time.perf_counter() - t) * 1000)
        if time.perf_counter() > deadline and len(times) >= 3:
            break
    times.sort()
    return statistics.median(times), times[min(len(times) - 1, round(0.95 * (len(times) - 1)))]


async def measure(
    store: Store, name: str, q: InstanceQuery, runs: int, pages: int, explain: Explainer
) -> Timing:
    t = time.perf_counter()
    first = await store.find(q)
    cold = (time.perf_counter() - t) * 1000
    p50, p95 = await _timed(lambda: store.find(q), runs)
    deep = q
    walked = 1
    t = time.perf_counter()
    rows = first
    while walked < pages and len(rows) == q.limit:
        deep = dataclasses.replace(q, after=_cursor(rows[-1]))
        rows = await store.find(deep)
        walked += 1
    walk_ms = (time.perf_counter() - t) * 1000
    d50, d95 = await _timed(lambda: store.find(deep), runs)
    plans = [await explain(q, "first page")]
    if deep is not q:
        plans.append(await explain(deep, f"page {walked}"))
    flags = sorted({f for text in plans for f in _flags(text, explain.dialect)})
    print(f"\n### {name}: {len(first)} rows on the first page")
    for text in plans:
        print(text)
    return Timing(
        name,
        len(first),
        cold,
        p50,
        p95,
        walked,
        walk_ms,
        d50,
        d95,
        ", ".join(_indexes(plans[0])) or "-",
        flags,
    )


def _indexes(plan: str) -> list[str]:
    found = re.findall(
        r"(?:USING (?:COVERING )?INDEX|Index (?:Only )?Scan (?:Backward )?using|Bitmap Index"
        r" Scan on) (\w+)",
        plan,
    )
    return list(dict.fromkeys(found))


def _flags(plan: str, dialect: str) -> list[str]:
    flags = []
    if SCAN.search(plan) or "Seq Scan on instances" in plan:
        flags.append("FULL SCAN")
    if "USE TEMP B-TREE FOR ORDER BY" in plan or re.search(r"(?m)^\s*(->\s*)?Sort  \(", plan):
        flags.append("sorts every match")
    return flags


class Explainer:
    """The plan of the statement ``find`` sends, from a connection of our own."""

    def __init__(self, dialect: str, target: str) -> None:
        self.dialect = dialect
        self.target = target
        self._sqlite: sqlite3.Connection | None = None
        self._pg: Any = None

    async def open(self) -> None:
        if self.dialect == "sqlite":
            self._sqlite = sqlite3.connect(f"file:{self.target}?mode=ro", uri=True)
        else:
            self._pg = await asyncpg.connect(self.target)

    async def close(self) -> None:
        if self._sqlite is not None:
            self._sqlite.close()
        if self._pg is not None:
            await self._pg.close()

    async def __call__(self, q: InstanceQuery, label: str) -> str:
        if self._sqlite is not None:
            sql, args = find_sql(q, "sqlite")
            rows = self._sqlite.execute("EXPLAIN QUERY PLAN " + sql, args).fetchall()
            depth = {0: 0}
            lines = []
            for node, parent, _, detail in rows:
                depth[node] = depth.get(parent, 0) + 1
                lines.append("  " * depth[node] + detail)
            return f"EXPLAIN QUERY PLAN ({label}):\n" + "\n".join(lines)
        sql, args = find_sql(q, "postgres")
        rows = await self._pg.fetch("EXPLAIN (ANALYZE, BUFFERS) " + sql, *args)
        return f"EXPLAIN (ANALYZE, BUFFERS) ({label}):\n" + "\n".join("  " + r[0] for r in rows)


# -- what the indexes cost a write ---------------------------------------------------


async def write_cost(store_url: str, instances: int, transitions: int = 4) -> None:
    """Create ``instances`` instances and move each through ``transitions`` updates
    with the store's own ``commit``, in batches of 256 as the engine groups them, each
    unit with its inbox mark; print the CPU and wall time per instance written. Every
    update moves ``updated_at``, so every index holding it is written, as in a run."""
    store = open_store(store_url)
    await store.open()
    cpu = wall = 0.0
    try:
        for version in range(1, transitions + 1):
            status = "completed" if version == transitions else "running"
            for start in range(0, instances, 256):
                at = time.time()
                units = [
                    UnitOfWork(
                        instance=InstanceRecord(
                            "order",
                            f"{i:010d}",
                            f"state{version}",
                            status,
                            version,
                            b'{"id":"%d","amount":1234}' % i,
                            b'{"attempts":{}}',
                            at,
                            at,
                        ),
                        expected_version=version - 1,
                        inbox=("order", f"m-{i}-{version}"),
                    )
                    for i in range(start, min(start + 256, instances))
                ]
                c, w = time.process_time(), time.perf_counter()
                outcomes = await store.commit(units)
                cpu += time.process_time() - c
                wall += time.perf_counter() - w
                if any(o is not Outcome.COMMITTED for o in outcomes):
                    raise SystemExit(f"a unit did not commit: {outcomes[:3]}")
    finally:
        await store.close()
    n = instances * transitions
    print(
        f"{n:,} instance writes: {cpu / n * 1e6:.1f} us CPU and {wall / n * 1e6:.1f} us wall"
        " per write in Store.commit"
    )


# -- the run -----------------------------------------------------------------------


def _with_db(url: str, db: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path="/" + db))


def _store_url(url: str) -> str:
    """The store's URL, with a command timeout long enough for a slow plan to finish."""
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    query.setdefault("command_timeout", "600")
    return urlunsplit(parts._replace(query=urlencode(query)))


def _dsn(url: str) -> str:
    return urlunsplit(urlsplit(url)._replace(query=""))


async def _newest(store_url: str) -> float:
    """The newest ``updated_at`` of a filled store: the "now" of its data."""
    store = open_store(store_url)
    await store.open()
    try:
        rows = await store.find(InstanceQuery(limit=1))
    finally:
        await store.close()
    if not rows:
        raise SystemExit(f"{store_url}: no instances; fill it first (without --no-fill)")
    return rows[0].updated_at + 1


async def run(args: argparse.Namespace) -> None:
    url: str = args.store
    scheme = urlsplit(url).scheme
    if scheme not in ("sqlite", "postgresql", "postgres"):
        raise SystemExit(f"--store must be sqlite:///PATH or postgresql://..., not {url!r}")
    dialect = "sqlite" if scheme == "sqlite" else "postgres"
    created = ""
    if dialect == "postgres" and args.fill:
        created = f"sagawire_listing_{uuid.uuid4().hex[:10]}"
        admin = await asyncpg.connect(_dsn(url))
        try:
            await admin.execute(f'CREATE DATABASE "{created}"')
        finally:
            await admin.close()
        url = _with_db(url, created)
        print(f"database {created}", file=sys.stderr)
    store_url = _store_url(url) if dialect == "postgres" else url
    try:
        await _run(args, store_url, dialect)
    finally:
        if created and not args.keep:
            admin = await asyncpg.connect(_dsn(args.store))
            try:
                await admin.execute(f'DROP DATABASE IF EXISTS "{created}" WITH (FORCE)')
            finally:
                await admin.close()
            print(f"dropped database {created}", file=sys.stderr)
        elif created:
            print(f"kept database {created}: {_with_db(args.store, created)}", file=sys.stderr)


async def _run(args: argparse.Namespace, store_url: str, dialect: str) -> None:
    path = parse_sqlite_url(store_url).path if dialect == "sqlite" else ""
    if args.fill:
        now = time.time()
        store = open_store(store_url)  # the real schema, at this build's version
        await store.open()
        await store.close()
        print(f"filling {args.rows:,} rows...", file=sys.stderr)
        if dialect == "sqlite":
            seconds = fill_sqlite(path, args.rows, now, args.seed)
        else:
            seconds = await fill_postgres(_dsn(store_url), args.rows, now, args.seed)
        print(f"filled {args.rows:,} rows in {seconds:.0f} s", file=sys.stderr)
    now = await _newest(store_url)
    explain = Explainer(dialect, path if dialect == "sqlite" else _dsn(store_url))
    store = open_store(store_url)
    await store.open()
    await explain.open()
    results = []
    try:
        for name, q in shapes(now):
            if args.only and not any(o in name for o in args.only):
                continue
            results.append(await measure(store, name, q, args.runs, args.pages, explain))
    finally:
        await explain.close()
        await store.close()
    print(f"\n## {dialect}: page of 100, {args.runs} runs each (ms)\n")
    print(
        "| filter | index | first page p50 / p95 | first, cold | page N | walk to page N"
        " | page N p50 / p95 | flags |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in results:
        print(
            f"| {r.shape} | {r.index} | {r.first_p50:.2f} / {r.first_p95:.2f} |"
            f" {r.first_cold_ms:.1f} | {r.pages} | {r.walk_ms:.0f} |"
            f" {r.deep_p50:.2f} / {r.deep_p95:.2f} | {', '.join(r.flags) or '-'} |"
        )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--store", required=True, help="sqlite:///PATH or postgresql://...")
    p.add_argument("--rows", type=int, default=10_000_000, help="instances to write")
    p.add_argument("--runs", type=int, default=20, help="timed runs of each page")
    p.add_argument("--pages", type=int, default=50, help="the deep page's number")
    p.add_argument("--seed", type=int, default=17)
    p.add_argument("--keep", action="store_true", help="keep the PostgreSQL database")
    p.add_argument(
        "--no-fill", dest="fill", action="store_false", help="measure a store filled before"
    )
    p.add_argument("--only", action="append", help="shapes whose name contains this")
    p.add_argument(
        "--write-cost",
        type=int,
        default=0,
        metavar="N",
        help="instead: time N instances x 4 updates through Store.commit on a new SQLite file",
    )
    args = p.parse_args()
    if args.rows < 1 or args.runs < 1 or args.pages < 1:
        p.error("--rows, --runs and --pages must be positive")
    if args.write_cost:
        if (
            urlsplit(args.store).scheme != "sqlite"
            or Path(parse_sqlite_url(args.store).path).exists()
        ):
            p.error("--write-cost takes a sqlite:/// URL of a file that does not exist yet")
        asyncio.run(write_cost(args.store, args.write_cost))
        return
    if args.fill and urlsplit(args.store).scheme == "sqlite":
        path = parse_sqlite_url(args.store).path
        if Path(path).exists():
            p.error(f"{path} exists: remove it to fill afresh, or pass --no-fill")
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
