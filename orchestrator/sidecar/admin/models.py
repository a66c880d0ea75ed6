"""What the admin API answers and takes, as pydantic models: the OpenAPI document is
generated from them, and the routes build them from store records
(:mod:`~orchestrator.sidecar.admin.views`). Times are ISO 8601 in UTC."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

__all__ = [
    "ERRORS",
    "ActionRequest",
    "ActionResponse",
    "BulkJob",
    "BulkRequest",
    "DeadLetterOut",
    "DeadLetterPage",
    "DefinitionOut",
    "Error",
    "HistoryEntry",
    "InstanceDetail",
    "InstancePage",
    "InstanceSummary",
    "OutboxRow",
    "ParkedRow",
    "RedriveResponse",
    "TimerRow",
]


class Error(BaseModel):
    """Every error answer: what is wrong, in words an operator can act on."""

    error: str
    detail: list[dict[str, Any]] | None = None


ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": Error} for code in (400, 401, 403, 404, 409, 503)
}
"""The error answers every admin router declares, for the OpenAPI document."""


class InstanceSummary(BaseModel):
    saga: str
    correlation_id: str
    state: str
    status: str
    version: int
    created_at: datetime
    updated_at: datetime
    stuck: bool = Field(description="Running past its state's SLO (or the default one).")
    failure: str | None = None


class InstancePage(BaseModel):
    instances: list[InstanceSummary]
    next_cursor: str | None = Field(
        description="Pass as ?cursor= for the next page; null on the last one."
    )


class HistoryEntry(BaseModel):
    seq: int
    kind: Literal["event", "timer", "operator", "deviation"]
    message_id: str
    message_type: str
    from_state: str
    to_state: str
    commands: list[str]
    at: datetime
    note: str


class TimerRow(BaseModel):
    name: str
    due: datetime


class OutboxRow(BaseModel):
    id: str
    destination: str
    bytes: int
    created_at: datetime


class ParkedRow(BaseModel):
    message_id: str
    destination: str
    parked_at: datetime
    expires: datetime
    reason: str


class InstanceDetail(InstanceSummary):
    definition_version: str = Field(description="A digest of the loaded saga's definition.")
    data: dict[str, Any]
    steps: dict[str, str]
    history: list[HistoryEntry]
    timers: list[TimerRow]
    outbox: list[OutboxRow] = Field(description="Commands committed but not yet published.")
    parked: list[ParkedRow]
    diagram: str = Field(
        description="The saga's Mermaid diagram with this instance's path and place marked."
    )


class ActionRequest(BaseModel):
    reason: str = Field("", max_length=2000, description="Recorded in the history.")


class ActionResponse(BaseModel):
    saga: str
    correlation_id: str
    state: str
    status: str
    version: int


class BulkRequest(BaseModel):
    """The filters of ``GET /sagas`` and the action's reason."""

    reason: str = Field("", max_length=2000)
    saga: str | None = None
    status: str | None = None
    state: str | None = None
    correlation_id: str | None = None
    stuck: bool | None = None
    updated_before: datetime | float | None = None
    updated_after: datetime | float | None = None
    compensate: bool = True
    limit: int | None = Field(None, ge=1, description="At most this many instances.")
    type: str | None = Field(None, description="redrive: the dead letters' event type.")
    kind: str | None = Field(None, description="redrive: the kind of reason.")
    since: datetime | float | None = Field(None, description="redrive: dead-lettered since.")
    reason_contains: str | None = Field(None, description="redrive: a part of the reason.")


class BulkJob(BaseModel):
    id: str
    action: str
    state: Literal["dry_run", "running", "done", "cancelled", "failed"]
    by: str
    reason: str
    filters: dict[str, Any]
    matched: int | None = Field(description="Instances the filters matched when counted.")
    done: int
    refused: int
    errors: list[str]
    started_at: datetime
    finished_at: datetime | None = None


class DeadLetterOut(BaseModel):
    id: int
    message_id: str
    type: str
    saga: str
    correlation_id: str
    destination: str
    kind: str
    reason: str
    at: datetime
    bytes: int
    body: str = Field(description="The original bytes, as UTF-8 (invalid bytes replaced).")
    headers: dict[str, str]
    redriven_at: datetime | None = None
    redriven_by: str = ""


class DeadLetterPage(BaseModel):
    dead_letters: list[DeadLetterOut]
    next_cursor: str | None


class RedriveResponse(BaseModel):
    id: int
    destination: str
    message_id: str
    redriven_by: str


class DefinitionOut(BaseModel):
    name: str
    kind: str
    version: str
    states: list[str]
    final: dict[str, str]
    initial_events: list[str]
    consumes: list[str]
    produces: list[str]
    transitions: list[dict[str, Any]]
    steps: list[dict[str, Any]]
    slo: dict[str, float]
    mermaid: str
