"""What a transition can do, and what the code a saga's author writes gets to see.

A row of a saga (a :class:`~orchestrator.language.definition.Transition`) runs a
tuple of actions: send a message (:class:`SendSpec`), set or cancel a timer, record
why the saga failed. Guards, updates and payload builders read a :class:`Context`.
Both forms of the language compile to these, and so does the flow form's
interpreter in the engine.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import BaseModel

from orchestrator.language.status import Meta
from schemas.envelope import Envelope

ModelType = type[BaseModel]
"""A pydantic model class (an alias: dataclasses below have a field named ``type``)."""

__all__ = [
    "Action",
    "Build",
    "CancelTimer",
    "Context",
    "Guard",
    "ModelType",
    "SendSpec",
    "SetFailure",
    "SetTimer",
    "Update",
]


@dataclass(slots=True)  # not frozen: built per message, frozen __init__ costs 3x
class Context:
    """What guards, updates and payload builders see. Read-only."""

    state: BaseModel
    event: Any  # the validated payload model, or the raw ``data`` when none is declared
    envelope: Envelope
    correlation_id: str
    meta: Meta
    now: datetime

    @property
    def reason(self) -> str | None:
        """Why the saga failed (a failure reply's ``reason``, or a timeout), if it did."""
        return self.meta.failure

    def attempt(self, key: str) -> int:
        return self.meta.attempt(key)


Guard = Callable[[Context], bool]
Update = Callable[[Context], BaseModel]
Build = Callable[[Context], Any]


@dataclass(frozen=True, slots=True)
class SendSpec:
    """Send one message. ``attempt_key`` makes it a counted attempt (for retries)."""

    type: str
    build: Build
    model: ModelType | None = None
    attempt_key: str | None = None
    from_state: bool = False  # payload filled from same-named state fields (checked at load)
    condition: Guard | None = None  # send only when this holds (on the updated state)
    dump: Build | None = None
    """The payload as JSON-ready data, where a faster way than ``build`` then dumping
    exists (``from_state``: the state's own serializer, when it writes what the
    command's would; see :mod:`orchestrator.language.assign`)."""


@dataclass(frozen=True, slots=True)
class SetTimer:
    name: str
    after: float | Callable[[Context], float]


@dataclass(frozen=True, slots=True)
class CancelTimer:
    name: str


@dataclass(frozen=True, slots=True)
class SetFailure:
    """Record why the saga failed (read back as ``Context.reason``)."""

    reason: Callable[[Context], str]


Action = SendSpec | SetTimer | CancelTimer | SetFailure
