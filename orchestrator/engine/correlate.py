"""Step 2 of the data flow: which saga instances does a decoded event belong to?

The router maps each event type to the sagas that consume it, validates the
event's ``data`` against the model each saga declared (so a malformed reply is
rejected before it can touch state) and finds the correlation id: the
``correlationid`` attribute, else the saga's fallback function of the data.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from orchestrator.language.definition import EventSpec, SagaDefinition
from schemas.codec import describe_validation_error
from schemas.envelope import Envelope
from schemas.errors import DefinitionError, PayloadError, RoutingError

__all__ = ["Routed", "Router"]


@dataclass(slots=True)  # not frozen: built per message, frozen __init__ costs 3x
class Routed:
    """An event bound for one instance of one saga, with its validated payload."""

    saga: SagaDefinition
    spec: EventSpec | None  # None for timer events
    envelope: Envelope
    correlation_id: str
    payload: Any
    key: tuple[str, str] = field(init=False)
    """``(saga name, correlation id)``, the instance's key: made once, read several times
    per event."""

    def __post_init__(self) -> None:
        self.key = (self.saga.name, self.correlation_id)


class Router:
    """Event type -> consuming sagas. Built once from the loaded definitions."""

    def __init__(self, sagas: Sequence[SagaDefinition]) -> None:
        self.sagas = {s.name: s for s in sagas}
        if len(self.sagas) != len(sagas):
            names = [s.name for s in sagas]
            dup = sorted({n for n in names if names.count(n) > 1})
            raise DefinitionError(
                f"saga name(s) {', '.join(dup)} loaded twice; names must be unique"
            )
        self._by_type: dict[str, list[tuple[SagaDefinition, EventSpec]]] = {}
        for s in sagas:
            for spec in s.events.values():
                self._by_type.setdefault(spec.type, []).append((s, spec))

    def consumes(self) -> tuple[str, ...]:
        return tuple(self._by_type)

    def produces(self) -> tuple[str, ...]:
        out: dict[str, None] = {}
        for s in self.sagas.values():
            out.update(dict.fromkeys(s.produces()))
        return tuple(out)

    def route(self, envelope: Envelope) -> list[Routed | RoutingError | PayloadError]:
        """One entry per consuming saga: where it goes, or why that saga can't take it."""
        targets = self._by_type.get(envelope.type)
        if not targets:
            known = ", ".join(sorted(self._by_type)) or "none"
            return [
                RoutingError(
                    f"unknown event type {envelope.type!r}; the loaded sagas consume: {known}"
                )
            ]
        out: list[Routed | RoutingError | PayloadError] = []
        for saga, spec in targets:
            try:
                out.append(self._bind(saga, spec, envelope))
            except (RoutingError, PayloadError) as exc:
                out.append(exc)
        return out

    @staticmethod
    def _bind(saga: SagaDefinition, spec: EventSpec, envelope: Envelope) -> Routed:
        payload: Any = envelope.data
        if spec.model is not None:
            try:
                # model_validate minus its wrapper: this runs once per event
                payload = spec.model.__pydantic_validator__.validate_python(envelope.data)
            except ValidationError as exc:
                raise PayloadError(
                    f"saga {saga.name!r}: {envelope.type} {envelope.id}: "
                    + describe_validation_error(exc, "data"),
                    exc.errors(include_url=False, include_context=False, include_input=False),
                ) from None
        cid = envelope.correlationid
        if cid is None and spec.correlate is not None:
            try:
                cid = spec.correlate(payload)
            except Exception as exc:  # a user function: report, don't crash
                raise RoutingError(
                    f"saga {saga.name!r}: correlation function failed on {envelope.type}"
                    f" {envelope.id}: {type(exc).__name__}: {exc}"
                ) from None
        if not cid:
            raise RoutingError(
                f"saga {saga.name!r}: {envelope.type} {envelope.id} has no correlation id"
                f" (looked at: {spec.correlate_desc})"
            )
        return Routed(saga, spec, envelope, str(cid), payload)
