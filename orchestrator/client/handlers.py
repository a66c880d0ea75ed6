"""What a service handles: one handler per message type, with the model of its data.

A handler is a function of the message's validated data and its envelope that returns
what to send: an :class:`~orchestrator.client.events.Emit`, several, or None
(handled, nothing to say). It may be ``async def``, or a plain function returning an
awaitable when it decides at once but sends later (a reply held back by a delay):
either way the message stays unacknowledged until what it returned has been sent.
:data:`IGNORE` instead acknowledges the message *without remembering it*: a copy of
it, later, is handled anew (for a message that is to count as never received).

The table is checked as it is built (one handler per type, a model that is a pydantic
model), so a mistake shows when the service module is imported, not on the first
message.
"""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias, TypeVar

from pydantic import BaseModel

from orchestrator.client.events import Emit
from schemas.envelope import Envelope
from schemas.errors import ConfigError

__all__ = ["IGNORE", "Handler", "HandlerTable", "Ignore", "Outcome", "Route"]


class Ignore(enum.Enum):
    """The type of :data:`IGNORE`."""

    IGNORE = "ignore"


IGNORE = Ignore.IGNORE
"""Returned by a handler: acknowledge the message, send nothing, remember nothing."""

Outcome: TypeAlias = Emit | Sequence[Emit] | Ignore | None
"""What a handler returns (or its awaitable resolves to)."""

M = TypeVar("M")

Handler: TypeAlias = Callable[[M, Envelope], Outcome | Awaitable[Outcome]]
"""``handler(data, envelope)``: ``data`` is the model instance (or the raw JSON value
for a handler registered without a model)."""


@dataclass(frozen=True, slots=True)
class Route:
    """One registered handler: the message type it takes, its data model (None: the raw
    JSON value, unvalidated), and the types it may send (declared on brokers that need
    destinations to exist, such as a NATS stream's subjects or Kafka topics)."""

    message_type: str
    handler: Handler[Any]
    model: type[BaseModel] | None
    emits: tuple[str, ...]

    def validate(self, data: Any) -> Any:
        """``data`` as the handler takes it (pydantic's ValidationError if it does not fit)."""
        model = self.model
        if model is None:
            return data
        return model.__pydantic_validator__.validate_python(data)


class HandlerTable:
    """The handlers of one service, by message type."""

    def __init__(self, service: str) -> None:
        self.service = service
        self.routes: dict[str, Route] = {}

    def add(
        self,
        type: str,
        handler: Handler[Any],
        model: type[BaseModel] | None = None,
        emits: Sequence[str] = (),
    ) -> Route:
        if not type:
            raise ConfigError(f"service {self.service!r}: a handler needs a message type")
        if type in self.routes:
            raise ConfigError(
                f"service {self.service!r} has two handlers for {type!r}:"
                f" {_name(self.routes[type].handler)} and {_name(handler)}"
            )
        if model is not None and not (isinstance(model, type_) and issubclass(model, BaseModel)):
            raise ConfigError(
                f"service {self.service!r}, handler for {type!r}: the model must be a pydantic"
                f" BaseModel class, got {model!r}"
            )
        if isinstance(emits, str):
            raise ConfigError(
                f"service {self.service!r}, handler for {type!r}: emits is a list of types,"
                f" got the string {emits!r}"
            )
        route = Route(type, handler, model, tuple(emits))
        self.routes[type] = route
        return route

    @property
    def consumes(self) -> tuple[str, ...]:
        return tuple(self.routes)

    @property
    def produces(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(t for r in self.routes.values() for t in r.emits))


type_ = type  # ``type`` is a parameter name above


def _name(handler: Callable[..., Any]) -> str:
    return getattr(handler, "__qualname__", repr(handler))
