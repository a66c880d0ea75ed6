"""Instances: list and filter them, look at one whole, and act on it.

``GET /sagas`` pages newest first by a cursor (:mod:`.filters`); ``GET /sagas/{saga}/
{correlation_id}`` shows the state, the history (events in, commands out, timers,
deviations, operator actions), pending timers, unsent outbox rows and parked messages;
``POST .../abort|retry|resume`` asks the engine's :class:`~orchestrator.engine.operator.
Operator`, which records who and why in the history, and answers 409 with the reason
when the instance's status does not allow the action.
"""

from typing import Annotated

from fastapi import APIRouter, Body, Depends, Query

from orchestrator.sidecar.admin.context import Admin, ApiError
from orchestrator.sidecar.admin.filters import (
    BadFilter,
    encode_cursor,
    instance_query,
    is_stuck,
)
from orchestrator.sidecar.admin.models import (
    ERRORS,
    ActionRequest,
    ActionResponse,
    InstanceDetail,
    InstancePage,
)
from orchestrator.sidecar.admin.views import (
    definition_version,
    history_view,
    instance_diagram,
    outbox_view,
    parked_view,
    summary,
    timer_view,
)
from orchestrator.store.base import InstanceRecord

__all__ = ["instance_routes"]


def instance_routes(admin: Admin) -> APIRouter:
    router = APIRouter(tags=["instances"], responses=ERRORS)
    reader, writer = Depends(admin.reader), Depends(admin.writer)

    @router.get("/sagas", response_model=InstancePage, summary="List instances")
    async def list_instances(
        who: Annotated[str, reader],
        saga: str | None = None,
        status: str | None = None,
        state: str | None = None,
        correlation_id: str | None = None,
        stuck: bool = False,
        updated_before: str | None = None,
        updated_after: str | None = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        cursor: str | None = None,
    ) -> InstancePage:
        """Instances newest first (by last update), filtered, a page at a time: pass
        ``next_cursor`` back as ``cursor``. Times: ISO 8601 or UNIX seconds. ``stuck``:
        running past their state's SLO."""
        rule = admin.stuck_rule()
        try:
            query = instance_query(
                admin.sidecar.sagas, rule, saga=saga, status=status, state=state,
                correlation_id=correlation_id, stuck=stuck, updated_before=updated_before,
                updated_after=updated_after, limit=limit, cursor=cursor,
            )  # fmt: skip
        except BadFilter as exc:
            raise ApiError(400, str(exc)) from None
        rows = await admin.store().find(query)
        next_cursor = encode_cursor(rows[-1]) if len(rows) == limit else None
        return InstancePage(
            instances=[summary(r, is_stuck(rule, r)) for r in rows], next_cursor=next_cursor
        )

    async def _record(saga: str, cid: str) -> InstanceRecord:
        admin.saga(saga)
        rows = await admin.store().load([(saga, cid)])
        row = rows.get((saga, cid))
        if row is None:
            raise ApiError(404, f"no instance {cid!r} of saga {saga!r}")
        return row

    @router.get(
        "/sagas/{saga}/{correlation_id:path}",
        response_model=InstanceDetail,
        summary="One instance, whole",
    )
    async def get_instance(
        who: Annotated[str, reader], saga: str, correlation_id: str
    ) -> InstanceDetail:
        definition = admin.saga(saga)
        row = await _record(saga, correlation_id)
        store = admin.store()
        engine = admin.sidecar.engine
        if engine is None:
            raise ApiError(503, f"not ready ({admin.sidecar.phase})")
        inst = await engine.operator.instance(saga, correlation_id)  # ValidationError: 409
        if inst is None:  # gone since it was read (pruned, or another replica's test data)
            raise ApiError(404, f"no instance {correlation_id!r} of saga {saga!r}")
        history = await store.history((saga, correlation_id))
        sent = [c.partition(":")[2] for h in history for c in h.commands]
        outbox = await engine.operator.unsent(sent)
        timers = await store.timers_of((saga, correlation_id))
        parked = await store.parked([(saga, correlation_id)])
        base = summary(row, is_stuck(admin.stuck_rule(), row))
        return InstanceDetail(
            **base.model_dump(),
            definition_version=definition_version(definition),
            data=inst.data.model_dump(mode="json"),
            steps=dict(inst.meta.steps),
            history=[history_view(h) for h in history],
            timers=[timer_view(t) for t in timers],
            outbox=[outbox_view(o) for o in outbox],
            parked=[parked_view(p) for p in parked],
            diagram=instance_diagram(
                definition, inst.state, inst.status.value, dict(inst.meta.steps),
                [h.from_state for h in history] + [h.to_state for h in history],
            ),
        )  # fmt: skip

    async def _act(
        saga: str, cid: str, action: str, who: str, reason: str, compensate: bool = True
    ) -> ActionResponse:
        admin.saga(saga)
        engine = admin.engine()
        result = await engine.operator.act(
            saga, cid, action, reason=reason, by=who, compensate=compensate
        )
        inst = result.instance
        if inst is None:
            raise ApiError(404, f"no instance {cid!r} of saga {saga!r}")
        if result.refused is not None:
            raise ApiError(409, result.refused)
        return ActionResponse(
            saga=inst.saga,
            correlation_id=inst.correlation_id,
            state=inst.state,
            status=inst.status.value,
            version=inst.version,
        )

    body = Body(default_factory=ActionRequest)

    @router.post(
        "/sagas/{saga}/{correlation_id:path}/abort",
        response_model=ActionResponse,
        summary="Abort: compensate now (or stop where it is)",
    )
    async def abort(
        who: Annotated[str, writer],
        saga: str,
        correlation_id: str,
        request: Annotated[ActionRequest, body],
        compensate: bool = True,
    ) -> ActionResponse:
        """Fail the instance now and compensate the steps done, in reverse order; with
        ``compensate=false``, stop it where it is (``aborted``, nothing sent)."""
        return await _act(saga, correlation_id, "abort", who, request.reason, compensate)

    @router.post(
        "/sagas/{saga}/{correlation_id:path}/retry",
        response_model=ActionResponse,
        summary="Retry the current step or compensation",
    )
    async def retry(
        who: Annotated[str, writer],
        saga: str,
        correlation_id: str,
        request: Annotated[ActionRequest, body],
    ) -> ActionResponse:
        """Send the current step's command (or compensation) again, as its next attempt."""
        return await _act(saga, correlation_id, "retry", who, request.reason)

    @router.post(
        "/sagas/{saga}/{correlation_id:path}/resume",
        response_model=ActionResponse,
        summary="Resume a compensation_failed instance",
    )
    async def resume(
        who: Annotated[str, writer],
        saga: str,
        correlation_id: str,
        request: Annotated[ActionRequest, body],
    ) -> ActionResponse:
        """Once the cause is fixed: try the failed compensation again (attempts counted
        afresh) and go on compensating."""
        return await _act(saga, correlation_id, "resume", who, request.reason)

    return router
