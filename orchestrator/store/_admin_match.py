"""The operator's filters as Python predicates: the memory store's :meth:`find` and
:meth:`dead_letters`, meaning exactly what the SQL of :mod:`._admin_sql` means (the
store tests run the same queries on all three stores)."""

from __future__ import annotations

from orchestrator.store.base import (
    DeadLetterQuery,
    DeadLetterRecord,
    InstanceQuery,
    InstanceRecord,
    StuckRule,
)

__all__ = ["dead_letter_matches", "instance_matches", "instance_order"]


def instance_order(r: InstanceRecord) -> tuple[float, str, str]:
    """The listing's sort key (used descending) and its cursor."""
    return (r.updated_at, r.saga, r.correlation_id)


def instance_matches(q: InstanceQuery, r: InstanceRecord) -> bool:
    status = "running" if q.stuck is not None else q.status
    if q.stuck is not None and q.status not in (None, "running"):
        return False
    return (
        (q.saga is None or r.saga == q.saga)
        and (q.correlation_id is None or r.correlation_id == q.correlation_id)
        and (status is None or r.status == status)
        and (q.state is None or r.state == q.state)
        and (q.updated_before is None or r.updated_at < q.updated_before)
        and (q.updated_after is None or r.updated_at > q.updated_after)
        and (q.stuck is None or _stuck(q.stuck, r))
        and (q.after is None or instance_order(r) < q.after)
    )


def _stuck(rule: StuckRule, r: InstanceRecord) -> bool:
    for saga, state, cutoff in rule.cutoffs:
        if r.saga == saga and r.state == state:
            return r.updated_at < cutoff
    return rule.default is not None and r.updated_at < rule.default


def dead_letter_matches(q: DeadLetterQuery, d: DeadLetterRecord) -> bool:
    redriven = d.redriven_at is not None
    return (
        (q.type is None or d.type == q.type)
        and (q.saga is None or d.saga == q.saga)
        and (q.kind is None or d.kind == q.kind)
        and (q.reason is None or q.reason in d.reason)
        and (q.since is None or d.at >= q.since)
        and (q.redriven is None or redriven == q.redriven)
        and (q.before_id is None or d.id < q.before_id)
    )
