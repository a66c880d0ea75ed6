"""What the HTTP API reads of the sidecar it serves, as a Protocol, and its one error.

Why a Protocol: the process (:mod:`~orchestrator.sidecar.service`) builds the HTTP app
(:mod:`~orchestrator.sidecar.http`), so the app must not import the process back. Both
depend on this module instead: ``service.Sidecar`` implements :class:`SidecarView`
(structurally, it does not inherit it) and hands itself to ``build_app``; the routes and
the metrics read only what is listed here. The imports point one way::

    service.py  (the process)  imports  http.py, api.py, settings.py
    http.py     (the routes)   imports  metrics.py, api.py
    metrics.py  (Prometheus)   imports  api.py
    api.py      (this)         imports  settings.py

Everything here is read-only to the HTTP side: the routes change the world only
through :meth:`SidecarView.accept` and the engine's own operations (``abort``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from orchestrator.engine import Engine
from orchestrator.language.definition import SagaDefinition
from orchestrator.sidecar.settings import Settings
from orchestrator.store import Store

__all__ = ["NotAccepting", "SidecarView"]


class NotAccepting(Exception):
    """The sidecar is starting or stopping and takes no events now (HTTP 503)."""


class SidecarView(Protocol):
    """The sidecar as its HTTP API sees it: what it was told, what it runs, how it is.

    ``engine`` and ``store`` are None until start-up has opened them; ``phase`` says
    how far it got (``"loading sagas"``, ``"running"``, ``"shutting down"``...)."""

    @property
    def settings(self) -> Settings: ...

    @property
    def phase(self) -> str: ...

    @property
    def sagas(self) -> Sequence[SagaDefinition]: ...

    @property
    def engine(self) -> Engine | None: ...

    @property
    def store(self) -> Store | None: ...

    @property
    def store_open(self) -> bool:
        """True between the store's open and its close (``store`` alone is set earlier)."""
        ...

    def readiness(self) -> tuple[bool, str]:
        """``(ready, reason)``: what ``/readyz`` answers, the reason naming what fails."""
        ...

    def checks(self) -> dict[str, str]:
        """Each dependency's state, ``"ok"`` or why not."""
        ...

    async def accept(self, body: bytes) -> str:
        """Publish one structured CloudEvent; its id. Raises MessageError (the client's
        fault), TransportError (the broker's), NotAccepting (starting or stopping)."""
        ...
