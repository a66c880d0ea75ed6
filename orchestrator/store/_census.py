"""What :meth:`Store.census` reads, for SQLite and PostgreSQL, and the stuck test the
memory store applies to the same rows.

Two statements: the instances grouped by ``(saga, state, status)``, each group with
how many of its running instances are stuck, and one row of the other tables' totals.
Stuck is the :class:`~orchestrator.store.base.StuckRule` the operator's listing uses
(``GET /sagas?stuck=true``), so the gauge and the listing count the same instances: a
running instance is stuck when updated before its ``(saga, state)``'s cut-off, the
first that names it, else the rule's default. Within a group the cut-off is one value,
so it is a ``CASE`` over the rule's cut-offs beside the ``count(*)``: the scan the
counts need anyway, no query per cut-off.

A census scans ``instances``: the sidecar caches it for ``counts_ttl`` seconds.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Literal

from orchestrator.store.base import Census, StuckRule

__all__ = ["census_from_rows", "cutoff", "instances_sql", "totals_sql"]

Dialect = Literal["sqlite", "postgres"]


def cutoff(rule: StuckRule, saga: str, state: str) -> float | None:
    """The ``updated_at`` before which a running instance of ``saga`` in ``state`` is
    stuck (None: never)."""
    for s, st, at in rule.cutoffs:
        if s == saga and st == state:
            return at
    return rule.default


def instances_sql(rule: StuckRule | None, dialect: Dialect) -> tuple[str, list[Any]]:
    """``saga, state, status, instances, stuck`` per group, and the arguments."""
    args: list[Any] = []

    def arg(value: Any, pg_type: str) -> str:
        args.append(value)
        return f"?{len(args)}" if dialect == "sqlite" else f"${len(args)}::{pg_type}"

    stuck = "0"
    if rule is not None and (rule.cutoffs or rule.default is not None):
        arms = " ".join(
            f"WHEN saga = {arg(saga, 'text')} AND state = {arg(state, 'text')}"
            f" THEN {arg(at, 'float8')}"
            for saga, state, at in rule.cutoffs
        )
        default = "NULL" if rule.default is None else arg(rule.default, "float8")
        limit = f"CASE {arms} ELSE {default} END" if arms else default
        stuck = f"sum(CASE WHEN status = 'running' AND updated_at < {limit} THEN 1 ELSE 0 END)"
    sql = (
        f"SELECT saga, state, status, count(*), {stuck} FROM instances GROUP BY saga, state, status"
    )
    return sql, args


def totals_sql(dialect: Dialect) -> str:
    """One row: outbox rows and the oldest's ``created_at``, timers and those due at
    the argument, parked messages."""
    now = "?1" if dialect == "sqlite" else "$1::float8"
    return (
        "SELECT (SELECT count(*) FROM outbox), (SELECT min(created_at) FROM outbox),"
        f" (SELECT count(*) FROM timers), (SELECT count(*) FROM timers WHERE due <= {now}),"
        " (SELECT count(*) FROM parked)"
    )


def census_from_rows(groups: Iterable[Sequence[Any]], totals: Sequence[Any]) -> Census:
    """The census from :func:`instances_sql`'s rows and :func:`totals_sql`'s row."""
    instances: dict[tuple[str, str, str], int] = {}
    stuck: dict[tuple[str, str], int] = {}
    for saga, state, status, n, late in groups:
        instances[(saga, state, status)] = int(n)
        if status == "running":
            stuck[(saga, state)] = int(late or 0)
    outbox, oldest, timers, due, parked = totals
    return Census(
        instances=instances,
        outbox_backlog=int(outbox),
        outbox_oldest=None if oldest is None else float(oldest),
        timers_pending=int(timers),
        timers_due=int(due),
        parked=int(parked),
        stuck=stuck,
    )
