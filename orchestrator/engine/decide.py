"""Step 3: the pure transition. ``decide(saga, instance, event, now) -> Decision``.

No I/O, no clock, no randomness: what it sends gets ids derived from its inputs
(:mod:`orchestrator.engine.sending`), so replaying the same input yields the same
output, byte for byte. A saga declared as rows is decided here; one declared as a
flow of observed or parallel steps by :mod:`orchestrator.engine.flow`. Exceptions
raised by user code (guards, updates, payload builders) become a ``reject``
decision naming the saga, state and event: nothing is half-applied.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ValidationError

from orchestrator.engine.correlate import Routed
from orchestrator.engine.flow import decide_flow, deviation
from orchestrator.engine.model import Decision, Instance, Message, TimerChange
from orchestrator.engine.operate import ABORT_EVENT, OPERATOR_EVENTS, operate
from orchestrator.engine.sending import command_id, message, message_id, when
from orchestrator.language.assign import shared
from orchestrator.language.definition import (
    DEVIATION_EVENT,
    INITIAL,
    TIMER_PREFIX,
    CancelTimer,
    Context,
    SagaDefinition,
    SendSpec,
    SetFailure,
    SetTimer,
    Transition,
)
from orchestrator.language.statedata import state_dict, state_from_dict
from orchestrator.language.status import Meta, Status
from schemas.codec import describe_validation_error

__all__ = ["ABORT_EVENT", "apply_rows", "decide"]

_FIELDS: dict[type[BaseModel], tuple[str, ...]] = {}


def _field_names(cls: type[BaseModel]) -> tuple[str, ...]:
    names = _FIELDS.get(cls)
    if names is None:
        names = _FIELDS[cls] = tuple(cls.model_fields)
    return names


def _merge(model: type[BaseModel], state: BaseModel | None, payload: Any) -> BaseModel:
    """``state`` with the same-named fields of ``payload`` copied in (a new state from
    ``payload`` alone when ``state`` is None)."""
    if isinstance(payload, BaseModel):
        names, same = shared(type(payload), model)
        if state is not None and same:
            values = payload.__dict__
            return _copy_with(state, {k: values[k] for k in names}) if names else state
        values = payload.__dict__  # its fields as validated (model_dump would leave out
        incoming = {k: _plain(values[k]) for k in names}  # those marked exclude=True)
    elif isinstance(payload, dict):
        fields = _field_names(model)
        incoming = {k: v for k, v in payload.items() if k in fields}
    else:
        incoming = {}
    if state is not None and not incoming:
        return state
    base = state_dict(state) if state is not None else {}
    base.update(incoming)
    return state_from_dict(model, base)


def _plain(value: Any) -> Any:
    """A payload's field value as data the state model validates: nested models dumped
    (by field name, as statedata writes them), everything else as it is."""
    if isinstance(value, BaseModel):
        return state_dict(value)
    if isinstance(value, list):
        return [state_dict(x) if isinstance(x, BaseModel) else x for x in value]
    return value


def _copy_with(state: BaseModel, update: dict[str, Any]) -> BaseModel:
    """``state.model_copy(update=update)`` (no validation, as there) for the plain case of a
    model without extra or private attributes, built in one step: this runs once per event
    and ``model_copy`` costs several times more (a generic ``__copy__``, then an update)."""
    if state.__pydantic_extra__ is not None or state.__pydantic_private__ is not None:
        return state.model_copy(update=update)
    new = state.__class__.__new__(state.__class__)
    _set = object.__setattr__
    _set(new, "__dict__", {**state.__dict__, **update})
    _set(new, "__pydantic_fields_set__", state.__pydantic_fields_set__ | update.keys())
    _set(new, "__pydantic_extra__", None)
    _set(new, "__pydantic_private__", None)
    return new


def decide(
    saga: SagaDefinition,
    instance: Instance | None,
    event: Routed,
    now: float,
    *,
    late: bool = False,
) -> Decision:
    """Apply ``event`` to ``instance`` (None when none exists yet). ``late``: the event
    was parked and its grace period ended; a saga that tracks deviations records it as
    one (see :mod:`orchestrator.engine.flow`), where another would dead-letter it."""
    env = event.envelope
    is_timer = env.type.startswith(TIMER_PREFIX)
    if instance is None:
        if is_timer:
            return Decision("ignore", reason="timer for an instance that does not exist")
        if event.spec is None or not event.spec.starts:
            if late:  # its grace period is over, and there is still nothing to record it on
                return Decision(
                    "reject",
                    reason=f"saga {saga.name!r}: no instance {event.correlation_id!r} began"
                    f" within {saga.park_for:g}s of {env.type} {env.id}",
                )
            return Decision(
                "park", reason=f"no {saga.name!r} instance {event.correlation_id!r} yet"
            )
        try:
            data = _merge(saga.state_model, None, event.payload)
        except ValidationError as exc:
            return Decision(
                "reject",
                reason=f"saga {saga.name!r}: cannot build state from"
                f" {env.type} {env.id}: " + describe_validation_error(exc, "state"),
            )
        instance = Instance(
            saga.name, event.correlation_id, INITIAL, Status.RUNNING, 0, data, Meta(), now, now
        )
    elif instance.status.final:
        if env.type in OPERATOR_EVENTS:  # resume, or a refusal naming the status
            return operate(saga, instance, event, now, apply_rows)
        if is_timer:
            return Decision("ignore", reason="timer for a finished instance")
        if saga.deviations is not None and (event.spec is None or not event.spec.starts):
            ended = f"arrived after the saga ended ({instance.status.value})"
            return deviation(instance, event, now, "late", ended)
        return Decision(
            "reject",
            reason=f"saga {saga.name!r} instance {instance.correlation_id!r}"
            f" is already {instance.status.value}; {env.type} {env.id} arrived after"
            " it finished",
        )
    if env.type in OPERATOR_EVENTS:
        return operate(saga, instance, event, now, apply_rows)
    if saga.flow is not None:
        current = instance
        try:
            return decide_flow(
                saga, saga.flow, current, event, now, lambda: _merged(saga, current, event),
                late=late,
            )  # fmt: skip
        except Exception as exc:  # user code failed: reject the event, as below
            return _failed(saga, instance, event, exc)
    rows = saga.candidates(instance.state, env.type)
    if not rows:
        if is_timer:
            return Decision("ignore", reason=f"timer not handled in state {instance.state!r}")
        if event.spec is not None and event.spec.starts:
            return Decision(
                "reject",
                reason=f"saga {saga.name!r} instance"
                f" {instance.correlation_id!r} already exists (state"
                f" {instance.state!r}); duplicate start {env.type} {env.id}",
            )
        if late and saga.deviations is not None:
            return _deviating(saga, instance, event, now)
        return Decision("park", reason=f"{env.type} is not accepted in state {instance.state!r}")
    try:
        return apply_rows(saga, instance, event, rows, now)
    except Exception as exc:  # user code failed: reject the event, keep the instance as it was
        return _failed(saga, instance, event, exc)


def _failed(saga: SagaDefinition, instance: Instance, event: Routed, exc: Exception) -> Decision:
    """User code failed on ``event``: it is rejected, the instance stays as it was."""
    env = event.envelope
    detail = (
        describe_validation_error(exc, "field")
        if isinstance(exc, ValidationError)
        else f"{type(exc).__name__}: {exc}"
    )
    return Decision(
        "reject",
        reason=f"saga {saga.name!r} failed in state {instance.state!r}"
        f" on {env.type} {env.id}: {detail}",
    )


def _merged(saga: SagaDefinition, instance: Instance, event: Routed) -> BaseModel:
    """The state with ``event``'s data merged in, if its declaration merges."""
    if event.spec is not None and event.spec.merge:
        return _merge(saga.state_model, instance.data, event.payload)
    return instance.data


def _deviating(saga: SagaDefinition, instance: Instance, event: Routed, now: float) -> Decision:
    """A state machine's event that its state never took within the grace period: a
    deviation, recorded; under the ``fail`` policy, the state's ``Deviation()`` rows
    run (the event's data is not merged: it broke the flow)."""
    env = event.envelope
    detail = f"not accepted in state {instance.state!r} within {saga.park_for:g}s"
    rows = saga.candidates(instance.state, DEVIATION_EVENT) if saga.deviations == "fail" else ()
    if not rows:
        return deviation(instance, event, now, "unexpected", detail)
    plain = Routed(event.saga, None, env, event.correlation_id, event.payload)
    try:
        decided = apply_rows(saga, instance, plain, rows, now)
    except Exception as exc:
        return _failed(saga, instance, event, exc)
    decided.deviation = f"unexpected: {env.type} {env.id} {detail}"
    return decided


def apply_rows(
    saga: SagaDefinition,
    instance: Instance,
    event: Routed,
    rows: tuple[Transition, ...],
    now: float,
) -> Decision:
    """The transition of ``instance`` by ``event`` along the first of ``rows`` whose guard
    holds: the row's actions, in order, make the messages, timers and bookkeeping.

    One :class:`Context` serves the whole event and is updated in place: user code never
    holds it (the DSL's wrappers pass it only ``state`` and ``event``), and a copy per
    change cost more than the rest of a transition's bookkeeping. ``Meta`` is copied
    once, on its first change, never mutated where the stored instance shares it."""
    env = event.envelope
    cid = instance.correlation_id
    meta = instance.meta
    data = instance.data
    if event.spec is not None and event.spec.merge and instance.version > 0:
        data = _merge(saga.state_model, data, event.payload)
    at = when(now)
    ctx = Context(data, event.payload, env, cid, meta, at)
    row: Transition | None = None
    for candidate in rows:
        update, guard = candidate.update, candidate.guard
        if update is not None:
            ctx.state = update(ctx)
        if guard is None or guard(ctx):
            row = candidate
            break
        ctx.state = data  # the next row is tried on the state as it was
    if row is None:
        return Decision(
            "reject", reason=f"no guard held for {env.type} in state {instance.state!r}"
        )
    messages: list[Message] = []
    timers: list[TimerChange] = []
    known = meta.timers is not None
    live = set(meta.timers) if meta.timers else set()
    copied = False  # meta is still the stored instance's: copy before changing it
    if env.type.startswith(TIMER_PREFIX):
        live.discard(env.type[len(TIMER_PREFIX) :])  # it fired: the engine deletes its row
    for action in row.actions:
        if isinstance(action, SendSpec):
            send = action
            if send.condition is not None and not send.condition(ctx):
                continue
            key = send.attempt_key
            if key is None:
                attempt = None
                mid = message_id(env.id, saga.name, len(messages))
            else:  # one command however often sent: the same id, the next attempt
                if not copied:
                    meta = ctx.meta = Meta(dict(meta.attempts), meta.failure, meta.timers)
                    copied = True
                attempt = meta.attempts.get(key, 0) + 1
                meta.attempts[key] = attempt
                mid = command_id(saga.name, key, cid)
            messages.append(message(send, ctx, saga.name, mid, attempt, at))
        elif isinstance(action, SetTimer):
            after = action.after
            seconds = after(ctx) if callable(after) else after
            timers.append(TimerChange(action.name, now + float(seconds)))
            live.add(action.name)
        elif isinstance(action, CancelTimer):
            name = action.name
            if name in live or not known:
                timers.append(TimerChange(name, None))
            live.discard(name)
        elif isinstance(action, SetFailure):
            if not copied:
                meta = ctx.meta = Meta(dict(meta.attempts), meta.failure, meta.timers)
                copied = True
            meta.failure = action.reason(ctx)
    status = saga.final.get(row.target, Status.RUNNING)
    if status.final:
        cancelled = {t.name for t in timers if t.due is None}
        timers = [t for t in timers if t.due is None]
        remaining = live if known else set(saga.timer_names)
        timers += [TimerChange(name, None) for name in sorted(remaining - cancelled)]
        live = set()
    timer_names = tuple(sorted(live))
    if copied:
        meta.timers = timer_names
    else:
        meta = Meta(meta.attempts, meta.failure, timer_names)
    new = _next(instance, row.target, status, ctx.state, meta, now)
    return Decision("applied", new, instance.state, tuple(messages), tuple(timers))


def _next(
    instance: Instance, state: str, status: Status, data: BaseModel, meta: Meta, now: float
) -> Instance:
    """The instance after a transition: the next version (what the store will hold once
    the unit of work commits; ``version`` 0 means "not stored yet")."""
    return Instance(
        instance.saga,
        instance.correlation_id,
        state,
        status,
        instance.version + 1,
        data,
        meta,
        instance.created_at,
        now,
    )
