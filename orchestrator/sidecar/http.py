"""The sidecar's HTTP API: health, readiness, events in, metrics, and the admin API.

A FastAPI app: the routes are declared with their parameters and answer models, and
``/openapi.json`` (OpenAPI 3.1) is generated from them. This module holds the routes
of the process itself and puts the app together; the operator's routes are in
:mod:`orchestrator.sidecar.admin` (instances and actions, bulk actions, dead letters,
definitions, the overview, the first API's routes), what a bad request is answered in
:mod:`orchestrator.sidecar.admin.guards`.

- ``GET /healthz`` (alive) and ``GET /readyz`` (503 naming the failing check): open.
- ``POST /events``: one structured CloudEvent, validated against the event's model
  (422 with the field errors), then published through the broker.
- ``GET /metrics``: Prometheus.
- ``GET /outbox/failed``: outbox rows the broker refused for good.

It reads the sidecar through the ``SidecarView`` protocol of
:mod:`~orchestrator.sidecar.api`, never the process class itself, so the process builds
this app without being imported back.
"""

import contextlib
from collections.abc import AsyncIterator
from typing import Annotated, Any

import structlog
from fastapi import Depends, FastAPI, Query
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.requests import Request
from starlette.responses import Response

from orchestrator.sidecar.admin.auth import Tokens
from orchestrator.sidecar.admin.bulk import BulkJobs, bulk_routes
from orchestrator.sidecar.admin.context import JSON, Admin, error
from orchestrator.sidecar.admin.deadletters import dead_letter_routes
from orchestrator.sidecar.admin.definitions import definition_routes
from orchestrator.sidecar.admin.first_api import first_api_routes
from orchestrator.sidecar.admin.guards import BodyLimit, handle_errors
from orchestrator.sidecar.admin.instances import instance_routes
from orchestrator.sidecar.admin.overview import overview_routes
from orchestrator.sidecar.api import NotAccepting, SidecarView
from orchestrator.sidecar.console import mount_console
from orchestrator.sidecar.logs import redact_text
from orchestrator.sidecar.metrics import Metrics
from orchestrator.sidecar.settings import version
from schemas.errors import MessageError, PayloadError, TransportError

__all__ = ["MAX_EVENT_BYTES", "build_app"]

log = structlog.get_logger("sagawire.http")

MAX_EVENT_BYTES = 1 << 20
"""Largest body ``POST /events`` reads, whatever the limits say: a saga event is a
message, not a file. Below it, the sidecar's ``Limits.max_message_bytes`` applies."""

DESCRIPTION = """The sagawire sidecar: saga instances, operators' actions on them, dead
letters, and the events and metrics of the process. With `SAGAWIRE_ADMIN_TOKEN` set,
mutating routes want `Authorization: Bearer <admin token>`; with it or
`SAGAWIRE_READ_TOKEN` set, read routes want either. `/healthz` and `/readyz` are open."""


def build_app(sidecar: SidecarView) -> FastAPI:
    """The sidecar's HTTP API; every handler reads the sidecar, none owns state (the
    metrics' registry and cached counts, and the bulk jobs, are this app's)."""
    settings = sidecar.settings
    tokens = Tokens.from_settings(settings.admin_token, settings.read_token)
    admin = Admin(sidecar, tokens)
    jobs = BulkJobs(admin)
    prometheus = Metrics(sidecar, admin.stuck_rule)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        await jobs.close()

    app = FastAPI(
        title="sagawire",
        version=version(),
        description=DESCRIPTION,
        openapi_url="/openapi.json",
        docs_url=None,  # FastAPI's page loads Swagger UI from a CDN: the console is at /ui
        redoc_url=None,
        lifespan=lifespan,
        default_response_class=JSON,
    )
    reader, writer = Depends(admin.reader), Depends(admin.writer)

    @app.get("/healthz", tags=["process"], summary="Alive")
    async def healthz() -> dict[str, str]:
        return {"status": "alive"}

    @app.get("/readyz", tags=["process"], summary="Ready (503 naming the failing check)")
    async def readyz() -> Response:
        ready, reason = sidecar.readiness()
        body: dict[str, Any] = {"ready": ready}
        if not ready:
            body["reason"] = reason
        body["checks"] = sidecar.checks()
        engine = sidecar.engine
        owned = engine.ownership_status() if engine is not None else None
        if owned is not None:  # which partitions this replica reads (several sidecars)
            body["ownership"] = owned
        return JSON(body, status_code=200 if ready else 503)

    @app.post(
        "/events",
        tags=["process"],
        status_code=202,
        summary="Publish one event",
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/cloudevents+json": {"schema": {"type": "object"}}},
            }
        },
    )
    async def events(who: Annotated[str, writer], request: Request) -> Response:
        """One structured CloudEvent (``application/cloudevents+json``). Its ``data`` is
        validated against the event's model first: 422 with the field errors."""
        if "ce-specversion" in request.headers:
            return error(
                400,
                "binary-mode CloudEvents are not supported; send one structured JSON event"
                " (application/cloudevents+json)",
            )
        limit = min(MAX_EVENT_BYTES, settings.limits.max_message_bytes)
        body = await _read_limited(request, limit)
        if body is None:  # refused before it was all read: a client cannot fill our memory
            return error(413, f"event larger than {limit} bytes (max_message_bytes)")
        try:
            event_id = await sidecar.accept(body)
        except PayloadError as exc:
            return error(422, exc.reason, detail=exc.errors)
        except MessageError as exc:
            return error(400, exc.reason)
        except NotAccepting as exc:
            return error(503, str(exc))
        except TransportError as exc:
            log.warning("publish of an HTTP event failed", error=str(exc))
            return error(503, f"broker unavailable: {redact_text(str(exc))}")
        return JSON({"id": event_id}, status_code=202)

    @app.get("/metrics", tags=["process"], summary="Prometheus metrics")
    async def metrics(who: Annotated[str, reader]) -> Response:
        await prometheus.refresh()
        return Response(generate_latest(prometheus.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/outbox/failed", tags=["process"], summary="Messages the broker refused")
    async def outbox_failed(
        who: Annotated[str, reader], limit: Annotated[int, Query(ge=1, le=1000)] = 100
    ) -> dict[str, Any]:
        """Outbox rows the broker refused for good, newest first, with its reason."""
        failed = await admin.store().failed_outbox(limit)
        return {
            "failed": [
                {
                    "id": f.row.id,
                    "destination": f.row.destination,
                    "key": f.row.key,
                    "bytes": len(f.row.body),
                    "reason": f.reason,
                    "created_at": f.row.created_at,
                    "failed_at": f.failed_at,
                }
                for f in failed
            ]
        }

    app.include_router(first_api_routes(admin))
    app.include_router(instance_routes(admin))
    app.include_router(bulk_routes(admin, jobs))
    app.include_router(dead_letter_routes(admin))
    app.include_router(definition_routes(admin))
    app.include_router(overview_routes(admin, prometheus))
    mount_console(app)
    handle_errors(app)
    app.add_middleware(BodyLimit, limit=settings.max_request_bytes)
    return app


async def _read_limited(request: Request, limit: int) -> bytes | None:
    """The request's body, or None as soon as it is known to exceed ``limit`` bytes (by
    its content-length, or while it streams in)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        return None
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)
