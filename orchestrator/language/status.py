"""What an instance's status can be, and the engine's bookkeeping its guards can read.

Part of the language: a definition maps its final states to a :class:`Status`, and
guards, updates and builders read :class:`Meta` (attempts, the failure reason)
through their :class:`~orchestrator.language.definition.Context`. The engine keeps
both in every instance (:mod:`orchestrator.engine.model`).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Meta", "Status"]


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
    steps: dict[str, str] = field(default_factory=dict)
    """A flow's steps by status (``active``, ``done``, ``failed``, ``abandoned``,
    ``undoing``, ``undone``, ``undo_failed``; a step not yet started is absent)."""
    done: tuple[str, ...] = ()
    """A flow's steps in the order they were done: compensated in the reverse order."""

    def attempt(self, key: str) -> int:
        return self.attempts.get(key, 0)

    def to_json(self) -> dict[str, Any]:
        """Stored form; a flow's keys only when there are some, so the meta of every
        other saga stays as it always was."""
        raw: dict[str, Any] = {
            "attempts": self.attempts,
            "failure": self.failure,
            "timers": self.timers,
        }
        if self.steps:
            raw["steps"] = self.steps
            raw["done"] = self.done
        return raw

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> Meta:
        timers = raw.get("timers")
        return cls(
            attempts=dict(raw.get("attempts", {})),
            failure=raw.get("failure"),
            timers=None if timers is None else tuple(timers),
            steps=dict(raw.get("steps", {})),
            done=tuple(raw.get("done", ())),
        )
