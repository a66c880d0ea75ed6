"""The sidecar's HTTP API: health, readiness, events in, metrics, admin views.

``/healthz`` (alive), ``/readyz`` (503 with the reason until the engine consumes),
``POST /events`` (one structured CloudEvent, published through the broker),
``/metrics`` (Prometheus), ``/sagas``, ``/instances/{saga}/{id}``,
``POST /instances/{saga}/{id}/abort`` and ``/outbox/failed`` (what the broker refused
for good).

Routes only: each handler turns a request into a call on the sidecar it serves and
the answer into JSON. It reads that sidecar through the ``SidecarView`` protocol of
:mod:`~orchestrator.sidecar.api`, never the process class itself, so the process
(:mod:`~orchestrator.sidecar.service`) builds this app without being imported back.
"""

from __future__ import annotations

from typing import Any

import orjson
import structlog
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from orchestrator.language.status import Status
from orchestrator.sidecar.api import NotAccepting, SidecarView
from orchestrator.sidecar.metrics import Metrics
from schemas.codec import describe_validation_error
from schemas.errors import MessageError, StoreError, TransportError

__all__ = ["MAX_EVENT_BYTES", "build_app"]

log = structlog.get_logger("sagawire.http")

MAX_EVENT_BYTES = 1 << 20
"""Largest body ``POST /events`` reads, whatever the limits say: a saga event is a
message, not a file. Below it, the sidecar's ``Limits.max_message_bytes`` applies."""


class _JSON(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


def build_app(sidecar: SidecarView) -> Starlette:
    """The sidecar's HTTP API; every handler reads the sidecar, none owns state (the
    metrics' registry and cached counts are this app's)."""
    prometheus = Metrics(sidecar)

    async def healthz(_: Request) -> Response:
        return _JSON({"status": "alive"})

    async def readyz(_: Request) -> Response:
        ready, reason = sidecar.readiness()
        checks = sidecar.checks()
        if ready:
            return _JSON({"ready": True, "checks": checks})
        return _JSON({"ready": False, "reason": reason, "checks": checks}, status_code=503)

    async def events(request: Request) -> Response:
        if "ce-specversion" in request.headers:
            return _JSON(
                {
                    "error": "binary-mode CloudEvents are not supported; send one "
                    "structured JSON event (application/cloudevents+json)"
                },
                400,
            )
        limit = min(MAX_EVENT_BYTES, sidecar.settings.limits.max_message_bytes)
        body = await _read_limited(request, limit)
        if body is None:  # refused before it was all read: a client cannot fill our memory
            return _JSON({"error": f"event larger than {limit} bytes (max_message_bytes)"}, 413)
        try:
            event_id = await sidecar.accept(body)
        except MessageError as exc:
            return _JSON({"error": exc.reason}, 400)
        except NotAccepting as exc:
            return _JSON({"error": str(exc)}, 503)
        except TransportError as exc:
            log.warning("publish of an HTTP event failed", error=str(exc))
            return _JSON({"error": f"broker unavailable: {exc}"}, 503)
        return _JSON({"id": event_id}, 202)

    async def metrics(_: Request) -> Response:
        await prometheus.refresh()
        return Response(generate_latest(prometheus.registry), media_type=CONTENT_TYPE_LATEST)

    async def sagas(_: Request) -> Response:
        return _JSON(
            {
                "sagas": [
                    {
                        "name": s.name,
                        "kind": s.kind,
                        "states": list(s.states),
                        "consumes": list(s.consumes()),
                        "produces": list(s.produces()),
                        "mermaid": s.to_mermaid(),
                    }
                    for s in sidecar.sagas
                ]
            }
        )

    async def instance(request: Request) -> Response:
        saga, cid = request.path_params["saga"], request.path_params["correlation_id"]
        if saga not in {s.name for s in sidecar.sagas}:
            return _JSON({"error": f"no saga named {saga!r}"}, 404)
        if sidecar.engine is None or sidecar.store is None:
            return _JSON({"error": f"not ready ({sidecar.phase})"}, 503)
        try:
            inst = await sidecar.engine.instance(saga, cid)
            history = await sidecar.store.history((saga, cid)) if inst else []
        except StoreError as exc:
            return _JSON({"error": f"store unavailable: {exc}"}, 503)
        except ValidationError as exc:
            return _unloadable(saga, cid, exc)
        if inst is None:
            return _JSON({"error": f"no instance {cid!r} of saga {saga!r}"}, 404)
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

    async def abort(request: Request) -> Response:
        """Stop an instance where it is (``aborted``: no compensation, timers cancelled)."""
        saga, cid = request.path_params["saga"], request.path_params["correlation_id"]
        if saga not in {s.name for s in sidecar.sagas}:
            return _JSON({"error": f"no saga named {saga!r}"}, 404)
        if sidecar.engine is None:
            return _JSON({"error": f"not ready ({sidecar.phase})"}, 503)
        reason = request.query_params.get("reason", "")
        health = sidecar.engine.store_health
        if not health.up:  # the engine waits for the store holding its lock: say so now
            return _JSON({"error": health.reason}, 503)
        try:
            inst = await sidecar.engine.abort(saga, cid, reason)
        except StoreError as exc:
            return _JSON({"error": f"store unavailable: {exc}"}, 503)
        except ValidationError as exc:
            return _unloadable(saga, cid, exc)
        if inst is None:
            return _JSON({"error": f"no instance {cid!r} of saga {saga!r}"}, 404)
        if inst.status is Status.RUNNING:  # another replica kept moving it: not aborted
            return _JSON(
                {
                    "error": f"the abort of {saga!r} instance {cid!r} did not take: another"
                    " sidecar kept moving it; try again",
                    "state": inst.state,
                    "status": inst.status.value,
                },
                409,
            )
        return _JSON({"state": inst.state, "status": inst.status.value})

    async def outbox_failed(request: Request) -> Response:
        """Outbox rows the broker refused for good, newest first, with its reason."""
        if sidecar.store is None or not sidecar.store_open:
            return _JSON({"error": f"not ready ({sidecar.phase})"}, 503)
        raw = request.query_params.get("limit", "100")
        if not raw.isdigit() or not 1 <= int(raw) <= 1000:
            return _JSON({"error": f"limit must be an integer from 1 to 1000, not {raw!r}"}, 400)
        try:
            failed = await sidecar.store.failed_outbox(int(raw))
        except StoreError as exc:
            return _JSON({"error": f"store unavailable: {exc}"}, 503)
        return _JSON(
            {
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
        )

    def _unloadable(saga: str, cid: str, exc: ValidationError) -> Response:
        """409: the instance exists, but its stored state does not load as the saga's
        state model (which changed since): what to mend, not a bare 500."""
        detail = describe_validation_error(exc, "field")
        return _JSON(
            {
                "error": f"the stored state of {saga!r} instance {cid!r} does not load as"
                f" the saga's state model: {detail}; give new fields defaults (or mend the"
                " model) and redeploy"
            },
            409,
        )

    return Starlette(
        routes=[
            Route("/instances/{saga}/{correlation_id:path}/abort", abort, methods=["POST"]),
            Route("/healthz", healthz, methods=["GET"]),
            Route("/readyz", readyz, methods=["GET"]),
            Route("/events", events, methods=["POST"]),
            Route("/metrics", metrics, methods=["GET"]),
            Route("/sagas", sagas, methods=["GET"]),
            Route("/instances/{saga}/{correlation_id:path}", instance, methods=["GET"]),
            Route("/outbox/failed", outbox_failed, methods=["GET"]),
        ],
        exception_handlers={HTTPException: _http_error},
    )


async def _http_error(request: Request, exc: Exception) -> Response:
    """Starlette's own answers (no such route, a method the route does not take) in
    the API's JSON shape, as every other error here, with their headers (``Allow``)."""
    assert isinstance(exc, HTTPException)
    return _JSON(
        {"error": f"{exc.detail}: {request.method} {request.url.path}"},
        exc.status_code,
        headers=exc.headers,
    )


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
