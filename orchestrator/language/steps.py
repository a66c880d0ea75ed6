"""The step form: :func:`StepSaga`, compiled into a state machine definition.

Step *k* is a state named after the step. Entering it sends the step's command
(a counted attempt) and sets ``<step>.timeout``. In it:

* a success reply goes to step *k+1* (or ``completed``, sending ``on_completed``);
* a failure reply records the reason and starts compensating;
* ``<step>.timeout`` with attempts left sets ``<step>.retry`` (the backoff); when
  that fires the command is sent again: the same command, with the same ``id`` and
  ``attempt`` + 1 (its attempt key is the step's name; see
  :func:`~orchestrator.engine.decide.command_id`);
* ``<step>.timeout`` with no attempts left records the timeout and compensates.

Compensating runs the compensations of the completed steps in reverse order,
each in a state ``compensating:<step>`` waiting for its acknowledgement, with
the same timeout and retry policy (attempt key ``undo:<step>``). All acknowledged:
``compensated`` (sending ``on_compensated``). A compensation out of attempts:
``compensation_failed``.

A command's id is derived from its instance and attempt key, so each key must name
one logical command per instance: no row leads back to a step or a compensation once
left (each is waited on once, its retries included), and step names are unique and
free of ``:``, so no two keys meet.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel

from orchestrator.language.checks import check, raise_problems
from orchestrator.language.definition import (
    INITIAL,
    Action,
    CancelTimer,
    Context,
    EventSpec,
    SagaDefinition,
    SendSpec,
    SetFailure,
    SetTimer,
    Transition,
    timer_event,
)
from orchestrator.language.flow import compile_flow, step_info
from orchestrator.language.names import ABORT_EVENT
from orchestrator.language.parts import Correlate, Event, Retry, Send, Step
from orchestrator.language.status import Status

__all__ = ["COMPENSATED", "COMPENSATION_FAILED", "COMPLETED", "StepSaga", "compile_steps"]

COMPLETED = "completed"
COMPENSATED = "compensated"
COMPENSATION_FAILED = "compensation_failed"
RESERVED = {INITIAL, COMPLETED, COMPENSATED, COMPENSATION_FAILED}


def _undo(name: str) -> str:
    return f"compensating:{name}"


_ABORT = Event(ABORT_EVENT)


def _failure_reason(ctx: Context) -> str:
    event = ctx.event
    reason: Any = event.get("reason") if isinstance(event, dict) else getattr(event, "reason", None)
    return str(reason) if reason else ctx.envelope.type


class _Compiler:
    def __init__(
        self,
        steps: Sequence[Step],
        on_compensated: Send | None,
        on_completed: Send | None,
        on_compensation_failed: Send | None,
    ) -> None:
        self.steps = steps
        self.on_compensated = on_compensated
        self.on_completed = on_completed
        self.on_compensation_failed = on_compensation_failed
        self.rows: list[Transition] = []

    def enter_step(self, k: int) -> tuple[tuple[Action, ...], str]:
        if k >= len(self.steps):
            sends = (self.on_completed.spec(),) if self.on_completed else ()
            return sends, COMPLETED
        step = self.steps[k]
        assert step.send is not None, "the straight line commands every step"
        return (
            step.send.spec(attempt_key=step.name),
            SetTimer(f"{step.name}.timeout", step.timeout or 0.0),
        ), step.name

    def enter_compensation(self, below: int) -> tuple[tuple[Action, ...], str]:
        """Start the compensation of the last completed step before index ``below``."""
        for j in range(below - 1, -1, -1):
            step = self.steps[j]
            if step.compensate is not None:
                key = f"undo:{step.name}"
                return (
                    step.compensate.spec(attempt_key=key),
                    SetTimer(f"{key}.timeout", step.timeout or 0.0),
                ), _undo(step.name)
        sends = (self.on_compensated.spec(),) if self.on_compensated else ()
        return sends, COMPENSATED

    def waiting(
        self,
        state: str,
        key: str,
        send: SendSpec,
        retry: Retry,
        timeout: float,
        exhausted: tuple[tuple[Action, ...], str],
        exhausted_reason: str | None,
    ) -> None:
        """The timeout/retry rows of a state waiting for the reply to ``send``."""
        attempts = retry.attempts

        def attempts_left(ctx: Context) -> bool:
            return ctx.attempt(key) < attempts

        def backoff(ctx: Context) -> float:
            return retry.delay(ctx.attempt(key))

        timeout_ev, retry_ev = timer_event(f"{key}.timeout"), timer_event(f"{key}.retry")
        self.rows.append(
            Transition(
                state,
                timeout_ev,
                state,
                guard=attempts_left,
                guard_desc=f"attempts < {attempts}",
                actions=(SetTimer(f"{key}.retry", backoff),),
            )
        )
        actions, target = exhausted
        pre: tuple[Action, ...] = ()
        if exhausted_reason is not None:
            text = exhausted_reason
            pre = (SetFailure(lambda ctx: text),)
        self.rows.append(
            Transition(
                state,
                timeout_ev,
                target,
                guard_desc=f"attempts = {attempts}",
                actions=(*pre, *actions),
            )
        )
        self.rows.append(
            Transition(state, retry_ev, state, actions=(send, SetTimer(f"{key}.timeout", timeout)))
        )

    def compile(self) -> list[Transition]:
        first_actions, first = self.enter_step(0)
        self.rows.append(Transition(INITIAL, "", first, actions=first_actions))  # event set later
        for k, step in enumerate(self.steps):
            cancel = (CancelTimer(f"{step.name}.timeout"), CancelTimer(f"{step.name}.retry"))
            actions, target = self.enter_step(k + 1)
            for ev in step.successes:
                self.rows.append(
                    Transition(step.name, ev.type, target, actions=(*cancel, *actions))
                )
            comp_actions, comp_target = self.enter_compensation(k)
            for ev in (*step.failures, _ABORT):  # an operator's abort compensates as a failure
                self.rows.append(
                    Transition(
                        step.name,
                        ev.type,
                        comp_target,
                        actions=(*cancel, SetFailure(_failure_reason), *comp_actions),
                    )
                )
            tries = step.retry.attempts
            assert step.send is not None, "the straight line commands every step"
            self.waiting(
                step.name,
                step.name,
                step.send.spec(attempt_key=step.name),
                step.retry,
                step.timeout or 0.0,
                (comp_actions, comp_target),
                f"step {step.name!r} timed out after {tries} attempt(s)",
            )
            if step.compensate is not None and step.compensated_by is not None:
                key = f"undo:{step.name}"
                state = _undo(step.name)
                undo_cancel = (CancelTimer(f"{key}.timeout"), CancelTimer(f"{key}.retry"))
                next_actions, next_target = self.enter_compensation(k)
                self.rows.append(
                    Transition(
                        state,
                        step.compensated_by.type,
                        next_target,
                        actions=(*undo_cancel, *next_actions),
                    )
                )
                failed = (
                    (self.on_compensation_failed.spec(),) if self.on_compensation_failed else ()
                )
                self.waiting(
                    state,
                    key,
                    step.compensate.spec(attempt_key=key),
                    step.retry,
                    step.timeout or 0.0,
                    (failed, COMPENSATION_FAILED),
                    None,
                )
        return self.rows


def _step_problems(steps: Sequence[Step]) -> list[str]:
    problems: list[str] = []
    seen: set[str] = set()
    if not steps:
        problems.append("a step saga needs at least one step")
    for step in steps:
        where = f"step {step.name!r}"
        if step.name in seen:
            problems.append(f"{where} is declared twice; step names must be unique")
        seen.add(step.name)
        if step.name in RESERVED or ":" in step.name:
            problems.append(f"{where}: the name is reserved or contains ':'; rename the step")
        if not step.successes:
            problems.append(f"{where} has no success event; pass success=Event(...)")
        if not step.failures and step.timeout is None:
            problems.append(
                f"{where} has no failure path: pass failure=Event(...) and/or timeout=seconds"
            )
        if step.timeout is None:
            problems.append(f"{where} waits with no timeout: pass timeout=seconds")
        elif step.timeout <= 0:
            problems.append(f"{where}: timeout must be positive, got {step.timeout}")
        if step.retry.attempts < 1:
            problems.append(f"{where}: retry attempts must be >= 1")
        if (step.compensate is None) != (step.compensated_by is None):
            problems.append(
                f"{where}: compensate=Send(...) and compensated_by=Event(...) go together"
            )
    return problems


def compile_steps(
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
    deviations: str | None = None,
) -> SagaDefinition:
    """The definition of a step saga: state-machine rows when sagawire commands every
    step, one after the other; a :class:`~orchestrator.language.flowdef.Flow` when a
    step is observed, a step names the steps it comes ``after``, or the saga declares
    what a deviation from its flow does."""
    if deviations is not None or any(s.send is None or s.after is not None for s in steps):
        return compile_flow(
            name,
            state=state,
            start=start,
            steps=steps,
            correlate=correlate,
            on_completed=on_completed,
            on_compensated=on_compensated,
            on_compensation_failed=on_compensation_failed,
            park_for=park_for,
            deviations=deviations or "record",
        )
    raise_problems(name, _step_problems(steps))
    events: dict[str, EventSpec] = {start.type: start.spec(starts=True, default=correlate)}
    for step in steps:
        replies = [*step.successes, *step.failures]
        if step.compensated_by is not None:
            replies.append(step.compensated_by)
        for ev in replies:
            if ev.type in events:
                raise_problems(
                    name,
                    [
                        f"step {step.name!r}: event {ev.type!r} is used twice;"
                        " each reply type belongs to one step"
                    ],
                )
            events[ev.type] = ev.spec(default=correlate)
    rows = _Compiler(steps, on_compensated, on_completed, on_compensation_failed).compile()
    head = rows[0]
    rows[0] = Transition(INITIAL, start.type, head.target, actions=head.actions)
    by_state: dict[str, list[Transition]] = {}
    for row in rows:
        by_state.setdefault(row.source, []).append(row)
    finals = {
        COMPLETED: Status.COMPLETED,
        COMPENSATED: Status.COMPENSATED,
        COMPENSATION_FAILED: Status.COMPENSATION_FAILED,
    }
    states = [INITIAL, *(s.name for s in steps), COMPLETED]
    states += [_undo(s.name) for s in steps if s.compensate is not None]
    states += [COMPENSATED]
    if any(s.compensate is not None for s in steps):
        states.append(COMPENSATION_FAILED)
    reachable_finals = {r.target for r in rows} & set(finals)
    definition = SagaDefinition(
        name=name,
        state_model=state,
        events=events,
        transitions={k: tuple(v) for k, v in by_state.items()},
        final={k: v for k, v in finals.items() if k in reachable_finals},
        states=tuple(s for s in states if s in reachable_finals or s not in finals),
        kind="steps",
        steps=tuple(step_info(s) for s in steps),
        park_for=park_for,
        slo={s.name: s.slo for s in steps if s.slo is not None},
    )
    check(definition, declared_starts={start.type})
    return definition


def StepSaga(
    name: str,
    *,
    state: type[BaseModel],
    start: Event,
    steps: Sequence[Step],
    correlate: Correlate = None,
    on_completed: Send | None = None,
    on_compensated: Send | None = None,
    on_compensation_failed: Send | None = None,
    park_for: float = 60.0,
    deviations: str | None = None,
) -> SagaDefinition:
    """Declare a step saga: each step sends a command and waits for a success or
    failure reply (or, without ``send=``, waits for another service's event within
    its deadline); on failure or timeout of a step, the compensations of the steps
    done run in reverse order. ``deviations`` (``"record"``, the default for a saga
    that observes, or ``"fail"``) says what an event that breaks the declared flow
    does; ``park_for`` is how long an early event waits for its step."""
    return compile_steps(
        name,
        state=state,
        start=start,
        steps=steps,
        correlate=correlate,
        on_completed=on_completed,
        on_compensated=on_compensated,
        on_compensation_failed=on_compensation_failed,
        park_for=park_for,
        deviations=deviations,
    )
