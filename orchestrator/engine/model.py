"""The engine's in-memory view of a saga instance, and what a transition decides.

Pure data: no I/O. :mod:`orchestrator.engine.persist` converts these to and from store
records; :mod:`orchestrator.engine.decide` produces :class:`Decision` from them.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import BaseModel

from orchestrator.language.status import Meta, Status
from schemas.envelope import Envelope

__all__ = ["Decision", "Instance", "Meta", "Status", "TimerChange"]


@dataclass(slots=True)  # not frozen: built per message, frozen __init__ costs 3x
class Instance:
    """One saga instance. ``version`` is what the store holds (0 = not yet stored)."""

    saga: str
    correlation_id: str
    state: str
    status: Status
    version: int
    data: BaseModel
    meta: Meta
    created_at: float
    updated_at: float


@dataclass(slots=True)  # not frozen: built per message, frozen __init__ costs 3x
class TimerChange:
    """A timer to set (``due`` given) or cancel (``due`` None)."""

    name: str
    due: float | None


@dataclass(slots=True)  # not frozen: built per message, frozen __init__ costs 3x
class Decision:
    """The result of applying one event to one instance.

    ``kind`` is ``"applied"`` (persist ``instance``, publish ``messages``, change
    ``timers``), ``"park"`` (keep the event until the instance can take it) or
    ``"reject"`` (dead-letter it with ``reason``)."""

    kind: str
    instance: Instance | None = None
    from_state: str = ""
    messages: tuple[Envelope, ...] = ()
    timers: tuple[TimerChange, ...] = ()
    reason: str = ""
