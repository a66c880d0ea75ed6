"""The engine's in-memory view of a saga instance, and what a transition decides.

Pure data: no I/O. :mod:`orchestrator.engine.persist` converts these to and from store
records; :mod:`orchestrator.engine.decide` produces :class:`Decision` from them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import BaseModel

from orchestrator.language.status import Meta, Status

__all__ = ["Decision", "Instance", "Message", "Meta", "Status", "TimerChange"]


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
class Message:
    """A message a transition sends: the attributes of its CloudEvent.

    Plain data, not a pydantic :class:`~schemas.envelope.Envelope`: the engine made
    every value itself (``data`` is JSON-ready already), so there is nothing to
    validate, and :mod:`orchestrator.engine.persist` encodes it exactly once."""

    type: str
    id: str
    data: Any
    source: str
    time: datetime
    correlationid: str
    causationid: str
    attempt: int | None = None

    def attributes(self) -> dict[str, Any]:
        """The CloudEvent's attributes in the order :meth:`Envelope.attributes` gives
        them, so the bytes are the same whichever builds them."""
        out = {
            "specversion": "1.0",
            "id": self.id,
            "source": self.source,
            "type": self.type,
            "time": self.time,
            "datacontenttype": "application/json",
            "correlationid": self.correlationid,
            "causationid": self.causationid,
        }
        if self.attempt is not None:
            out["attempt"] = self.attempt
        out["data"] = self.data
        return out


@dataclass(slots=True)  # not frozen: built per message, frozen __init__ costs 3x
class Decision:
    """The result of applying one event to one instance.

    ``kind`` is ``"applied"`` (persist ``instance``, publish ``messages``, change
    ``timers``), ``"park"`` (keep the event until the instance can take it) or
    ``"reject"`` (dead-letter it with ``reason``)."""

    kind: str
    instance: Instance | None = None
    from_state: str = ""
    messages: tuple[Message, ...] = ()
    timers: tuple[TimerChange, ...] = ()
    reason: str = ""
    deviation: str = ""
    """``<kind>: <what happened>`` when the event broke the saga's declared flow
    (recorded in the history and counted; the flow went on or failed, per its policy)."""
    note: str = ""
    """What else the history entry says: an operator's action, by whom and why."""
    since: float = 0.0
    """When the instance made its previous transition (0: this decision created it), set
    by :mod:`orchestrator.engine.deciding`: how long it spent in ``from_state``, for the
    metrics (:mod:`orchestrator.engine.stats`)."""
