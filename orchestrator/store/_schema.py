"""The durable schema, side by side for SQLite and PostgreSQL, and its version.

Both dialects describe the same tables so a reader can compare them line by
line. ``sagawire_meta`` holds ``schema_version``; :func:`check_version` refuses
a database written by a newer build (an older build must not guess at columns
it does not know), and ``MIGRATIONS`` lists, per version, the statements that
bring a database from the previous version to it — ``open()`` applies those
above the stored version in one transaction. Version 1 is the first schema, so
its "migration" creates everything. A migration is never edited once released: a
database written by that release holds exactly what it says.

Version 2 adds ``outbox_failed``: outbox rows the broker refused for good, moved
out of ``outbox`` with the broker's reason (``Store.mark_failed``). A table of
their own rather than a column on ``outbox``: the relay's ``pending_outbox`` scan,
on the hot path, stays a plain read of ``outbox`` that no failed row can slow
down or slip into, and ``mark_published`` of a failed id finds nothing to delete.

Version 4 adds the indexes of the operator's listing (:data:`_LIST_INDEXES` says
which filter each serves) and ``deadletters``: what the engine dead-lettered, kept
for the operator to list and redrive (``Store.keep_dead_letters``).

Version 5 adds ``members`` and ``leases``: the replicas of a group sharing the store,
each with the time its heartbeat expires, and which replica holds each of the group's
units until when (``Store.lease_round``, :mod:`orchestrator.store._leases_sql`). No
index beyond the primary keys: every statement reads one group's rows (its key's
prefix), and a group has as many rows as it has replicas and units, not messages.

Ordering columns: ``pending_outbox``, ``history`` and ``parked`` read back in
insertion order, so each of those tables has an increasing integer (the SQLite
rowid, a PostgreSQL identity column); an upsert keeps a row's position.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson

from orchestrator.store.base import (
    FailedOutboxRecord,
    HistoryRecord,
    InstanceRecord,
    OutboxRecord,
    ParkedRecord,
    TimerRecord,
)
from schemas.errors import SchemaVersionError

__all__ = [
    "FAILED_COLUMNS",
    "HISTORY_COLUMNS",
    "INSTANCE_COLUMNS",
    "OUTBOX_COLUMNS",
    "PARKED_COLUMNS",
    "POSTGRES_MIGRATIONS",
    "SCHEMA_VERSION",
    "SQLITE_MIGRATIONS",
    "TIMER_COLUMNS",
    "check_version",
    "decode_commands",
    "decode_headers",
    "encode_commands",
    "encode_headers",
    "failed_from_row",
    "first_reasons",
    "history_from_row",
    "history_params",
    "instance_from_row",
    "instance_params",
    "outbox_from_row",
    "outbox_params",
    "parked_from_row",
    "parked_params",
    "pending_migrations",
    "timer_from_row",
    "timer_params",
]

SCHEMA_VERSION = 5
"""The schema this build writes and understands."""

_LIST_INDEXES = (
    ("instances_recent", "(updated_at, saga, correlation_id)"),
    ("instances_saga_recent", "(saga, updated_at, state)"),
    ("instances_saga", "(saga, status, updated_at)"),
    ("instances_status_recent", "(status, updated_at)"),
    ("instances_correlation", "(correlation_id)"),
)
"""The indexes of the operator's listing (``Store.find``), each read newest first from
an equality prefix, so a page costs about its own rows, not the table's:

======================================  =========================================
filter                                  index (columns)
======================================  =========================================
none; ``updated_after``/``_before``     ``instances_recent`` (updated_at, saga,
                                        correlation_id), read backwards
``saga`` (with a time range, or         ``instances_saga_recent`` (saga,
``state``: checked in the index)        updated_at, state)
``saga`` + ``status`` (+ ``state``);    ``instances_saga`` (saga, status,
``saga`` + stuck (``running``)          updated_at)
``status``; stuck without ``saga``      ``instances_status_recent`` (status,
                                        updated_at); replaces version 1's
                                        ``instances_status``, ``counts`` uses it
``correlation_id``                      ``instances_correlation`` (at most a row
                                        per saga, sorted)
======================================  =========================================

Each needs its equality prefix: without stats (SQLite keeps none) a planner cannot
tell a saga of 4% of the rows from one of 50%, so a filter served by walking another
index with a check per row would cost the table's size for a rare saga or status.
``saga`` alone once read every row of the saga and sorted them (seconds at ten
million); ``tests/store/test_listing_plans.py`` keeps each filter on its index.
``updated_at`` moves at every transition, so all but the last are written by every
commit: five is what the filters need, not one more (measured in docs/performance.md)."""

SQLITE_MIGRATIONS: dict[int, tuple[str, ...]] = {
    1: (
        """CREATE TABLE instances (
            saga TEXT NOT NULL, correlation_id TEXT NOT NULL,
            state TEXT NOT NULL, status TEXT NOT NULL, version INTEGER NOT NULL,
            data BLOB NOT NULL, meta BLOB NOT NULL,
            created_at REAL NOT NULL, updated_at REAL NOT NULL,
            PRIMARY KEY (saga, correlation_id))""",
        "CREATE INDEX instances_status ON instances (status)",
        """CREATE TABLE inbox (
            saga TEXT NOT NULL, message_id TEXT NOT NULL, at REAL NOT NULL,
            PRIMARY KEY (saga, message_id)) WITHOUT ROWID""",
        """CREATE TABLE history (
            id INTEGER PRIMARY KEY,
            saga TEXT NOT NULL, correlation_id TEXT NOT NULL, seq INTEGER NOT NULL,
            message_id TEXT NOT NULL, message_type TEXT NOT NULL,
            from_state TEXT NOT NULL, to_state TEXT NOT NULL,
            commands TEXT NOT NULL, at REAL NOT NULL)""",
        "CREATE INDEX history_instance ON history (saga, correlation_id, id)",
        """CREATE TABLE outbox (
            id TEXT PRIMARY KEY, destination TEXT NOT NULL, key TEXT,
            body BLOB NOT NULL, headers TEXT NOT NULL, created_at REAL NOT NULL)""",
        """CREATE TABLE timers (
            saga TEXT NOT NULL, correlation_id TEXT NOT NULL, name TEXT NOT NULL,
            due REAL NOT NULL, payload BLOB NOT NULL,
            PRIMARY KEY (saga, correlation_id, name))""",
        "CREATE INDEX timers_due ON timers (due)",
        """CREATE TABLE parked (
            saga TEXT NOT NULL, message_id TEXT NOT NULL, correlation_id TEXT NOT NULL,
            destination TEXT NOT NULL, body BLOB NOT NULL,
            parked_at REAL NOT NULL, expires REAL NOT NULL, reason TEXT NOT NULL,
            PRIMARY KEY (saga, message_id))""",
        "CREATE INDEX parked_instance ON parked (saga, correlation_id)",
        "CREATE INDEX parked_expires ON parked (expires)",
    ),
    2: (
        """CREATE TABLE outbox_failed (
            id TEXT PRIMARY KEY, destination TEXT NOT NULL, key TEXT,
            body BLOB NOT NULL, headers TEXT NOT NULL, created_at REAL NOT NULL,
            reason TEXT NOT NULL, failed_at REAL NOT NULL)""",
        "CREATE INDEX outbox_failed_at ON outbox_failed (failed_at)",
    ),
    3: ("ALTER TABLE history ADD COLUMN note TEXT NOT NULL DEFAULT ''",),
    4: (
        *(f"CREATE INDEX {name} ON instances {columns}" for name, columns in _LIST_INDEXES),
        "DROP INDEX instances_status",
        """CREATE TABLE deadletters (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            message_id TEXT NOT NULL, type TEXT NOT NULL, saga TEXT NOT NULL,
            correlation_id TEXT NOT NULL, destination TEXT NOT NULL, key TEXT,
            body BLOB NOT NULL, headers TEXT NOT NULL, kind TEXT NOT NULL,
            reason TEXT NOT NULL, at REAL NOT NULL,
            redriven_at REAL, redriven_by TEXT NOT NULL DEFAULT '')""",
        "CREATE INDEX deadletters_at ON deadletters (at)",
    ),
    5: (
        """CREATE TABLE members (
            grp TEXT NOT NULL, member TEXT NOT NULL, expires_at REAL NOT NULL,
            PRIMARY KEY (grp, member)) WITHOUT ROWID""",
        """CREATE TABLE leases (
            grp TEXT NOT NULL, unit TEXT NOT NULL, owner TEXT NOT NULL,
            expires_at REAL NOT NULL,
            PRIMARY KEY (grp, unit)) WITHOUT ROWID""",
    ),
}

POSTGRES_MIGRATIONS: dict[int, tuple[str, ...]] = {
    1: (
        """CREATE TABLE instances (
            saga text NOT NULL, correlation_id text NOT NULL,
            state text NOT NULL, status text NOT NULL, version bigint NOT NULL,
            data bytea NOT NULL, meta bytea NOT NULL,
            created_at double precision NOT NULL, updated_at double precision NOT NULL,
            PRIMARY KEY (saga, correlation_id))""",
        "CREATE INDEX instances_status ON instances (status)",
        """CREATE TABLE inbox (
            saga text NOT NULL, message_id text NOT NULL, at double precision NOT NULL,
            PRIMARY KEY (saga, message_id))""",
        """CREATE TABLE history (
            id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            saga text NOT NULL, correlation_id text NOT NULL, seq bigint NOT NULL,
            message_id text NOT NULL, message_type text NOT NULL,
            from_state text NOT NULL, to_state text NOT NULL,
            commands jsonb NOT NULL, at double precision NOT NULL)""",
        "CREATE INDEX history_instance ON history (saga, correlation_id, id)",
        """CREATE TABLE outbox (
            seq bigint GENERATED ALWAYS AS IDENTITY UNIQUE,
            id text PRIMARY KEY, destination text NOT NULL, key text,
            body bytea NOT NULL, headers jsonb NOT NULL,
            created_at double precision NOT NULL)""",
        """CREATE TABLE timers (
            saga text NOT NULL, correlation_id text NOT NULL, name text NOT NULL,
            due double precision NOT NULL, payload bytea NOT NULL,
            PRIMARY KEY (saga, correlation_id, name))""",
        "CREATE INDEX timers_due ON timers (due)",
        """CREATE TABLE parked (
            seq bigint GENERATED ALWAYS AS IDENTITY UNIQUE,
            saga text NOT NULL, message_id text NOT NULL, correlation_id text NOT NULL,
            destination text NOT NULL, body bytea NOT NULL,
            parked_at double precision NOT NULL, expires double precision NOT NULL,
            reason text NOT NULL,
            PRIMARY KEY (saga, message_id))""",
        "CREATE INDEX parked_instance ON parked (saga, correlation_id)",
        "CREATE INDEX parked_expires ON parked (expires)",
    ),
    2: (
        """CREATE TABLE outbox_failed (
            id text PRIMARY KEY, destination text NOT NULL, key text,
            body bytea NOT NULL, headers jsonb NOT NULL,
            created_at double precision NOT NULL,
            reason text NOT NULL, failed_at double precision NOT NULL)""",
        "CREATE INDEX outbox_failed_at ON outbox_failed (failed_at)",
    ),
    3: ("ALTER TABLE history ADD COLUMN note text NOT NULL DEFAULT ''",),
    4: (
        *(f"CREATE INDEX {name} ON instances {columns}" for name, columns in _LIST_INDEXES),
        "DROP INDEX instances_status",
        """CREATE TABLE deadletters (
            id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            message_id text NOT NULL, type text NOT NULL, saga text NOT NULL,
            correlation_id text NOT NULL, destination text NOT NULL, key text,
            body bytea NOT NULL, headers jsonb NOT NULL, kind text NOT NULL,
            reason text NOT NULL, at double precision NOT NULL,
            redriven_at double precision, redriven_by text NOT NULL DEFAULT '')""",
        "CREATE INDEX deadletters_at ON deadletters (at)",
    ),
    5: (
        """CREATE TABLE members (
            grp text NOT NULL, member text NOT NULL, expires_at double precision NOT NULL,
            PRIMARY KEY (grp, member))""",
        """CREATE TABLE leases (
            grp text NOT NULL, unit text NOT NULL, owner text NOT NULL,
            expires_at double precision NOT NULL,
            PRIMARY KEY (grp, unit))""",
    ),
}


def check_version(found: int, where: str) -> None:
    """Refuse a database whose schema is newer than this build understands."""
    if found > SCHEMA_VERSION:
        raise SchemaVersionError(
            f"{where} has sagawire schema version {found}, but this build supports "
            f"up to version {SCHEMA_VERSION}; upgrade sagawire (or point it at "
            "another database) instead of downgrading the data"
        )


def pending_migrations(found: int, migrations: dict[int, tuple[str, ...]]) -> list[str]:
    """The statements that take a database from ``found`` to :data:`SCHEMA_VERSION`
    (and no further: a test writes a database as the previous version would by
    lowering :data:`SCHEMA_VERSION`)."""
    return [sql for v in sorted(migrations) if found < v <= SCHEMA_VERSION for sql in migrations[v]]


def encode_headers(headers: Sequence[tuple[str, str]]) -> str:
    """Headers as a JSON array of pairs: order and repeated names survive."""
    return orjson.dumps([list(h) for h in headers]).decode()


def decode_headers(text: str) -> tuple[tuple[str, str], ...]:
    return tuple((str(k), str(v)) for k, v in orjson.loads(text))


def encode_commands(commands: Sequence[str]) -> str:
    return orjson.dumps(list(commands)).decode()


def decode_commands(text: str) -> tuple[str, ...]:
    return tuple(str(c) for c in orjson.loads(text))


# Column lists in record-field order, so a fetched row maps straight onto a record.
INSTANCE_COLUMNS = (
    "saga, correlation_id, state, status, version, data, meta, created_at, updated_at"
)
HISTORY_COLUMNS = (
    "saga, correlation_id, seq, message_id, message_type, from_state, to_state, commands, at, note"
)
OUTBOX_COLUMNS = "id, destination, key, body, headers, created_at"
FAILED_COLUMNS = f"{OUTBOX_COLUMNS}, reason, failed_at"
TIMER_COLUMNS = "saga, correlation_id, name, due, payload"
PARKED_COLUMNS = "saga, correlation_id, message_id, destination, body, parked_at, expires, reason"

Row = Sequence[Any]


def upsert_clause(columns: str, key: Sequence[str]) -> str:
    """``ON CONFLICT (key) DO UPDATE SET`` each of ``columns`` outside ``key`` to the new
    row's value: the same text in SQLite and PostgreSQL, derived from the column list so
    a column added to a table cannot be left out of its upsert."""
    keys = set(key)
    sets = ", ".join(
        f"{c} = excluded.{c}" for c in (n.strip() for n in columns.split(",")) if c not in keys
    )
    return f"ON CONFLICT ({', '.join(key)}) DO UPDATE SET {sets}"


def instance_from_row(r: Row) -> InstanceRecord:
    return InstanceRecord(
        r[0], r[1], r[2], r[3], int(r[4]), bytes(r[5]), bytes(r[6]), float(r[7]), float(r[8])
    )


def history_from_row(r: Row) -> HistoryRecord:
    return HistoryRecord(
        r[0], r[1], int(r[2]), r[3], r[4], r[5], r[6], decode_commands(r[7]), float(r[8]), r[9]
    )


def outbox_from_row(r: Row) -> OutboxRecord:
    return OutboxRecord(r[0], r[1], r[2], bytes(r[3]), decode_headers(r[4]), float(r[5]))


def first_reasons(failures: Sequence[tuple[str, str]]) -> dict[str, str]:
    """``mark_failed``'s ``(id, reason)`` pairs, one per id: the first reason given, as
    ``MemoryStore.mark_failed`` keeps it."""
    out: dict[str, str] = {}
    for mid, reason in failures:
        out.setdefault(mid, reason)
    return out


def failed_from_row(r: Row) -> FailedOutboxRecord:
    """A row of :data:`FAILED_COLUMNS`."""
    return FailedOutboxRecord(outbox_from_row(r), r[6], float(r[7]))


def timer_from_row(r: Row) -> TimerRecord:
    return TimerRecord(r[0], r[1], r[2], float(r[3]), bytes(r[4]))


def parked_from_row(r: Row) -> ParkedRecord:
    return ParkedRecord(r[0], r[1], r[2], r[3], bytes(r[4]), float(r[5]), float(r[6]), r[7])


def instance_params(i: InstanceRecord) -> tuple[Any, ...]:
    return (
        i.saga,
        i.correlation_id,
        i.state,
        i.status,
        i.version,
        i.data,
        i.meta,
        i.created_at,
        i.updated_at,
    )


def history_params(h: HistoryRecord) -> tuple[Any, ...]:
    return (
        h.saga,
        h.correlation_id,
        h.seq,
        h.message_id,
        h.message_type,
        h.from_state,
        h.to_state,
        encode_commands(h.commands),
        h.at,
        h.note,
    )


def outbox_params(o: OutboxRecord) -> tuple[Any, ...]:
    return (o.id, o.destination, o.key, o.body, encode_headers(o.headers), o.created_at)


def timer_params(t: TimerRecord) -> tuple[Any, ...]:
    return (t.saga, t.correlation_id, t.name, t.due, t.payload)


def parked_params(p: ParkedRecord) -> tuple[Any, ...]:
    return (
        p.saga,
        p.correlation_id,
        p.message_id,
        p.destination,
        p.body,
        p.parked_at,
        p.expires,
        p.reason,
    )
