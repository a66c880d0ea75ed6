"""The frozen, checked form of a saga that the engine runs.

Both declaration styles (:class:`~orchestrator.language.parts.StepSaga` and
:class:`~orchestrator.language.parts.StateMachine`) compile to one :class:`SagaDefinition`:
states, the events each accepts (with guards, state updates, commands to send,
timers) and the final states with their statuses. The engine, the graph
renderer and the admin views all read this one object; nothing mutates it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from pydantic import BaseModel

from orchestrator.language.actions import (
    Action,
    Build,
    CancelTimer,
    Context,
    Guard,
    ModelType,
    SendSpec,
    SetFailure,
    SetTimer,
    Update,
)
from orchestrator.language.flowdef import Flow
from orchestrator.language.graph import to_mermaid
from orchestrator.language.names import DEVIATION_EVENT, INITIAL, TIMER_PREFIX, timer_event
from orchestrator.language.status import Status
from schemas.plain import Plain

__all__ = [
    "DEVIATION_EVENT",
    "INITIAL",
    "TIMER_PREFIX",
    "Action",
    "Build",
    "CancelTimer",
    "Context",
    "EventSpec",
    "Guard",
    "ModelType",
    "SagaDefinition",
    "SendSpec",
    "SetFailure",
    "SetTimer",
    "StepInfo",
    "Transition",
    "Update",
    "timer_event",
]


@dataclass(frozen=True, slots=True)
class EventSpec:
    """An event the saga consumes: its payload model and how it is correlated."""

    type: str
    model: ModelType | None = None
    correlate: Callable[[Any], str | None] | None = None
    correlate_desc: str = "correlationid attribute"
    correlate_field: str | None = None
    """The ``data`` field read when the ``correlationid`` attribute is absent, when
    ``correlate=`` names one (None: a function, or no fallback); what the contract
    checks compare with the event's model (:mod:`orchestrator.language.lint`)."""
    starts: bool = False
    merge: bool = True
    plain: Plain | None = None
    """How a message on this event's destination that is no CloudEvent at all is read
    (:class:`~schemas.plain.Plain`); None: such a message is a dead letter."""


@dataclass(frozen=True, slots=True)
class Transition:
    """In ``source``, on ``event``, if ``guard``: ``update``, run ``actions``, go to ``target``."""

    source: str
    event: str
    target: str
    guard: Guard | None = None
    guard_desc: str = ""
    update: Update | None = None
    actions: tuple[Action, ...] = ()

    @property
    def sends(self) -> tuple[str, ...]:
        return tuple(a.type for a in self.actions if isinstance(a, SendSpec))


@dataclass(frozen=True, slots=True)
class StepInfo:
    """Introspection of a step saga's step (for docs and graphs)."""

    name: str
    command: str | None  # None: an observed step (choreography)
    success: tuple[str, ...]
    failure: tuple[str, ...]
    compensation: str | None
    compensated_by: str | None
    timeout: float
    attempts: int
    after: tuple[str, ...] = ()


@dataclass(frozen=True)
class SagaDefinition:
    """A checked saga. Build it with the DSL; never construct it by hand."""

    name: str
    state_model: type[BaseModel]
    events: Mapping[str, EventSpec]
    transitions: Mapping[str, tuple[Transition, ...]]  # by source state
    final: Mapping[str, Status]
    states: tuple[str, ...]
    kind: str = "machine"
    steps: tuple[StepInfo, ...] = ()
    park_for: float = 60.0
    source: str = ""
    flow: Flow | None = None
    """The steps of a saga that observes or branches (the engine interprets it); its
    ``transitions`` are then empty."""
    deviations: str | None = None
    """What an event that breaks the declared flow does (``record`` or ``fail``); None:
    such an event is parked, then dead-lettered, as an orchestrated saga's is."""
    slo: Mapping[str, float] = field(default_factory=dict)
    """Seconds an instance should stay in a state at most, by state (a step's ``slo=``,
    a state machine's ``slo={...}``); past it, the instance is stuck."""
    timer_names: frozenset[str] = field(default_factory=frozenset)
    """Every timer any row sets (all are cancelled when the instance finishes)."""
    _by_state_event: Mapping[tuple[str, str], tuple[Transition, ...]] = field(
        default_factory=dict, repr=False
    )

    def __post_init__(self) -> None:
        index: dict[tuple[str, str], list[Transition]] = {}
        for rows in self.transitions.values():
            for t in rows:
                index.setdefault((t.source, t.event), []).append(t)
        frozen = {k: tuple(v) for k, v in index.items()}
        object.__setattr__(self, "_by_state_event", MappingProxyType(frozen))
        names = {
            a.name
            for rows in self.transitions.values()
            for t in rows
            for a in t.actions
            if isinstance(a, SetTimer)
        }
        if self.flow is not None:
            names |= self.flow.timer_names()
        object.__setattr__(self, "timer_names", frozenset(names))
        object.__setattr__(self, "events", MappingProxyType(dict(self.events)))
        object.__setattr__(self, "transitions", MappingProxyType(dict(self.transitions)))
        object.__setattr__(self, "final", MappingProxyType(dict(self.final)))
        object.__setattr__(self, "slo", MappingProxyType(dict(self.slo)))

    def candidates(self, state: str, event: str) -> tuple[Transition, ...]:
        """The rows for ``(state, event)``, in declaration order."""
        return self._by_state_event.get((state, event), ())

    def accepts(self, state: str, event: str) -> bool:
        return (state, event) in self._by_state_event

    @property
    def start_events(self) -> tuple[str, ...]:
        return tuple(e.type for e in self.events.values() if e.starts)

    def consumes(self) -> tuple[str, ...]:
        """Event types this saga subscribes to."""
        return tuple(self.events)

    def produces(self) -> tuple[str, ...]:
        """Message types this saga may send."""
        out: dict[str, None] = dict.fromkeys(self.flow.sends()) if self.flow else {}
        for rows in self.transitions.values():
            for t in rows:
                out.update(dict.fromkeys(t.sends))
        return tuple(out)

    def to_mermaid(self) -> str:
        """A Mermaid diagram of the definition (for docs and the admin view): a
        ``stateDiagram-v2`` of a state machine, a ``flowchart`` of a flow; see
        :mod:`orchestrator.language.graph`, which also draws Graphviz."""
        return to_mermaid(self)
