"""What every admin route needs of the sidecar, with the error each lack is.

A route asks :class:`Admin` for the store, the engine or a saga by name and gets it or
an :class:`ApiError` the app turns into JSON (503 while starting or while the store is
down, 404 for an unknown saga). Who is calling comes from :meth:`Admin.reader` and
:meth:`Admin.writer`, FastAPI dependencies over :class:`~.auth.Tokens`.
"""

from __future__ import annotations

import time
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from orchestrator.engine import Engine
from orchestrator.language.definition import SagaDefinition
from orchestrator.sidecar.admin.auth import Denied, Tokens
from orchestrator.sidecar.api import SidecarView
from orchestrator.sidecar.stuck import stuck_rule
from orchestrator.store import Store
from orchestrator.store.base import StuckRule

__all__ = ["JSON", "Admin", "ApiError", "error"]


class JSON(Response):
    """Every answer's body, written by orjson (FastAPI's ``ORJSONResponse`` is
    deprecated)."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


def error(code: int, message: str, **extra: Any) -> Response:
    """An error answer in the API's one shape."""
    return JSON({"error": message, **extra}, status_code=code)


class ApiError(Exception):
    """An answer other than 2xx: ``status`` and what is wrong."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


class Admin:
    """The sidecar as the admin routes use it."""

    def __init__(self, sidecar: SidecarView, tokens: Tokens) -> None:
        self.sidecar = sidecar
        self.tokens = tokens

    def reader(self, request: Request) -> str:
        """Dependency of every read route: the caller's token name."""
        try:
            return self.tokens.who(request, write=False)
        except Denied as exc:
            raise ApiError(exc.status, exc.reason) from None

    def writer(self, request: Request) -> str:
        """Dependency of every mutating route: the caller's token name."""
        try:
            return self.tokens.who(request, write=True)
        except Denied as exc:
            raise ApiError(exc.status, exc.reason) from None

    def saga(self, name: str) -> SagaDefinition:
        for saga in self.sidecar.sagas:
            if saga.name == name:
                return saga
        names = ", ".join(s.name for s in self.sidecar.sagas)
        raise ApiError(404, f"no saga named {name!r}; loaded: {names}")

    def store(self) -> Store:
        store = self.sidecar.store
        if store is None or not self.sidecar.store_open:
            raise ApiError(503, f"not ready ({self.sidecar.phase})")
        return store

    def engine(self) -> Engine:
        engine = self.sidecar.engine
        if engine is None:
            raise ApiError(503, f"not ready ({self.sidecar.phase})")
        health = engine.store_health
        if not health.up:  # an action would wait for the store holding the engine's lock
            raise ApiError(503, health.reason)
        return engine

    def stuck_rule(self, now: float | None = None) -> StuckRule:
        at = time.time() if now is None else now
        return stuck_rule(self.sidecar.sagas, at, self.sidecar.settings.stuck_after)
