"""The sidecar's HTTP API: health, readiness, events in, metrics, and the admin API.

A FastAPI app: the routes are declared with their parameters and answer models, and
``/openapi.json`` (OpenAPI 3.1) is generated from them. This module holds the routes
of the process itself and the app's frame; the operator's routes are in
:mod:`orchestrator.sidecar.admin` (instances and actions, bulk actions, dead letters,
definitions).

- ``GET /healthz`` (alive) and ``GET /readyz`` (503 naming the failing check): open.
- ``POST /events``: one structured CloudEvent, validated against the event's model
  (422 with the field errors), then published through the broker.
- ``GET /metrics``: Prometheus.
- ``GET /outbox/failed``: outbox rows the broker refused for good.
- ``GET /instances/{saga}/{id}`` and ``POST .../abort`` (stop where it is): the first
  API's routes, kept for the clients written against it; ``/sagas/...`` supersedes them.

Every error, whoever raises it (a route, FastAPI's validation, Starlette's routing, a
body over ``max_request_bytes``), answers the same JSON, ``{"error": ..., "detail":
...}``: a bad request is a 4xx with a reason, never a 500. It reads the sidecar through
the ``SidecarView`` protocol of :mod:`~orchestrator.sidecar.api`, never the process
class itself, so the process builds this app without being imported back.
"""

import contextlib
import importlib.metadata
from collections.abc import AsyncIterator
from typing import Annotated, Any

import orjson
import structlog
from fastapi import Depends, FastAPI, Query
from fastapi.exceptions import RequestValidationError
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import ValidationError
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from orchestrator.language.status import Status
from orchestrator.sidecar.admin.auth import Tokens
from orchestrator.sidecar.admin.bulk import BulkJobs, bulk_routes
from orchestrator.sidecar.admin.context import Admin, ApiError
from orchestrator.sidecar.admin.deadletters import dead_letter_routes
from orchestrator.sidecar.admin.definitions import definition_routes
from orchestrator.sidecar.admin.instances import instance_routes
from orchestrator.sidecar.admin.overview import overview_routes
from orchestrator.sidecar.api import NotAccepting, SidecarView
from orchestrator.sidecar.console import mount_console
from orchestrator.sidecar.metrics import Metrics
from schemas.codec import describe_validation_error
from schemas.errors import MessageError, PayloadError, StoreError, TransportError

__all__ = ["MAX_EVENT_BYTES", "build_app"]

log = structlog.get_logger("sagawire.http")

MAX_EVENT_BYTES = 1 << 20
"""Largest body ``POST /events`` reads, whatever the limits say: a saga event is a
message, not a file. Below it, the sidecar's ``Limits.max_message_bytes`` applies."""

DESCRIPTION = """The sagawire sidecar: saga instances, operators' actions on them, dead
letters, and the events and metrics of the process. With `SAGAWIRE_ADMIN_TOKEN` set,
mutating routes want `Authorization: Bearer <admin token>`; with it or
`SAGAWIRE_READ_TOKEN` set, read routes want either. `/healthz` and `/readyz` are open."""


class _JSON(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


def _error(code: int, message: str, **extra: Any) -> Response:
    return _JSON({"error": message, **extra}, status_code=code)


def build_app(sidecar: SidecarView) -> FastAPI:
    """The sidecar's HTTP API; every handler reads the sidecar, none owns state (the
    metrics' registry and cached counts, and the bulk jobs, are this app's)."""
    settings = sidecar.settings
    tokens = Tokens.from_settings(
        getattr(settings, "admin_token", None), getattr(settings, "read_token", None)
    )
    admin = Admin(sidecar, tokens)
    jobs = BulkJobs(admin)
    prometheus = Metrics(sidecar, admin.stuck_rule)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        await jobs.close()

    app = FastAPI(
        title="sagawire",
        version=_version(),
        description=DESCRIPTION,
        openapi_url="/openapi.json",
        docs_url=None,  # FastAPI's page loads Swagger UI from a CDN: the console is at /ui
        redoc_url=None,
        lifespan=lifespan,
        default_response_class=_JSON,
    )
    reader, writer = Depends(admin.reader), Depends(admin.writer)

    @app.get("/healthz", tags=["process"], summary="Alive")
    async def healthz() -> dict[str, str]:
        return {"status": "alive"}

    @app.get("/readyz", tags=["process"], summary="Ready (503 naming the failing check)")
    async def readyz() -> Response:
        ready, reason = sidecar.readiness()
        checks = sidecar.checks()
        if ready:
            return _JSON({"ready": True, "checks": checks})
        return _JSON({"ready": False, "reason": reason, "checks": checks}, status_code=503)

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
            return _error(
                400,
                "binary-mode CloudEvents are not supported; send one structured JSON event"
                " (application/cloudevents+json)",
            )
        limit = min(MAX_EVENT_BYTES, settings.limits.max_message_bytes)
        body = await _read_limited(request, limit)
        if body is None:  # refused before it was all read: a client cannot fill our memory
            return _error(413, f"event larger than {limit} bytes (max_message_bytes)")
        try:
            event_id = await sidecar.accept(body)
        except PayloadError as exc:
            return _error(422, exc.reason, detail=exc.errors)
        except MessageError as exc:
            return _error(400, exc.reason)
        except NotAccepting as exc:
            return _error(503, str(exc))
        except TransportError as exc:
            log.warning("publish of an HTTP event failed", error=str(exc))
            return _error(503, f"broker unavailable: {exc}")
        return _JSON({"id": event_id}, status_code=202)

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

    @app.post(
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
            return _error(404, f"no instance {correlation_id!r} of saga {saga!r}")
        if inst.status is Status.RUNNING:
            return _error(409, result.refused or "", state=inst.state, status=inst.status.value)
        return _JSON({"state": inst.state, "status": inst.status.value})

    @app.get(
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
            return _error(503, f"not ready ({sidecar.phase})")
        inst = await engine.operator.instance(saga, correlation_id)
        if inst is None:
            return _error(404, f"no instance {correlation_id!r} of saga {saga!r}")
        history = await store.history((saga, correlation_id))
        return _JSON(
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

    app.include_router(instance_routes(admin))
    app.include_router(bulk_routes(admin, jobs))
    app.include_router(dead_letter_routes(admin))
    app.include_router(definition_routes(admin))
    app.include_router(overview_routes(admin, prometheus))
    mount_console(app)
    _handle_errors(app)
    app.add_middleware(BodyLimit, limit=int(getattr(settings, "max_request_bytes", 1 << 20)))
    return app


def _version() -> str:
    try:
        return importlib.metadata.version("sagawire")
    except importlib.metadata.PackageNotFoundError:  # run from a source tree
        return "0+unknown"


def _handle_errors(app: FastAPI) -> None:
    """Every error in the API's one JSON shape."""

    async def api_error(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, ApiError)
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        return _JSON({"error": exc.reason}, status_code=exc.status, headers=headers)

    async def http_error(request: Request, exc: Exception) -> Response:
        """Starlette's own answers (no such route, a method the route does not take),
        with their headers (``Allow``)."""
        assert isinstance(exc, HTTPException)
        return _JSON(
            {"error": f"{exc.detail}: {request.method} {request.url.path}"},
            status_code=exc.status_code,
            headers=exc.headers,
        )

    async def invalid(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        errors = [{k: v for k, v in e.items() if k in ("loc", "msg", "type")} for e in exc.errors()]
        where = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in errors
        )  # fmt: skip
        return _JSON({"error": f"bad request: {where}", "detail": errors}, status_code=422)

    async def store_down(_: Request, exc: Exception) -> Response:
        return _JSON({"error": f"store unavailable: {exc}"}, status_code=503)

    async def unloadable(request: Request, exc: Exception) -> Response:
        """409: the instance exists, but its stored state does not load as the saga's
        state model (which changed since): what to mend, not a bare 500."""
        assert isinstance(exc, ValidationError)
        detail = describe_validation_error(exc, "field")
        path = request.url.path
        return _JSON(
            {
                "error": f"the stored state at {path} does not load as the saga's state"
                f" model: {detail}; give new fields defaults (or mend the model) and redeploy"
            },
            status_code=409,
        )

    app.add_exception_handler(ApiError, api_error)
    app.add_exception_handler(HTTPException, http_error)
    app.add_exception_handler(RequestValidationError, invalid)
    app.add_exception_handler(StoreError, store_down)
    app.add_exception_handler(ValidationError, unloadable)


class BodyLimit:
    """413 for a request body over ``limit`` bytes, by its declared length or as it
    streams in, before any route reads it (``POST /events`` has a lower limit of its own)."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.limit:
            await _too_large(self.limit, scope, receive, send)
            return
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise _TooLarge
            return message

        try:
            await self.app(scope, counted, send)
        except _TooLarge:
            await _too_large(self.limit, scope, receive, send)


class _TooLarge(Exception):
    pass


async def _too_large(limit: int, scope: Scope, receive: Receive, send: Send) -> None:
    response = _error(413, f"request body larger than {limit} bytes (max_request_bytes)")
    await response(scope, receive, send)


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
