"""The engine's in-memory view of a saga instance, and what a transition decides.

Pure data: no I/O. :mod:`orchestrator.persist` converts these to and from store
records; :mod:`orchestrator.decide` produces :class:`Decision` from them.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from schemas.envelope import Envelope

__all__ = ["Decision", "Instance", "Meta", "Status", "TimerChange"]


class Status(enum.StrEnum):
    """Where an instance stands. Everything but ``running`` is final."""

    RUNNING = "running"
    COMPLETED = "completed"
    COMPENSATED = "compensated"  # failed and fully rolled back
    COMPENSATION_FAILED = "compensation_failed"  # a compensation gave up: for an operator
    ABORTED = "aborted"

    final: bool
    """Set on each member below: a plain attribute, read several times per event (a
    property costs ten times as much to read)."""


for _status in Status:
    _status.final = _status is not Status.RUNNING


@dataclass(slots=True)  # not frozen: built per message, frozen __init__ costs 3x
class Meta:
    """Engine-owned bookkeeping stored beside the saga's own state."""

    attempts: dict[str, int] = field(default_factory=dict)
    failure: str | None = None
    timers: tuple[str, ...] | None = ()
    """Timers set and not yet fired or cancelled, so that cancelling touches only rows
    that exist (None: unknown, cancel by name regardless)."""

    def attempt(self, key: str) -> int:
        return self.attempts.get(key, 0)

    def to_json(self) -> dict[str, Any]:
        return {"attempts": self.attempts, "failure": self.failure, "timers": self.timers}

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> Meta:
        timers = raw.get("timers")
        return cls(
            attempts=dict(raw.get("attempts", {})),
            failure=raw.get("failure"),
            timers=None if timers is None else tuple(timers),
        )


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
