"""The listing's filters, from a request into a store query: times, cursors, stuck.

``GET /sagas`` and the bulk actions share them, so a ``dry_run`` counts exactly the
instances the listing shows. A cursor is the last row's ``(updated_at, saga,
correlation_id)``, base64url JSON: opaque to clients, and a tampered one is a 400, not
a 500.
"""

from __future__ import annotations

import base64
import binascii
import math
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import orjson

from orchestrator.language.definition import SagaDefinition
from orchestrator.language.status import Status
from orchestrator.store.base import Cursor, InstanceQuery, InstanceRecord, StuckRule

__all__ = [
    "BadFilter",
    "decode_cursor",
    "encode_cursor",
    "instance_query",
    "is_stuck",
    "parse_time",
]

STATUSES = tuple(s.value for s in Status)


class BadFilter(ValueError):
    """A filter the API cannot take (400, with this text)."""


def parse_time(name: str, value: Any) -> float | None:
    """ISO 8601 (a naive time is UTC) or UNIX seconds -> UNIX seconds."""
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
        if not math.isfinite(seconds):
            raise BadFilter(f"{name} must be a finite time")
        return seconds
    else:
        text = str(value).strip()
        try:
            return float(text) if text.replace(".", "", 1).isdigit() else _iso(text)
        except ValueError:
            raise BadFilter(
                f"{name} {text[:64]!r} is not an ISO 8601 time (2026-12-07T10:00:00Z) nor"
                " UNIX seconds"
            ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def _iso(text: str) -> float:
    moment = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def encode_cursor(row: InstanceRecord) -> str:
    raw = orjson.dumps([row.updated_at, row.saga, row.correlation_id])
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(text: str) -> Cursor:
    bad = BadFilter("cursor is not one this API gave: start again without it")
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        value = orjson.loads(raw)
    except (binascii.Error, orjson.JSONDecodeError, ValueError):
        raise bad from None
    match value:
        case [int() | float() as at, str() as saga, str() as cid] if not isinstance(at, bool):
            return (float(at), saga, cid)
    raise bad


def is_stuck(rule: StuckRule, row: InstanceRecord) -> bool:
    if row.status != Status.RUNNING.value:
        return False
    for saga, state, cutoff in rule.cutoffs:
        if row.saga == saga and row.state == state:
            return row.updated_at < cutoff
    return rule.default is not None and row.updated_at < rule.default


def instance_query(
    sagas: Sequence[SagaDefinition],
    rule: StuckRule,
    *,
    saga: str | None = None,
    status: str | None = None,
    state: str | None = None,
    correlation_id: str | None = None,
    stuck: bool | None = None,
    updated_before: Any = None,
    updated_after: Any = None,
    limit: int = 100,
    cursor: str | None = None,
) -> InstanceQuery:
    """The store query for these filters; :class:`BadFilter` names a bad one."""
    names = [s.name for s in sagas]
    if saga is not None and saga not in names:
        raise BadFilter(f"no saga named {saga!r}; loaded: {', '.join(names)}")
    if status is not None and status not in STATUSES:
        raise BadFilter(f"status {status!r} is not one of: {', '.join(STATUSES)}")
    if state is not None and saga is None:
        raise BadFilter("state= needs saga=: state names belong to a saga")
    return InstanceQuery(
        saga=saga,
        status=status,
        state=state,
        correlation_id=correlation_id,
        updated_before=parse_time("updated_before", updated_before),
        updated_after=parse_time("updated_after", updated_after),
        stuck=rule if stuck else None,
        after=decode_cursor(cursor) if cursor else None,
        limit=limit,
    )
