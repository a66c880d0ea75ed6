"""``GET /definitions``: each loaded saga as JSON and as a Mermaid diagram; and
``GET /asyncapi.json``: the AsyncAPI 3.0 document of what they consume and send on the
sidecar's broker (every broker's defaults on ``memory://``), as ``sagawire schemas``
writes it."""

from typing import Annotated, Any
from urllib.parse import urlsplit

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

    @router.get("/asyncapi.json", summary="AsyncAPI 3.0 document of the loaded sagas")
    async def asyncapi_document(who: Annotated[str, reader]) -> dict[str, Any]:
        # imported here: the channels read every broker's settings (aiokafka, nats,
        # aio-pika: 0.1 s), which the sidecar's start should not wait for
        from orchestrator.language.contract import asyncapi
        from orchestrator.sidecar.channels import DEFAULT_BROKERS, server_for

        settings = admin.sidecar.settings
        memory = urlsplit(settings.broker).scheme == "memory"
        urls = DEFAULT_BROKERS if memory else (settings.broker,)
        servers = [server_for(url, group=settings.group) for url in urls]
        return asyncapi(admin.sidecar.sagas, servers)

    return router
