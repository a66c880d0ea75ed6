"""The frozen flow of a step saga whose steps are observed, or run side by side.

A step saga whose every step sagawire commands, one after the other, compiles to
state-machine rows (:mod:`orchestrator.language.steps`). A saga with a step that
sagawire only *observes* (someone else's event within a deadline: choreography),
or with steps that follow the same step (parallel branches, ``after=``), compiles
to a :class:`Flow` instead: the steps and how they depend on each other, which the
engine's flow interpreter (:mod:`orchestrator.engine.flow`) runs with each step's
status kept in the instance. Both are read from the one
:class:`~orchestrator.language.definition.SagaDefinition`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from orchestrator.language.actions import SendSpec

__all__ = ["DEVIATION_POLICIES", "Flow", "FlowStep"]

DEVIATION_POLICIES = ("record", "fail")
"""What a deviation from the declared flow does: ``record`` it (in the history and the
metrics; the flow goes on), or ``fail`` the flow (its done steps are compensated)."""


@dataclass(frozen=True, slots=True)
class FlowStep:
    """One step: commanded (``send``) or observed (``send`` None), its events, its
    compensation, its deadline or timeout, and the steps it comes after."""

    name: str
    send: SendSpec | None
    successes: tuple[str, ...]
    failures: tuple[str, ...]
    compensate: SendSpec | None
    compensated_by: str | None
    timeout: float
    attempts: int
    delay: Callable[[int], float]
    """The pause before attempt n + 1 of the command (or of the compensation)."""
    after: tuple[str, ...]

    @property
    def observed(self) -> bool:
        return self.send is None

    @property
    def timer(self) -> str:
        """The timer that ends the wait for this step: a command's timeout, or the
        deadline of an observed step."""
        return f"{self.name}.deadline" if self.send is None else f"{self.name}.timeout"


@dataclass(frozen=True)
class Flow:
    """The steps of a flow saga, in declaration order, and what is derived from them."""

    steps: tuple[FlowStep, ...]
    on_completed: SendSpec | None = None
    on_compensated: SendSpec | None = None
    on_compensation_failed: SendSpec | None = None
    deviations: str = "record"
    index: Mapping[str, FlowStep] = field(default_factory=dict, repr=False)
    successors: Mapping[str, tuple[str, ...]] = field(default_factory=dict, repr=False)
    by_success: Mapping[str, str] = field(default_factory=dict, repr=False)
    by_failure: Mapping[str, str] = field(default_factory=dict, repr=False)
    by_undone: Mapping[str, str] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        steps = self.steps
        put = object.__setattr__
        put(self, "index", MappingProxyType({s.name: s for s in steps}))
        after: dict[str, list[str]] = {s.name: [] for s in steps}
        for s in steps:
            for pre in s.after:
                after.setdefault(pre, []).append(s.name)
        put(self, "successors", MappingProxyType({k: tuple(v) for k, v in after.items()}))
        put(self, "by_success", MappingProxyType({t: s.name for s in steps for t in s.successes}))
        put(self, "by_failure", MappingProxyType({t: s.name for s in steps for t in s.failures}))
        undone = {s.compensated_by: s.name for s in steps if s.compensated_by}
        put(self, "by_undone", MappingProxyType(undone))

    @property
    def roots(self) -> tuple[str, ...]:
        """The steps that start with the flow."""
        return tuple(s.name for s in self.steps if not s.after)

    def sends(self) -> tuple[str, ...]:
        """Every message type the flow may send."""
        specs = [s.send for s in self.steps] + [s.compensate for s in self.steps]
        specs += [self.on_completed, self.on_compensated, self.on_compensation_failed]
        return tuple(dict.fromkeys(s.type for s in specs if s is not None))

    def timer_names(self) -> frozenset[str]:
        names: set[str] = set()
        for s in self.steps:
            names.add(s.timer)
            if s.send is not None:
                names.add(f"{s.name}.retry")
            if s.compensate is not None:
                names.update((f"undo:{s.name}.timeout", f"undo:{s.name}.retry"))
        return frozenset(names)
