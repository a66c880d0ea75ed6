"""The state-machine form: rows of "in state X, on event Y [if guard], update, send Z,
go to W", checked and frozen into a :class:`~orchestrator.language.definition.SagaDefinition`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from pydantic import BaseModel

from orchestrator.language.checks import check, raise_problems
from orchestrator.language.definition import INITIAL, SagaDefinition, Transition
from orchestrator.language.flowdef import DEVIATION_POLICIES
from orchestrator.language.parts import Correlate, Event, When
from orchestrator.language.status import Status

__all__ = ["StateMachine"]


def StateMachine(
    name: str,
    *,
    state: type[BaseModel],
    events: Iterable[Event],
    start: Iterable[str] | str,
    final: dict[str, str | Status],
    transitions: Iterable[When],
    correlate: Correlate = None,
    park_for: float = 60.0,
    deviations: str | None = None,
    slo: Mapping[str, float] | None = None,
) -> SagaDefinition:
    """Declare a state machine saga. ``start`` names the events that create an
    instance (accepted in :data:`INITIAL`); ``final`` maps final states to their
    status (``completed``, ``compensated``, ``compensation_failed``, ``aborted``).

    ``deviations``: what an event its state does not take within ``park_for`` does.
    None (the default): it is dead-lettered. ``"record"``: it is recorded in the
    history and counted, and the saga goes on (a tracker of flows that others run).
    ``"fail"``: recorded, then the state's ``When(state, Deviation())`` rows run.

    ``slo``: seconds an instance should stay in each named state at most; past it, it is
    stuck (other states: the sidecar's ``--stuck-after``)."""
    if deviations is not None and deviations not in DEVIATION_POLICIES:
        raise_problems(
            name,
            [f"deviations={deviations!r} is not one of {', '.join(map(repr, DEVIATION_POLICIES))}"],
        )
    starts = {start} if isinstance(start, str) else set(start)
    specs = {e.type: e.spec(starts=e.type in starts, default=correlate) for e in events}
    rows = [w.compile() for w in transitions]
    by_state: dict[str, list[Transition]] = {}
    for row in rows:
        by_state.setdefault(row.source, []).append(row)
    finals = {k: Status(v) for k, v in final.items()}
    states = tuple(dict.fromkeys([INITIAL, *by_state, *(r.target for r in rows), *finals]))
    definition = SagaDefinition(
        name=name,
        state_model=state,
        events=specs,
        transitions={k: tuple(v) for k, v in by_state.items()},
        final=finals,
        states=states,
        kind="machine",
        park_for=park_for,
        slo=dict(slo or {}),
        deviations=deviations,
    )
    check(definition, declared_starts=starts)
    return definition
