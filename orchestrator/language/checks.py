"""Load-time checks of a saga definition.

A saga that would misbehave at run time should fail when its module is
imported, with every problem listed, each naming the saga, the state or step,
and what to change. (python-statemachine checks reachability at class creation;
Temporal validates workflow decorators at import. Same idea.)
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from typing import get_args, get_origin

from pydantic import BaseModel, Secret, SecretBytes, SecretStr

from orchestrator.language.definition import (
    DEVIATION_EVENT,
    INITIAL,
    TIMER_PREFIX,
    SagaDefinition,
    SendSpec,
    SetTimer,
)
from orchestrator.language.names import ABORT_EVENT
from orchestrator.language.problems import active
from orchestrator.language.status import Status
from schemas.errors import DefinitionError

__all__ = ["check", "did_you_mean", "raise_problems"]

PAYLOAD_EXTRAS = frozenset({"reason", "correlation_id"})


def raise_problems(name: str, problems: Iterable[str]) -> None:
    found = list(dict.fromkeys(problems))
    if not found:
        return
    if len(found) == 1:
        raise DefinitionError(f"saga {name!r}: {found[0]}")
    body = "\n".join(f"  - {p}" for p in found)
    raise DefinitionError(f"saga {name!r} has {len(found)} problems:\n{body}")


def did_you_mean(name: str, known: Iterable[str]) -> str:
    """``"; did you mean 'x'?"`` for the known name closest to a misspelt ``name``
    (difflib's ratio of 0.8 or more), else nothing."""
    close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.8)
    return f"; did you mean {close[0]!r}?" if close else ""


def _required(model: type[BaseModel]) -> list[str]:
    return [n for n, f in model.model_fields.items() if f.is_required()]


def check(defn: SagaDefinition, *, declared_starts: Iterable[str] = ()) -> None:
    """Raise :class:`DefinitionError` listing every problem of ``defn``."""
    problems: list[str] = []
    finals = dict(defn.final)
    starts = set(declared_starts) or set(defn.start_events)

    for s in starts:
        if s not in defn.events:
            problems.append(f"start event {s!r} is not declared in events=[Event({s!r}, ...)]")
    if defn.flow is None:
        problems.extend(_check_rows(defn, starts, finals))
    else:
        problems.extend(_check_sends(defn, _flow_sends(defn), "flow"))

    for s in starts:
        spec = defn.events.get(s)
        if spec is None or spec.model is None:
            continue
        missing = [n for n in _required(defn.state_model) if n not in spec.model.model_fields]
        if missing:
            problems.append(
                f"state model {defn.state_model.__name__} requires {', '.join(missing)}, which"
                f" start event {s!r} ({spec.model.__name__}) does not carry: give them defaults"
            )

    problems.extend(_incomplete_models(defn))
    for state, seconds in defn.slo.items():
        if state not in defn.states:
            problems.append(
                f"slo names state {state!r}, which the saga does not have"
                + did_you_mean(state, defn.states)
            )
        if not seconds > 0:
            problems.append(f"slo of state {state!r} must be a positive number of seconds")
    problems.extend(_unstorable(defn.state_model, defn.state_model.__name__, set()))
    collector = active()  # ``sagawire validate``: every problem of every saga, no raise
    if collector is not None and collector.take(defn, defn.name, problems):
        return
    raise_problems(defn.name, problems)


def _check_rows(defn: SagaDefinition, starts: set[str], finals: dict[str, Status]) -> list[str]:
    """The state-machine form's checks: how it starts, timers, reachable states, exits."""
    problems: list[str] = []
    if not defn.transitions.get(INITIAL):
        problems.append(
            f"nothing starts it: add a row When({INITIAL!r}, <start event>) or a start event"
        )

    timers_set: set[str] = set()
    for rows in defn.transitions.values():
        for t in rows:
            timers_set.update(a.name for a in t.actions if isinstance(a, SetTimer))

    for state, rows in defn.transitions.items():
        if state in finals:
            problems.append(
                f"state {state!r} is final ({finals[state].value}) but has transitions out of it"
                f" (on {', '.join(sorted({t.event for t in rows}))}); remove them or make it"
                " non-final"
            )
        for t in rows:
            if t.event.startswith(TIMER_PREFIX):
                timer = t.event[len(TIMER_PREFIX) :]
                if timer not in timers_set:
                    problems.append(
                        f"state {state!r} handles Timeout({timer!r}) but no row sets timer"
                        f" {timer!r}; add .timer({timer!r}, seconds) where the wait begins"
                    )
                if state == INITIAL:
                    problems.append(f"{INITIAL!r} cannot wait for Timeout({timer!r})")
                continue
            if t.event == DEVIATION_EVENT:
                if defn.deviations != "fail":
                    problems.append(
                        f"state {state!r} has a Deviation() row, which runs only under"
                        " deviations='fail': declare the policy or remove the row"
                    )
                continue
            if t.event == ABORT_EVENT:  # routed by the engine to its instance
                continue
            if t.event not in defn.events:
                problems.append(
                    f"state {state!r} accepts event {t.event!r}, which has no correlation:"
                    f" declare it in events=[Event({t.event!r}, Model, correlate=...)]"
                    + did_you_mean(t.event, defn.events)
                )
            elif state == INITIAL and t.event not in starts:
                problems.append(
                    f"event {t.event!r} is accepted in {INITIAL!r} but is not a start event;"
                    " list it in start=..."
                )
            if t.target not in finals and t.target not in defn.transitions:
                problems.append(
                    f"state {t.target!r} (entered from {state!r} on {t.event!r}) has no way"
                    " out and is not final: add rows leaving it, or list it in final={...}"
                )
        for t in rows:
            problems.extend(_check_sends(defn, t.actions, f"state {state!r} on {t.event!r}"))

    for state, status in finals.items():
        if status is Status.RUNNING:
            problems.append(f"final state {state!r} cannot have status 'running'")

    reachable = {INITIAL}
    frontier = [INITIAL]
    while frontier:
        s = frontier.pop()
        for t in defn.transitions.get(s, ()):
            if t.target not in reachable:
                reachable.add(t.target)
                frontier.append(t.target)
    for s in defn.states:
        if s not in reachable:
            problems.append(
                f"state {s!r} is unreachable from {INITIAL!r}: add a row that goes .to({s!r})"
                " or remove it"
            )

    for state, rows in defn.transitions.items():
        if state == INITIAL or state in finals:
            continue
        if not any(t.event.startswith(TIMER_PREFIX) for t in rows):
            problems.append(
                f"state {state!r} waits for {', '.join(sorted({t.event for t in rows}))}"
                " with no timeout: add When(state, Timeout(name)) and set the timer on entry"
            )

    return problems


def _flow_sends(defn: SagaDefinition) -> list[SendSpec]:
    flow = defn.flow
    if flow is None:
        return []
    specs = [s.send for s in flow.steps] + [s.compensate for s in flow.steps]
    specs += [flow.on_completed, flow.on_compensated, flow.on_compensation_failed]
    return [spec for spec in specs if spec is not None]


_SECRETS = (SecretStr, SecretBytes, Secret)


def _unstorable(model: type[BaseModel], where: str, seen: set[type[BaseModel]]) -> list[str]:
    """State fields that would not survive being stored: the state is written as JSON
    at every transition and read back after a restart, so what JSON leaves out or masks
    would be lost without a word. Nested models are looked into too."""
    seen.add(model)
    out: list[str] = []
    for name, f in model.model_fields.items():
        at = f"{where}.{name}"
        if f.exclude is True:
            out.append(
                f"state field {at} has Field(exclude=True): it would be lost each time the"
                " state is stored; drop exclude, or keep the value out of the state"
            )
        for kind in _types_in(f.annotation):
            if issubclass(kind, _SECRETS):
                out.append(
                    f"state field {at} is a {kind.__name__}: it would be stored masked"
                    " ('**********') and come back so; keep secrets out of saga state"
                    " (store a reference to them instead)"
                )
            elif issubclass(kind, BaseModel) and kind not in seen:
                out.extend(_unstorable(kind, at, seen))
    return out


def _types_in(annotation: object) -> list[type]:
    """The classes an annotation names, through unions, containers and Annotated."""
    if isinstance(annotation, type) and not get_args(annotation):
        return [annotation]
    found: list[type] = []
    origin = get_origin(annotation)
    if isinstance(origin, type):  # list, dict...; None for unions and Annotated
        found.append(origin)
    for arg in get_args(annotation):
        found.extend(_types_in(arg))
    return found


def _incomplete_models(defn: SagaDefinition) -> list[str]:
    """Models pydantic has not finished building (forward references it could not
    resolve yet), rebuilt here once. Why now: the engine calls their validators and
    serializers directly on the hot path, and pydantic's deferred rebuild on first use
    resolves names by counting stack frames up to the public ``model_validate``."""
    models: dict[type[BaseModel], None] = {defn.state_model: None}
    models.update((spec.model, None) for spec in defn.events.values() if spec.model is not None)
    for rows in defn.transitions.values():
        for t in rows:
            models.update((a.model, None) for a in t.actions if isinstance(a, SendSpec) and a.model)
    models.update((spec.model, None) for spec in _flow_sends(defn) if spec.model is not None)
    problems = []
    for model in models:
        if not model.__pydantic_complete__ and not model.model_rebuild(raise_errors=False):
            problems.append(
                f"model {model.__name__} is not fully defined (a forward reference pydantic"
                f" cannot resolve yet): call {model.__name__}.model_rebuild() once the types"
                " it names exist"
            )
    return problems


def _check_sends(defn: SagaDefinition, actions: Iterable[object], where: str) -> list[str]:
    out: list[str] = []
    state_fields = set(defn.state_model.model_fields)
    for a in actions:
        if isinstance(a, SendSpec) and a.from_state and a.model is not None:
            missing = [
                n for n in _required(a.model) if n not in state_fields and n not in PAYLOAD_EXTRAS
            ]
            if missing:
                out.append(
                    f"{where}: command {a.type!r} ({a.model.__name__}) needs"
                    f" {', '.join(missing)}, not found in state model"
                    f" {defn.state_model.__name__}; add the fields or pass build=..."
                )
    return out
