"""The parts both declaration forms are made of: events, commands, retries, steps, rows.

:class:`~orchestrator.language.steps.StepSaga` and
:class:`~orchestrator.language.machine.StateMachine` put these together.

Both read like a table. A step saga::

    StepSaga("order", state=OrderState, start=Event("order.placed", OrderPlaced),
             correlate="order_id",
             steps=[Step("inventory",
                         send=Send("inventory.reserve", ReserveInventory),
                         success=Event("inventory.reserved", InventoryReserved),
                         failure=Event("inventory.rejected", InventoryRejected),
                         compensate=Send("inventory.release", ReleaseInventory),
                         compensated_by=Event("inventory.released", InventoryReleased),
                         timeout=30), ...])

A state machine: in state X, on event Y, send Z, go to W::

    When("booking", "flight.booked").to("booking")

Both compile (and are checked, see :mod:`orchestrator.language.checks`) into one frozen
:class:`~orchestrator.language.definition.SagaDefinition` when the module is imported.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import KW_ONLY, dataclass, field, replace
from typing import Any

from pydantic import BaseModel

from orchestrator.language.assign import copies_from
from orchestrator.language.definition import (
    DEVIATION_EVENT,
    INITIAL,
    Action,
    CancelTimer,
    Context,
    EventSpec,
    SendSpec,
    SetFailure,
    SetTimer,
    Transition,
    timer_event,
)
from orchestrator.language.statedata import state_dict, state_from_dict
from schemas.errors import DefinitionError
from schemas.plain import Plain

ModelType = type[BaseModel]
"""A pydantic model class (an alias: dataclasses below have a field named ``type``)."""

__all__ = [
    "INITIAL",
    "Correlate",
    "Deviation",
    "Event",
    "Plain",
    "Retry",
    "Send",
    "Step",
    "Timeout",
    "When",
    "build_from_state",
]

Correlate = str | Callable[[Any], str | None] | None


@dataclass(frozen=True)
class Event:
    """An event the saga consumes. ``model`` validates its ``data`` (a mismatch is
    dead-lettered, never half-applied). ``correlate`` is the fallback when the
    ``correlationid`` attribute is absent: a field name of ``data`` or a function
    of the (validated) data. ``merge`` copies same-named data fields into the state,
    which must accept them under its own rules (constraints, validators); if it does
    not, the event is dead-lettered and the instance stays as it was.

    ``plain`` takes the event from services that publish no CloudEvents at all: a bare
    JSON body on the destination named ``type``. ``plain=True`` (or ``Plain()``): its id
    is a hash of destination and body; ``Plain(id_header="x-request-id",
    correlation_header=...)`` reads them from headers (:mod:`schemas.plain`). Its
    correlation comes from ``correlate`` (or the saga's), unless ``correlation_header``
    is given. CloudEvents (structured or binary) on that destination are still read as
    such."""

    type: str
    model: ModelType | None = None
    correlate: Correlate = None
    merge: bool = True
    _: KW_ONLY
    plain: Plain | bool = False

    def spec(self, *, starts: bool = False, default: Correlate = None) -> EventSpec:
        how = self.correlate if self.correlate is not None else default
        fn, desc = _correlator(how)
        plain = Plain() if self.plain is True else self.plain or None
        if plain is not None and fn is None and plain.correlation_header is None:
            raise DefinitionError(
                f"Event({self.type!r}, plain=...) has no correlation: a plain JSON event"
                " carries no correlationid attribute; give it correlate='<data field>'"
                " (on the Event or the saga) or Plain(correlation_header='<header>')"
            )
        if plain is not None and plain.correlation_header is not None:
            where = f"correlationid attribute (header {plain.correlation_header!r} if plain)"
            desc = desc.replace("correlationid attribute", where, 1)
        return EventSpec(
            type=self.type,
            model=self.model,
            correlate=fn,
            correlate_desc=desc,
            correlate_field=how if isinstance(how, str) else None,
            starts=starts,
            merge=self.merge,
            plain=plain,
        )


def _correlator(how: Correlate) -> tuple[Callable[[Any], str | None] | None, str]:
    if how is None:
        return None, "correlationid attribute"
    if isinstance(how, str):
        name = how

        def by_field(data: Any) -> str | None:
            value = data.get(name) if isinstance(data, dict) else getattr(data, name, None)
            return None if value is None else str(value)

        return by_field, f"correlationid attribute, else data.{name}"
    return how, f"correlationid attribute, else {getattr(how, '__name__', 'function')}()"


def build_from_state(model: type[BaseModel]) -> Callable[[Context], BaseModel]:
    """A payload builder filling ``model``'s fields from same-named state fields,
    then from ``reason`` and ``correlation_id`` of the context."""
    names = tuple(model.model_fields)
    plans: dict[type[BaseModel], tuple[tuple[str, ...], bool, bool]] = {}

    def plan(cls: type[BaseModel]) -> tuple[tuple[str, ...], bool, bool]:
        """Which fields come from a state of ``cls``, and whether ``reason`` and
        ``correlation_id`` come from the context: worked out once per state class."""
        fields = cls.model_fields
        taken = tuple(n for n in names if n in fields)
        reason = "reason" in names and "reason" not in fields
        cid = "correlation_id" in names and "correlation_id" not in fields
        plans[cls] = (taken, reason, cid)
        return plans[cls]

    def build(ctx: Context) -> BaseModel:
        state = ctx.state
        taken, reason, cid = plans.get(type(state)) or plan(type(state))
        held = state.__dict__  # a model's field values, by field name
        values: dict[str, Any] = {n: held[n] for n in taken}
        if reason:
            values["reason"] = ctx.reason
        if cid:
            values["correlation_id"] = ctx.correlation_id
        # model_validate minus its wrapper; looked up per call, as model_rebuild() may
        # replace the validator after this builder was made
        built: BaseModel = model.__pydantic_validator__.validate_python(values, by_name=True)
        return built

    return build


def dump_from_state(model: type[BaseModel]) -> Callable[[Context], Any]:
    """What ``build_from_state(model)`` then ``model_dump(mode="json")`` give, in one step
    where that is the state's own JSON for the command's fields (every field taken from
    the state unchanged: :func:`~orchestrator.language.assign.copies_from`); the two
    steps otherwise. One command per event is built this way, so it is worth the care."""
    build = build_from_state(model)
    Plan = tuple[tuple[str, ...], tuple[str, ...], set[str], bool]
    plans: dict[type[BaseModel], Plan | None] = {}

    def plan(cls: type[BaseModel]) -> Plan | None:
        copies = copies_from(cls, model)
        if copies is None:
            plans[cls] = None
            return None
        names, not_none = copies
        in_order = tuple(n for n in cls.model_fields if n in names) == names
        plans[cls] = (names, not_none, set(names), in_order)
        return plans[cls]

    def dump(ctx: Context) -> Any:
        state = ctx.state
        cls = type(state)
        fast = plans[cls] if cls in plans else plan(cls)
        if fast is not None:
            names, not_none, include, in_order = fast
            held = state.__dict__
            if not not_none or all(held[n] is not None for n in not_none):
                out = state.__pydantic_serializer__.to_python(state, mode="json", include=include)
                return out if in_order else {n: out[n] for n in names}
        built = build(ctx)
        return built.__pydantic_serializer__.to_python(built, mode="json")

    return dump


@dataclass(frozen=True)
class Send:
    """Send message ``type``. Its data is ``build(state)`` if given, else ``model``
    filled from same-named state fields (checked at load time)."""

    type: str
    model: ModelType | None = None
    build: Callable[[Any], Any] | None = None

    def spec(self, attempt_key: str | None = None) -> SendSpec:
        if self.build is not None:
            user = self.build

            def build(ctx: Context) -> Any:
                return user(ctx.state)

            return SendSpec(self.type, build, self.model, attempt_key)
        if self.model is not None:
            return SendSpec(
                self.type,
                build_from_state(self.model),
                self.model,
                attempt_key,
                True,
                dump=dump_from_state(self.model),
            )
        return SendSpec(self.type, lambda ctx: {}, None, attempt_key)


@dataclass(frozen=True)
class Retry:
    """Send a command up to ``attempts`` times; wait ``backoff * multiplier**(n-1)``
    (at most ``max_backoff``) after the n-th timeout before re-sending."""

    attempts: int = 1
    backoff: float = 1.0
    multiplier: float = 2.0
    max_backoff: float = 60.0

    def delay(self, attempt: int) -> float:
        return float(min(self.max_backoff, self.backoff * self.multiplier ** max(0, attempt - 1)))


@dataclass(frozen=True)
class Step:
    """One step of a :class:`StepSaga`.

    With ``send``, sagawire sends the command and waits for its ``success`` or
    ``failure`` reply within ``timeout`` (re-sent per ``retry``). Without it, the step
    is *observed*: another service does it on its own, and sagawire waits for its
    event within ``timeout``, the step's deadline (choreography). ``after`` names the
    steps it follows (default: the step declared before it; ``[]``: it starts with
    the saga), so two steps after the same one run side by side."""

    name: str
    _: KW_ONLY
    success: Event | Sequence[Event]
    send: Send | None = None
    failure: Event | Sequence[Event] = ()
    compensate: Send | None = None
    compensated_by: Event | None = None
    timeout: float | None = None
    retry: Retry = field(default_factory=Retry)
    after: Sequence[str] | None = None
    slo: float | None = None
    """Seconds the step should take at most (its SLO): an instance waiting in it longer
    is *stuck* (``GET /sagas?stuck=true``, the stuck gauge, a log line). None: the
    sidecar's default (``--stuck-after``)."""

    @property
    def successes(self) -> tuple[Event, ...]:
        return _events(self.success)

    @property
    def failures(self) -> tuple[Event, ...]:
        return _events(self.failure)


def _events(value: Event | Sequence[Event]) -> tuple[Event, ...]:
    return (value,) if isinstance(value, Event) else tuple(value)


@dataclass(frozen=True)
class Timeout:
    """The event a timer named ``name`` fires as, for :class:`When`."""

    name: str

    @property
    def type(self) -> str:
        return timer_event(self.name)


@dataclass(frozen=True)
class Deviation:
    """The event, for :class:`When`, of an event that broke the declared flow (not taken
    by its state within ``park_for``), under the saga's ``deviations="fail"`` policy:
    ``When("booking", Deviation()).fail("off script").to("cancelling")``."""

    @property
    def type(self) -> str:
        return DEVIATION_EVENT


class When:
    """One row of a state machine: in ``state``, on ``event`` [if ``guard``] ... go to.

    Rows for the same state and event are tried in order; a row fires when its
    guard holds on the state *as the row's update would leave it* (so a guard
    like "all three legs booked" can count the event being handled).

    Chain ``.update()``, ``.send()``, ``.timer()``, ``.cancel()``, ``.fail()`` and
    end with ``.to(state)``."""

    def __init__(
        self,
        state: str,
        event: str | Timeout | Deviation,
        *,
        guard: Callable[[Any, Any], bool] | None = None,
    ) -> None:
        self.state = state
        self.event = event.type if isinstance(event, Timeout | Deviation) else event
        self._guard = guard
        self._update: Callable[[Any, Any], BaseModel | dict[str, Any]] | None = None
        self._actions: list[Action] = []
        self.target: str | None = None

    def update(self, fn: Callable[[Any, Any], BaseModel | dict[str, Any]]) -> When:
        """``fn(state, event)`` returns the new state, or a dict of fields to change."""
        self._update = fn
        return self

    def send(
        self,
        type: str,
        model: type[BaseModel] | None = None,
        *,
        build: Callable[[Any], Any] | None = None,
        when: Callable[[Any], bool] | None = None,
    ) -> When:
        """Send ``type``; with ``when``, only if ``when(state)`` holds (after the update)."""
        spec = Send(type, model, build).spec()
        if when is not None:
            cond = when
            spec = replace(spec, condition=lambda ctx: bool(cond(ctx.state)))
        self._actions.append(spec)
        return self

    def timer(self, name: str, seconds: float) -> When:
        self._actions.append(SetTimer(name, seconds))
        return self

    def cancel(self, *names: str) -> When:
        self._actions.extend(CancelTimer(n) for n in names)
        return self

    def fail(self, reason: str | Callable[[Any, Any], str]) -> When:
        """Record why the saga is failing (available to payloads as ``reason``)."""
        if isinstance(reason, str):
            text = reason
            self._actions.append(SetFailure(lambda ctx: text))
        else:
            fn = reason
            self._actions.append(SetFailure(lambda ctx: fn(ctx.state, ctx.event)))
        return self

    def to(self, state: str) -> When:
        self.target = state
        return self

    def compile(self) -> Transition:
        from schemas.errors import DefinitionError

        if self.target is None:
            raise DefinitionError(
                f"row When({self.state!r}, {self.event!r}) has no target: end it with .to(state)"
            )
        guard = self._guard
        update = self._update
        return Transition(
            source=self.state,
            event=self.event,
            target=self.target,
            guard=(lambda ctx: bool(guard(ctx.state, ctx.event))) if guard else None,
            guard_desc=getattr(guard, "__name__", "guard") if guard else "",
            update=_wrap_update(update) if update else None,
            actions=tuple(self._actions),
        )


def _wrap_update(
    fn: Callable[[Any, Any], BaseModel | dict[str, Any]],
) -> Callable[[Context], BaseModel]:
    def update(ctx: Context) -> BaseModel:
        out = fn(ctx.state, ctx.event)
        if isinstance(out, BaseModel):
            return out
        return state_from_dict(type(ctx.state), {**state_dict(ctx.state), **out})

    return update
