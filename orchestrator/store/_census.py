"""What :meth:`Store.census` reads, for SQLite and PostgreSQL, and the stuck test the
memory store applies to the same rows.

Three statements, each served by an index, because a census must not scan every row:
on SQLite the store's one connection serves commits too, and a scan of the instances'
rows (their state and meta included) costs about a microsecond a row, ten seconds for
ten million instances, while a covering index is read ten times faster. So:

- running instances by ``(saga, state)``, with how many are stuck: the ``status``
  index finds them (they are the instances in flight, few beside the finished ones);
- finished instances by ``(saga, status)``, counted off the ``(saga, status,
  updated_at)`` index alone: their state is not read (it is their final state, which
  says little more than their status), so it is ``""`` in the census;
- one row of the other tables' totals.

Stuck is the :class:`~orchestrator.store.base.StuckRule` the operator's listing uses
(``GET /sagas?stuck=true``), so the gauge and the listing count the same instances: a
running instance is stuck when updated before its ``(saga, state)``'s cut-off, the
first that names it, else the rule's default. Within a group the cut-off is one value,
so it is a ``CASE`` over the rule's cut-offs beside the ``count(*)``, not a query per
cut-off. The sidecar caches a census for ``counts_ttl`` seconds.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Literal

from orchestrator.store.base import Census, StuckRule

__all__ = ["FINISHED", "census_from_rows", "cutoff", "running_sql", "totals_sql"]

Dialect = Literal["sqlite", "postgres"]


def cutoff(rule: StuckRule, saga: str, state: str) -> float | None:
    """The ``updated_at`` before which a running instance of ``saga`` in ``state`` is
    stuck (None: never)."""
    for s, st, at in rule.cutoffs:
        if s == saga and st == state:
            return at
    return rule.default


def running_sql(rule: StuckRule | None, dialect: Dialect) -> tuple[str, list[Any]]:
    """``saga, state, instances, stuck`` of the running instances, and the arguments."""
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
        stuck = f"sum(CASE WHEN updated_at < {limit} THEN 1 ELSE 0 END)"
    sql = (
        f"SELECT saga, state, count(*), {stuck} FROM instances WHERE status = 'running'"
        " GROUP BY saga, state"
    )
    return sql, args


FINISHED = (
    "SELECT saga, status, count(*) FROM instances WHERE status <> 'running' GROUP BY saga, status"
)
"""``saga, status, instances`` of the finished instances (an index-only scan)."""


def totals_sql(dialect: Dialect) -> str:
    """One row: outbox rows and the oldest's ``created_at``, timers and those due at
    the argument, parked messages."""
    now = "?1" if dialect == "sqlite" else "$1::float8"
    return (
        "SELECT (SELECT count(*) FROM outbox), (SELECT min(created_at) FROM outbox),"
        f" (SELECT count(*) FROM timers), (SELECT count(*) FROM timers WHERE due <= {now}),"
        " (SELECT count(*) FROM parked)"
    )


def census_from_rows(
    running: Iterable[Sequence[Any]], finished: Iterable[Sequence[Any]], totals: Sequence[Any]
) -> Census:
    """The census from the rows of :func:`running_sql`, :data:`FINISHED` and
    :func:`totals_sql`."""
    instances: dict[tuple[str, str, str], int] = {}
    stuck: dict[tuple[str, str], int] = {}
    for saga, state, n, late in running:
        instances[(saga, state, "running")] = int(n)
        stuck[(saga, state)] = int(late or 0)
    for saga, status, n in finished:
        instances[(saga, "", status)] = int(n)
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
