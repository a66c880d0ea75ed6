"""The SQL of the operator's reads, one text for SQLite and PostgreSQL.

The listing filters are optional and combine, so the statement is built from the query
rather than kept as one text with ``(? IS NULL OR ...)`` arms: those defeat every
index (the planner cannot know which arm holds), and on a store of ten million
instances that is the difference between a millisecond and a full scan. Each filter
adds one condition the indexes of schema version 4 serve
(:data:`orchestrator.store._schema._LIST_INDEXES` says which).

Placeholders are numbered (``?n`` and ``$n``: a cursor's value is named twice), and
text order differs: SQLite compares
``TEXT`` bytewise, PostgreSQL by the database's collation, so PostgreSQL's
comparisons and ORDER BY say ``COLLATE "C"``. Both then order like the memory store
(by code point), and a cursor means the same row on every store.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from orchestrator.store import _schema as s
from orchestrator.store.base import DeadLetterQuery, DeadLetterRecord, InstanceQuery, StuckRule

__all__ = [
    "DEADLETTER_COLUMNS",
    "DEVIATION_WINDOW",
    "INSERT_COLUMNS",
    "Dialect",
    "dead_letter_from_row",
    "dead_letter_params",
    "dead_letters_sql",
    "find_sql",
    "recent_deviations_sql",
]

Dialect = Literal["sqlite", "postgres"]

DEADLETTER_COLUMNS = (
    "id, message_id, type, saga, correlation_id, destination, key, body, headers, kind,"
    " reason, at, redriven_at, redriven_by"
)


class _Args:
    """The statement's arguments, handing out each dialect's placeholder."""

    def __init__(self, dialect: Dialect) -> None:
        self.dialect = dialect
        self.values: list[Any] = []

    def __call__(self, value: Any) -> str:
        self.values.append(value)
        return f"?{len(self.values)}" if self.dialect == "sqlite" else f"${len(self.values)}"

    def text(self, column: str) -> str:
        """``column`` as compared and ordered: by code point on both stores."""
        return column if self.dialect == "sqlite" else f'{column} COLLATE "C"'


def find_sql(query: InstanceQuery, dialect: Dialect) -> tuple[str, list[Any]]:
    """``SELECT`` of one page of instances for :meth:`Store.find`, and its arguments."""
    a = _Args(dialect)
    where: list[str] = []
    if query.saga is not None:
        where.append(f"saga = {a(query.saga)}")
    if query.correlation_id is not None:
        where.append(f"correlation_id = {a(query.correlation_id)}")
    status = "running" if query.stuck is not None else query.status
    if query.stuck is not None and query.status not in (None, "running"):
        where.append("1 = 0")  # only running instances can be stuck
    if status is not None:
        where.append(f"status = {a(status)}")
    if query.state is not None:
        where.append(f"state = {a(query.state)}")
    if query.updated_before is not None:
        where.append(f"updated_at < {a(query.updated_before)}")
    if query.updated_after is not None:
        where.append(f"updated_at > {a(query.updated_after)}")
    if query.stuck is not None:
        where.append(_stuck(query.stuck, a))
    if query.after is not None:
        at, saga, cid = query.after
        u = a(at)
        saga_p, cid_p = a(saga), a(cid)
        sg, ci = a.text("saga"), a.text("correlation_id")
        where.append(
            f"updated_at <= {u} AND (updated_at < {u} OR {sg} < {saga_p}"
            f" OR ({sg} = {saga_p} AND {ci} < {cid_p}))"
        )
    sql = f"SELECT {s.INSTANCE_COLUMNS} FROM instances"
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += (
        f" ORDER BY updated_at DESC, {a.text('saga')} DESC, {a.text('correlation_id')} DESC"
        f" LIMIT {a(query.limit)}"
    )
    return sql, a.values


def _stuck(rule: StuckRule, a: _Args) -> str:
    """Running instances past their state's cut-off (or the default one).

    The arms are preceded by the latest of the cut-offs as a bound of its own: the
    planner cannot read one out of an ``OR``, and without it the walk down the running
    instances, newest first, starts at the newest running instance and steps over every
    one not yet stuck (most of the running ones) before the first row of the page."""
    cutoffs = [c for _, _, c in rule.cutoffs] + ([] if rule.default is None else [rule.default])
    if not cutoffs:
        return "1 = 0"
    arms = [
        f"(saga = {a(saga)} AND state = {a(state)} AND updated_at < {a(cutoff)})"
        for saga, state, cutoff in rule.cutoffs
    ]
    if rule.default is not None:
        listed = [f"(saga = {a(saga)} AND state = {a(state)})" for saga, state, _ in rule.cutoffs]
        others = f"NOT ({' OR '.join(listed)})" if listed else "1 = 1"
        arms.append(f"({others} AND updated_at < {a(rule.default)})")
    return f"updated_at < {a(max(cutoffs))} AND (" + " OR ".join(arms) + ")"


DEVIATION_WINDOW = 100_000
"""How far back ``recent_deviations`` looks, in history rows: the latest entries are
read backwards by id until enough deviations are found, and where deviations are rare
that would be the whole history at every look (the console polls the overview)."""


def recent_deviations_sql(limit: int, dialect: Dialect) -> tuple[str, list[Any]]:
    """The latest history entries that record a deviation, among the last
    :data:`DEVIATION_WINDOW` entries, newest first."""
    a = _Args(dialect)
    window = a(DEVIATION_WINDOW)
    sql = (
        f"SELECT {s.HISTORY_COLUMNS} FROM history"
        f" WHERE id > (SELECT coalesce(max(id), 0) FROM history) - {window}"
        f" AND note LIKE 'deviation %' ORDER BY id DESC LIMIT {a(limit)}"
    )
    return sql, a.values


def dead_letters_sql(query: DeadLetterQuery, dialect: Dialect) -> tuple[str, list[Any]]:
    """``SELECT`` of kept dead letters for :meth:`Store.dead_letters`, newest first."""
    a = _Args(dialect)
    where: list[str] = []
    for column, value in (("type", query.type), ("saga", query.saga), ("kind", query.kind)):
        if value is not None:
            where.append(f"{column} = {a(value)}")
    if query.reason is not None:  # a part of the text, case and all, on every store
        where.append(
            f"{'instr' if dialect == 'sqlite' else 'strpos'}(reason, {a(query.reason)}) > 0"
        )
    if query.since is not None:
        where.append(f"at >= {a(query.since)}")
    if query.redriven is True:
        where.append("redriven_at IS NOT NULL")
    elif query.redriven is False:
        where.append("redriven_at IS NULL")
    if query.before_id is not None:
        where.append(f"id < {a(query.before_id)}")
    sql = f"SELECT {DEADLETTER_COLUMNS} FROM deadletters"
    if where:
        sql += " WHERE " + " AND ".join(where)
    return sql + f" ORDER BY id DESC LIMIT {a(query.limit)}", a.values


def dead_letter_params(d: DeadLetterRecord) -> tuple[Any, ...]:
    """The columns of :data:`DEADLETTER_COLUMNS` after ``id``, up to ``at``."""
    return (
        d.message_id,
        d.type,
        d.saga,
        d.correlation_id,
        d.destination,
        d.key,
        d.body,
        s.encode_headers(d.headers),
        d.kind,
        d.reason,
        d.at,
    )


INSERT_COLUMNS = (
    "message_id, type, saga, correlation_id, destination, key, body, headers, kind, reason, at"
)


def dead_letter_from_row(r: Sequence[Any]) -> DeadLetterRecord:
    return DeadLetterRecord(
        id=int(r[0]),
        message_id=r[1],
        type=r[2],
        saga=r[3],
        correlation_id=r[4],
        destination=r[5],
        key=r[6],
        body=bytes(r[7]),
        headers=s.decode_headers(r[8]),
        kind=r[9],
        reason=r[10],
        at=float(r[11]),
        redriven_at=None if r[12] is None else float(r[12]),
        redriven_by=r[13],
    )
