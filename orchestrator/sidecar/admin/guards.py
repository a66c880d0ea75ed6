"""What the app answers when a request is wrong, whoever finds it: a route (``ApiError``),
FastAPI's validation, Starlette's routing, the store (down: 503; a stored state that no
longer loads: 409), or a body over ``max_request_bytes`` (413, before any route reads
it). Every one is the API's one JSON shape, ``{"error": ..., "detail": ...}``: a bad
request is a 4xx with a reason, never a 500."""

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from orchestrator.sidecar.admin.context import JSON, ApiError, error
from orchestrator.sidecar.logs import redact_text
from schemas.codec import describe_validation_error
from schemas.errors import StoreError

__all__ = ["BodyLimit", "handle_errors"]


def handle_errors(app: FastAPI) -> None:
    """Every error in the API's one JSON shape."""

    async def api_error(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, ApiError)
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        return JSON({"error": exc.reason}, status_code=exc.status, headers=headers)

    async def http_error(request: Request, exc: Exception) -> Response:
        """Starlette's own answers (no such route, a method the route does not take),
        with their headers (``Allow``)."""
        assert isinstance(exc, HTTPException)
        return JSON(
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
        return JSON({"error": f"bad request: {where}", "detail": errors}, status_code=422)

    async def store_down(_: Request, exc: Exception) -> Response:
        return JSON({"error": f"store unavailable: {redact_text(str(exc))}"}, status_code=503)

    async def unloadable(request: Request, exc: Exception) -> Response:
        """409: the instance exists, but its stored state does not load as the saga's
        state model (which changed since): what to mend, not a bare 500."""
        assert isinstance(exc, ValidationError)
        detail = describe_validation_error(exc, "field")
        path = request.url.path
        return JSON(
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
    response = error(413, f"request body larger than {limit} bytes (max_request_bytes)")
    await response(scope, receive, send)
