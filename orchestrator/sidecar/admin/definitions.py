"""``GET /definitions``: each loaded saga as JSON and as a Mermaid diagram."""

from typing import Annotated

from fastapi import APIRouter, Depends

from orchestrator.sidecar.admin.context import Admin
from orchestrator.sidecar.admin.models import DefinitionOut, Error
from orchestrator.sidecar.admin.views import definition_view

__all__ = ["definition_routes"]


def definition_routes(admin: Admin) -> APIRouter:
    router = APIRouter(tags=["definitions"], responses={401: {"model": Error}})
    reader = Depends(admin.reader)

    @router.get("/definitions", response_model=list[DefinitionOut], summary="Loaded sagas")
    async def definitions(who: Annotated[str, reader]) -> list[DefinitionOut]:
        """States, transitions, steps, commands, compensations, deadlines and SLOs of each
        loaded saga, with its diagram (``stateDiagram-v2`` or ``flowchart``)."""
        return [definition_view(s) for s in admin.sidecar.sagas]

    return router
