"""Dead letters: list what the engine dead-lettered, and redrive it once fixed.

The engine keeps every dead letter in the store as well as publishing it to
``sagawire.deadletter`` (:mod:`orchestrator.engine.deadletters`), for
``deadletter_retention``. A redrive re-publishes the original bytes and headers to the
original destination, once: the store records who redrove it and when, in the same
transaction that deletes the inbox marks the first handling left (so the copy is
handled, not skipped as a duplicate). If the broker does not take the copy, the record
is taken back and the answer is 503: try again.
"""

from typing import Annotated

from fastapi import APIRouter, Depends, Query

from orchestrator.sidecar.admin.context import Admin, ApiError
from orchestrator.sidecar.admin.filters import BadFilter, parse_time
from orchestrator.sidecar.admin.models import (
    ERRORS,
    DeadLetterPage,
    RedriveResponse,
)
from orchestrator.sidecar.admin.views import dead_letter_view, iso
from orchestrator.store.base import DeadLetterQuery, DeadLetterRecord

__all__ = ["dead_letter_routes", "redrive"]


async def redrive(admin: Admin, record: DeadLetterRecord, who: str) -> RedriveResponse:
    """Re-publish ``record``'s original bytes to its original destination, once: the
    record's mark and the copy's outbox row commit together, and the relay publishes
    it (a crash between the two cannot leave a redrive recorded and never sent)."""
    if record.redriven_at is not None:
        raise ApiError(
            409,
            f"dead letter {record.id} was redriven at {iso(record.redriven_at).isoformat()}"
            f" by {record.redriven_by}",
        )
    engine = admin.engine()
    if not await engine.operator.redrive(record, who):
        raise ApiError(409, f"dead letter {record.id} was redriven meanwhile")
    return RedriveResponse(
        id=record.id, destination=record.destination, message_id=record.message_id, redriven_by=who
    )


def dead_letter_routes(admin: Admin) -> APIRouter:
    router = APIRouter(tags=["dead letters"], responses=ERRORS)
    reader, writer = Depends(admin.reader), Depends(admin.writer)

    @router.get("/deadletters", response_model=DeadLetterPage, summary="List dead letters")
    async def list_dead_letters(
        who: Annotated[str, reader],
        type: str | None = None,
        saga: str | None = None,
        kind: str | None = None,
        reason: str | None = None,
        since: str | None = None,
        redriven: bool | None = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        cursor: Annotated[int | None, Query(ge=1)] = None,
    ) -> DeadLetterPage:
        """Dead letters newest first. ``kind``: decode, limit, envelope, payload, routing,
        rejected, expired, unloadable, unwritable, refused; ``reason``: a part of the
        reason's text; ``since``: ISO 8601 or UNIX seconds."""
        try:
            query = _query(type, saga, kind, reason, since, redriven, limit, cursor)
        except BadFilter as exc:
            raise ApiError(400, str(exc)) from None
        rows = await admin.store().dead_letters(query)
        return DeadLetterPage(
            dead_letters=[dead_letter_view(d) for d in rows],
            next_cursor=str(rows[-1].id) if len(rows) == limit else None,
        )

    @router.post(
        "/deadletters/{id}/redrive",
        response_model=RedriveResponse,
        summary="Redrive one dead letter",
    )
    async def redrive_one(who: Annotated[str, writer], id: int) -> RedriveResponse:
        """Re-publish the original bytes to the original destination, once."""
        record = await admin.store().dead_letter(id)
        if record is None:
            raise ApiError(404, f"no dead letter {id}")
        return await redrive(admin, record, who)

    return router


def _query(
    type: str | None,
    saga: str | None,
    kind: str | None,
    reason: str | None,
    since: str | None,
    redriven: bool | None,
    limit: int,
    cursor: int | None,
) -> DeadLetterQuery:
    return DeadLetterQuery(
        type=type,
        saga=saga,
        kind=kind,
        reason=reason,
        since=parse_time("since", since),
        redriven=redriven,
        before_id=cursor,
        limit=limit,
    )


def dead_letter_query(filters: dict[str, object], limit: int) -> DeadLetterQuery:
    """The bulk redrive's filters (as ``GET /deadletters``'s), not yet redriven."""
    return DeadLetterQuery(
        type=_text(filters.get("type")),
        saga=_text(filters.get("saga")),
        kind=_text(filters.get("kind")),
        reason=_text(filters.get("reason_contains")),
        since=parse_time("since", filters.get("since")),
        redriven=False,
        limit=limit,
    )


def _text(value: object) -> str | None:
    return None if value is None else str(value)
