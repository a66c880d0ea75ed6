"""Store records and definitions as the admin API shows them (:mod:`.models`).

One place turns UNIX seconds into ISO 8601, bytes into text and a definition into its
JSON, so every route shows an instance, a history entry or a dead letter the same way.
"""

from __future__ import annotations

import dataclasses
import hashlib
from datetime import UTC, datetime
from typing import Any, Literal

import orjson

from orchestrator.engine.model import Instance
from orchestrator.engine.operate import OPERATOR_EVENTS
from orchestrator.language.definition import (
    TIMER_PREFIX,
    CancelTimer,
    SagaDefinition,
    SetTimer,
    Transition,
)
from orchestrator.language.graph import marked_mermaid
from orchestrator.sidecar.admin.models import (
    DeadLetterOut,
    DefinitionOut,
    HistoryEntry,
    InstanceSummary,
    OutboxRow,
    ParkedRow,
    TimerRow,
)
from orchestrator.store.base import (
    DeadLetterRecord,
    HistoryRecord,
    InstanceRecord,
    OutboxRecord,
    ParkedRecord,
    TimerRecord,
)

__all__ = [
    "dead_letter_view",
    "definition_version",
    "definition_view",
    "history_view",
    "iso",
    "outbox_view",
    "parked_view",
    "summary",
    "timer_view",
]


def iso(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def summary(row: InstanceRecord, stuck: bool) -> InstanceSummary:
    meta = orjson.loads(row.meta) if row.meta else {}
    failure = meta.get("failure") if isinstance(meta, dict) else None
    return InstanceSummary(
        saga=row.saga,
        correlation_id=row.correlation_id,
        state=row.state,
        status=row.status,
        version=row.version,
        created_at=iso(row.created_at),
        updated_at=iso(row.updated_at),
        stuck=stuck,
        failure=failure,
    )


def instance_summary(inst: Instance, stuck: bool) -> InstanceSummary:
    return InstanceSummary(
        saga=inst.saga,
        correlation_id=inst.correlation_id,
        state=inst.state,
        status=inst.status.value,
        version=inst.version,
        created_at=iso(inst.created_at),
        updated_at=iso(inst.updated_at),
        stuck=stuck,
        failure=inst.meta.failure,
    )


def _kind(h: HistoryRecord) -> Literal["event", "timer", "operator", "deviation"]:
    if h.message_type in OPERATOR_EVENTS:
        return "operator"
    if h.note.startswith("deviation "):
        return "deviation"
    if h.message_type.startswith(TIMER_PREFIX):
        return "timer"
    return "event"


def history_view(h: HistoryRecord) -> HistoryEntry:
    return HistoryEntry(
        seq=h.seq,
        kind=_kind(h),
        message_id=h.message_id,
        message_type=h.message_type,
        from_state=h.from_state,
        to_state=h.to_state,
        commands=list(h.commands),
        at=iso(h.at),
        note=h.note,
    )


def timer_view(t: TimerRecord) -> TimerRow:
    return TimerRow(name=t.name, due=iso(t.due))


def outbox_view(o: OutboxRecord) -> OutboxRow:
    return OutboxRow(
        id=o.id, destination=o.destination, bytes=len(o.body), created_at=iso(o.created_at)
    )


def parked_view(p: ParkedRecord) -> ParkedRow:
    return ParkedRow(
        message_id=p.message_id,
        destination=p.destination,
        parked_at=iso(p.parked_at),
        expires=iso(p.expires),
        reason=p.reason,
    )


def dead_letter_view(d: DeadLetterRecord) -> DeadLetterOut:
    return DeadLetterOut(
        id=d.id,
        message_id=d.message_id,
        type=d.type,
        saga=d.saga,
        correlation_id=d.correlation_id,
        destination=d.destination,
        kind=d.kind,
        reason=d.reason,
        at=iso(d.at),
        bytes=len(d.body),
        body=d.body.decode("utf-8", "replace"),
        headers=dict(d.headers),
        redriven_at=None if d.redriven_at is None else iso(d.redriven_at),
        redriven_by=d.redriven_by,
    )


def definition_version(saga: SagaDefinition) -> str:
    """A digest of what the definition does (states, rows, events, steps): two sidecars
    showing the same version run the same saga. Computed when asked (tens of
    microseconds), not cached by ``id()``, which a later definition may reuse."""
    shape = orjson.dumps(_shape(saga), option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(shape).hexdigest()[:12]


def _shape(saga: SagaDefinition) -> dict[str, Any]:
    return {
        "name": saga.name,
        "kind": saga.kind,
        "states": list(saga.states),
        "final": {k: v.value for k, v in saga.final.items()},
        "events": sorted(saga.events),
        "rows": [_row(t) for rows in saga.transitions.values() for t in rows],
        "steps": [dataclasses.asdict(s) for s in saga.steps],
        "slo": dict(saga.slo),
    }


def _row(t: Transition) -> dict[str, Any]:
    return {
        "from": t.source,
        "on": t.event,
        "to": t.target,
        "guarded": t.guard is not None,
        "sends": list(t.sends),
        "timers": [
            {"set" if isinstance(a, SetTimer) else "cancel": a.name}
            for a in t.actions
            if isinstance(a, SetTimer | CancelTimer)
        ],
    }


_STEP_MARKS = {
    "done": "visited",
    "active": "current",
    "undoing": "current",
    "failed": "failed",
    "abandoned": "failed",
    "undo_failed": "failed",
    "undone": "undone",
}


def instance_diagram(
    saga: SagaDefinition, state: str, status: str, steps: dict[str, str], path: list[str]
) -> str:
    """The saga's diagram with the instance marked: a flow's steps by their status; a
    state machine's states it went through, and the one it is in (red when it ended in
    a failure an operator must see)."""
    if saga.flow is not None:
        return marked_mermaid(
            saga, {name: _STEP_MARKS.get(s, "visited") for name, s in steps.items()}
        )
    marks = dict.fromkeys(path, "visited")
    marks[state] = "failed" if status == "compensation_failed" else "current"
    return marked_mermaid(saga, marks)


def definition_view(saga: SagaDefinition) -> DefinitionOut:
    shape = _shape(saga)
    return DefinitionOut(
        name=saga.name,
        kind=saga.kind,
        version=definition_version(saga),
        states=shape["states"],
        final=shape["final"],
        initial_events=list(saga.start_events),
        consumes=list(saga.consumes()),
        produces=list(saga.produces()),
        transitions=shape["rows"],
        steps=shape["steps"],
        slo=shape["slo"],
        mermaid=saga.to_mermaid(),
    )
