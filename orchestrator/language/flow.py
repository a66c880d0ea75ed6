"""Compile a step saga with observed steps or parallel branches into a :class:`Flow`.

A step saga takes this way when a step has no ``send=`` (sagawire observes it:
choreography), when a step names the steps it comes ``after=``, or when the saga
declares what a ``deviations=`` from its flow does. The checks here add what a graph
of steps needs to those of the straight line: the steps named in ``after`` exist, no
cycle (so every step is reachable from a step that starts with the saga), every
observed step has a deadline and nothing to re-send.
"""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import BaseModel

from orchestrator.language.checks import check, raise_problems
from orchestrator.language.definition import INITIAL, EventSpec, SagaDefinition, StepInfo
from orchestrator.language.flowdef import DEVIATION_POLICIES, Flow, FlowStep
from orchestrator.language.parts import Correlate, Event, Send, Step
from orchestrator.language.status import Status

__all__ = ["COMPENSATED", "COMPENSATION_FAILED", "COMPLETED", "compile_flow", "flow_problems"]

COMPLETED = "completed"
COMPENSATED = "compensated"
COMPENSATION_FAILED = "compensation_failed"
RESERVED = {INITIAL, COMPLETED, COMPENSATED, COMPENSATION_FAILED, "compensating"}


def step_info(s: Step, after: tuple[str, ...] = ()) -> StepInfo:
    """What the API and the console show of a step (and the graph is drawn from)."""
    return StepInfo(
        name=s.name,
        command=s.send.type if s.send is not None else None,
        success=tuple(e.type for e in s.successes),
        failure=tuple(e.type for e in s.failures),
        compensation=s.compensate.type if s.compensate else None,
        compensated_by=s.compensated_by.type if s.compensated_by else None,
        timeout=float(s.timeout or 0.0),
        attempts=s.retry.attempts,
        after=after,
    )


def _after(steps: Sequence[Step]) -> dict[str, tuple[str, ...]]:
    """Each step's prerequisites: those it names, else the step declared before it."""
    out: dict[str, tuple[str, ...]] = {}
    for k, step in enumerate(steps):
        if step.after is not None:
            out[step.name] = tuple(step.after)
        else:
            out[step.name] = (steps[k - 1].name,) if k > 0 else ()
    return out


def flow_problems(steps: Sequence[Step], deviations: str) -> list[str]:
    """What a flow of ``steps`` cannot run with, each naming the step and the fix."""
    problems: list[str] = []
    if not steps:
        problems.append("a step saga needs at least one step")
    if deviations not in DEVIATION_POLICIES:
        problems.append(
            f"deviations={deviations!r} is not one of {', '.join(map(repr, DEVIATION_POLICIES))}"
        )
    names = [s.name for s in steps]
    after = _after(steps)
    for step in steps:
        where = f"step {step.name!r}"
        if names.count(step.name) > 1:
            problems.append(f"{where} is declared twice; step names must be unique")
        if step.name in RESERVED or ":" in step.name or "+" in step.name:
            problems.append(f"{where}: the name is reserved or contains ':' or '+'; rename it")
        if not step.successes:
            problems.append(f"{where} has no success event; pass success=Event(...)")
        if step.timeout is None:
            what = "deadline" if step.send is None else "timeout"
            problems.append(f"{where} waits with no {what}: pass timeout=seconds")
        elif step.timeout <= 0:
            problems.append(f"{where}: timeout must be positive, got {step.timeout}")
        if step.send is None and step.retry.attempts != 1:
            problems.append(
                f"{where} is observed (no send=): there is nothing to re-send, drop retry="
            )
        if step.retry.attempts < 1:
            problems.append(f"{where}: retry attempts must be >= 1")
        if (step.compensate is None) != (step.compensated_by is None):
            problems.append(
                f"{where}: compensate=Send(...) and compensated_by=Event(...) go together"
            )
        for pre in after[step.name]:
            if pre == step.name:
                problems.append(f"{where} comes after itself; fix after=")
            elif pre not in names:
                problems.append(f"{where} comes after {pre!r}, which is not a step of this saga")
    cycle = _cycle(after)
    if cycle:
        problems.append(
            "the steps wait for each other in a circle ("
            + " -> ".join(cycle)
            + "), so none of them can ever start: fix after="
        )
    if steps and not any(not after[s.name] for s in steps):
        problems.append("no step starts with the saga: give the first step after=[] or none")
    return problems


def _cycle(after: dict[str, tuple[str, ...]]) -> list[str]:
    """A cycle of prerequisites, as a path that ends where it starts; [] if none."""
    state: dict[str, int] = {}  # 1 on the current path, 2 done
    path: list[str] = []

    def visit(name: str) -> list[str]:
        state[name] = 1
        path.append(name)
        for pre in after.get(name, ()):
            if state.get(pre) == 1:
                return [*path[path.index(pre) :], pre]
            if pre in after and pre not in state:
                found = visit(pre)
                if found:
                    return found
        path.pop()
        state[name] = 2
        return []

    for name in after:
        if name not in state:
            found = visit(name)
            if found:
                return found
    return []


def compile_flow(
    name: str,
    *,
    state: type[BaseModel],
    start: Event,
    steps: Sequence[Step],
    correlate: Correlate,
    on_completed: Send | None,
    on_compensated: Send | None,
    on_compensation_failed: Send | None,
    park_for: float,
    deviations: str,
) -> SagaDefinition:
    """The checked, frozen definition of a flow saga (see the module docstring)."""
    raise_problems(name, flow_problems(steps, deviations))
    events: dict[str, EventSpec] = {start.type: start.spec(starts=True, default=correlate)}
    problems: list[str] = []
    for step in steps:
        replies = [*step.successes, *step.failures]
        if step.compensated_by is not None:
            replies.append(step.compensated_by)
        for ev in replies:
            if ev.type in events:
                problems.append(
                    f"step {step.name!r}: event {ev.type!r} is used twice;"
                    " each event type belongs to one step"
                )
            events[ev.type] = ev.spec(default=correlate)
    raise_problems(name, problems)
    after = _after(steps)
    flow = Flow(
        steps=tuple(
            FlowStep(
                name=s.name,
                send=s.send.spec(attempt_key=s.name) if s.send is not None else None,
                successes=tuple(e.type for e in s.successes),
                failures=tuple(e.type for e in s.failures),
                compensate=(
                    s.compensate.spec(attempt_key=f"undo:{s.name}") if s.compensate else None
                ),
                compensated_by=s.compensated_by.type if s.compensated_by else None,
                timeout=float(s.timeout or 0.0),
                attempts=s.retry.attempts,
                delay=s.retry.delay,
                after=after[s.name],
            )
            for s in steps
        ),
        on_completed=on_completed.spec() if on_completed else None,
        on_compensated=on_compensated.spec() if on_compensated else None,
        on_compensation_failed=on_compensation_failed.spec() if on_compensation_failed else None,
        deviations=deviations,
    )
    finals = {COMPLETED: Status.COMPLETED, COMPENSATED: Status.COMPENSATED}
    if any(s.compensate is not None for s in steps):
        finals[COMPENSATION_FAILED] = Status.COMPENSATION_FAILED
    states = [INITIAL, *(s.name for s in steps), "compensating"]
    states += [f"compensating:{s.name}" for s in steps if s.compensate is not None]
    states += list(finals)
    definition = SagaDefinition(
        name=name,
        state_model=state,
        events=events,
        transitions={},
        final=finals,
        states=tuple(states),
        kind="flow",
        steps=tuple(step_info(s, after[s.name]) for s in steps),
        park_for=park_for,
        slo={s.name: s.slo for s in steps if s.slo is not None},
        flow=flow,
        deviations=deviations,
    )
    check(definition, declared_starts={start.type})
    return definition
