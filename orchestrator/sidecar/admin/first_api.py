"""The first admin API's routes, kept for the clients written against it and marked
deprecated in the OpenAPI document: ``GET /instances/{saga}/{id}`` (the first shape of
``GET /sagas/{saga}/{id}``) and ``POST /instances/{saga}/{id}/abort`` (what is now
``POST /sagas/{saga}/{id}/abort?compensate=false``: stop where it is)."""

from typing import Annotated

from fastapi import APIRouter, Depends
from starlette.responses import Response

from orchestrator.language.status import Status
from orchestrator.sidecar.admin.context import JSON, Admin, error

__all__ = ["first_api_routes"]


def first_api_routes(admin: Admin) -> APIRouter:
    router = APIRouter(tags=["first API"])
    reader, writer = Depends(admin.reader), Depends(admin.writer)
    sidecar = admin.sidecar

    @router.post(
        "/instances/{saga}/{correlation_id:path}/abort",
        tags=["first API"],
        deprecated=True,
        summary="Stop an instance where it is",
    )
    async def legacy_abort(
        who: Annotated[str, writer], saga: str, correlation_id: str, reason: str = ""
    ) -> Response:
        """``POST /sagas/{saga}/{id}/abort?compensate=false`` under its first name."""
        admin.saga(saga)
        engine = admin.engine()
        result = await engine.operator.act(
            saga, correlation_id, "abort", reason=reason, by=who, compensate=False
        )
        inst = result.instance
        if inst is None:
            return error(404, f"no instance {correlation_id!r} of saga {saga!r}")
        if inst.status is Status.RUNNING:
            return error(409, result.refused or "", state=inst.state, status=inst.status.value)
        return JSON({"state": inst.state, "status": inst.status.value})

    @router.get(
        "/instances/{saga}/{correlation_id:path}",
        tags=["first API"],
        deprecated=True,
        summary="One instance (first API)",
    )
    async def legacy_instance(
        who: Annotated[str, reader], saga: str, correlation_id: str
    ) -> Response:
        """``GET /sagas/{saga}/{id}`` under its first name, in its first shape."""
        admin.saga(saga)
        engine = sidecar.engine
        store = admin.store()
        if engine is None:
            return error(503, f"not ready ({sidecar.phase})")
        inst = await engine.operator.instance(saga, correlation_id)
        if inst is None:
            return error(404, f"no instance {correlation_id!r} of saga {saga!r}")
        history = await store.history((saga, correlation_id))
        return JSON(
            {
                "saga": inst.saga,
                "correlation_id": inst.correlation_id,
                "state": inst.state,
                "status": inst.status.value,
                "version": inst.version,
                "data": inst.data.model_dump(mode="json"),
                "failure": inst.meta.failure,
                "created_at": inst.created_at,
                "updated_at": inst.updated_at,
                "history": [
                    {
                        "seq": h.seq,
                        "message_id": h.message_id,
                        "message_type": h.message_type,
                        "from_state": h.from_state,
                        "to_state": h.to_state,
                        "commands": list(h.commands),
                        "at": h.at,
                        "note": h.note,
                    }
                    for h in history
                ],
                "steps": dict(inst.meta.steps),
                "deviations": [
                    {"seq": h.seq, "message_id": h.message_id, "at": h.at, "note": h.note}
                    for h in history
                    if h.note.startswith("deviation ")
                ],
            }
        )

    return router
