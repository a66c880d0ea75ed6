"""An operator's actions on one instance, decided like any event: abort, retry, resume.

The admin API asks the engine (:mod:`orchestrator.engine.operator`) to apply an
action; the engine routes it to the instance as a synthetic event (``sagawire.abort``,
``sagawire.retry``, ``sagawire.resume``; its ``data`` carries ``reason``, ``by`` and,
for abort, ``compensate``) so that it is serialised with the instance's other events,
versioned, committed with its history entry and its commands through the outbox, and
conflicts with another replica like any event. Pure, as :func:`decide` is.

What each does:

- **abort** with ``compensate``: fail the instance now and run the compensations of
  the steps done, in reverse order. A step saga has a row for it in every step
  (:mod:`orchestrator.language.steps`), a flow fails (:func:`abort_flow`); a state
  machine needs rows on :data:`ABORT_EVENT` in its state (``When(state,
  ABORT_EVENT)``), or the abort is refused with the reason. Without
  ``compensate``: stop where it is (``aborted``, timers cancelled, nothing sent).
- **retry**: send the current step's command again as its next attempt (or the
  current compensation's, while compensating), its timeout set again. A state
  machine retries through its ``<key>.retry`` timer rows, which the step form writes
  for every step and compensation.
- **resume** a ``compensation_failed`` instance once its cause is fixed: the failed
  compensation is tried again with its attempts counted afresh, and compensating goes
  on from there.

:func:`refusal` says, before anything is routed, why an action does not apply to an
instance (the API's 409); ``decide`` asks it again on the instance as loaded for the
decision, since another replica may have moved it meanwhile.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from orchestrator.engine.correlate import Routed
from orchestrator.engine.flow import operate_flow
from orchestrator.engine.model import Decision, Instance, TimerChange
from orchestrator.language.definition import TIMER_PREFIX, SagaDefinition, Transition
from orchestrator.language.names import ABORT_EVENT
from orchestrator.language.status import Meta, Status

__all__ = [
    "ABORT_EVENT",
    "ACTIONS",
    "OPERATOR_EVENTS",
    "RESUME_EVENT",
    "RETRY_EVENT",
    "operate",
    "refusal",
    "retry_key",
]

RETRY_EVENT = "sagawire.retry"
RESUME_EVENT = "sagawire.resume"
ACTIONS = {"abort": ABORT_EVENT, "retry": RETRY_EVENT, "resume": RESUME_EVENT}
OPERATOR_EVENTS = frozenset(ACTIONS.values())


def retry_key(saga: SagaDefinition, state: str) -> str | None:
    """The attempt key whose ``<key>.retry`` timer row ``state`` has (a step's name, or
    ``undo:<step>`` while compensating it); None if the state retries nothing."""
    for row in saga.transitions.get(state, ()):
        event = row.event
        if event.startswith(TIMER_PREFIX) and event.endswith(".retry"):
            return event[len(TIMER_PREFIX) : -len(".retry")]
    return None


def refusal(
    saga: SagaDefinition, instance: Instance, action: str, *, compensate: bool = True
) -> str | None:
    """Why ``action`` does not apply to ``instance`` now (None: it does)."""
    status, state, name = instance.status, instance.state, saga.name
    where = f"{name!r} instance {instance.correlation_id!r}"
    if action == "resume":
        if status is not Status.COMPENSATION_FAILED:
            return f"{where} is {status.value}: only a compensation_failed instance resumes"
        return None
    if status.final:
        hint = " (resume it)" if status is Status.COMPENSATION_FAILED else ""
        return f"{where} is already {status.value}{hint}"
    if action == "abort":
        if compensate and saga.flow is None and not saga.candidates(state, ABORT_EVENT):
            return (
                f"{where}: state {state!r} declares no compensation on abort (a row on"
                f" {ABORT_EVENT}); abort with compensate=false to stop it where it is"
            )
        return None
    if saga.flow is not None:
        steps = instance.meta.steps
        if not any(s in ("active", "undoing") for s in steps.values()):
            return f"{where}: no step is waiting in state {state!r}, nothing to retry"
        return None
    if retry_key(saga, state) is None:
        return f"{where}: state {state!r} sends no command to retry"
    return None


ApplyRows = Callable[[SagaDefinition, Instance, Routed, tuple[Transition, ...], float], Decision]
""":func:`orchestrator.engine.decide.apply_rows`, handed in: decide imports this module."""


def operate(
    saga: SagaDefinition, instance: Instance, event: Routed, now: float, apply_rows: ApplyRows
) -> Decision:
    """Apply the operator's ``event`` to ``instance``; ``apply_rows`` runs a state
    machine's rows."""
    env = event.envelope
    action = env.type.rpartition(".")[2]
    data: dict[str, Any] = env.data if isinstance(env.data, dict) else {}
    reason = str(data.get("reason") or f"{action} by an operator")
    by = str(data.get("by") or "operator")
    compensate = bool(data.get("compensate", True))
    resume_to = str(data.get("state") or "")
    why = refusal(saga, instance, action, compensate=compensate)
    resumes_rows = why is None and action == "resume" and saga.flow is None
    if resumes_rows and (not resume_to or retry_key(saga, resume_to) is None):
        # the state it failed in, read from its history by the engine
        why = f"the state its compensation failed in ({resume_to or '?'!r}) retries nothing"
    if why is not None:
        return Decision("ignore", reason=why)
    note = f"operator {action} by {by}: {reason}"
    if action == "abort" and not compensate:
        decided = _stop(saga, instance, reason, now)
    elif saga.flow is not None:
        decided = operate_flow(saga, saga.flow, instance, event, now, action, reason)
    elif action == "abort":
        rows = saga.candidates(instance.state, ABORT_EVENT)
        decided = apply_rows(saga, instance, event, rows, now)
    else:
        state = resume_to if action == "resume" else instance.state
        key = retry_key(saga, state)
        assert key is not None, "refusal() checked it"
        meta = instance.meta
        if action == "resume":  # its attempts counted afresh: the cause is fixed
            attempts = {k: v for k, v in meta.attempts.items() if k != key}
            meta = Meta(attempts, meta.failure, meta.timers, dict(meta.steps), meta.done)
        start = Instance(
            instance.saga, instance.correlation_id, state, Status.RUNNING, instance.version,
            instance.data, meta, instance.created_at, instance.updated_at,
        )  # fmt: skip
        timer = TIMER_PREFIX + f"{key}.retry"
        rows = saga.candidates(state, timer)
        decided = apply_rows(saga, start, event, rows, now)
        decided.from_state = instance.state
    decided.note = note
    return decided


def _stop(saga: SagaDefinition, instance: Instance, reason: str, now: float) -> Decision:
    """Abort without compensating: ``aborted`` where it stands, every timer cancelled."""
    live = saga.timer_names if instance.meta.timers is None else instance.meta.timers
    old = instance.meta
    meta = Meta(old.attempts, reason, (), dict(old.steps), old.done)
    new = Instance(
        instance.saga, instance.correlation_id, "aborted", Status.ABORTED, instance.version + 1,
        instance.data, meta, instance.created_at, now,
    )  # fmt: skip
    timers = tuple(TimerChange(name, None) for name in sorted(live))
    return Decision("applied", new, from_state=instance.state, timers=timers)
