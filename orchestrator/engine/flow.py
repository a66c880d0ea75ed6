"""The flow interpreter: steps that sagawire commands or only observes, side by side.

A flow saga (:class:`~orchestrator.language.flowdef.Flow`) keeps each step's status in
its instance (``Meta.steps``: absent until the step starts, then ``active``, ``done``,
``failed`` or ``abandoned``, and for a compensation ``undoing``, ``undone``,
``undo_failed``) and the order steps were done in (``Meta.done``). The instance's
``state`` names what it waits for: the active steps joined by ``+`` while it runs,
``compensating:<step>`` while a compensation is out, ``compensating`` while only
steps started before the failure are still out, then a final state.

The rules, per event:

- The start event starts the steps that follow no other (``after=[]`` or the first).
- A step's success event while the step is active: the step is done; every step
  whose prerequisites are now all done starts (a command is sent and its timeout
  set, or an observed step's deadline set). All done: ``completed``, and the
  ``on_completed`` event. Its failure event, a timeout after the last attempt, or a
  missed deadline: the step failed and the flow fails.
- A failing flow first waits for the steps still out when it failed (not asking
  again): one done after all is compensated too (its work happened); one that fails
  or runs out of time has nothing to undo. Then it compensates the steps done, the
  last done first, one at a time (the same retry and timeout as orchestration; a
  compensation out of attempts ends it in ``compensation_failed``). Nothing left to
  undo: ``compensated``, and the ``on_compensated`` event.
- A step's event before its prerequisites are done is parked: the broker may have
  delivered it ahead of the event it follows. Still early when its grace period
  (``park_for``) ends, it is a *deviation*, as is a second, different event for a
  step already done, and any step event after the step or the flow ended. A
  deviation is recorded in the history with its message, counted, and, under the
  ``fail`` policy, fails a running flow. It is never a dead letter.

Pure, like :mod:`orchestrator.engine.decide`: no I/O, no clock.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from pydantic import BaseModel

from orchestrator.engine.correlate import Routed
from orchestrator.engine.model import Decision, Instance, Message, TimerChange
from orchestrator.engine.sending import command_id, message, message_id, when
from orchestrator.language.definition import TIMER_PREFIX, Context, SagaDefinition, SendSpec
from orchestrator.language.flowdef import Flow, FlowStep
from orchestrator.language.status import Meta, Status

__all__ = ["decide_flow", "deviation", "operate_flow"]

COMPLETED = "completed"
COMPENSATED = "compensated"
COMPENSATION_FAILED = "compensation_failed"

_ENDED = ("failed", "abandoned", "undoing", "undone", "undo_failed")
"""Statuses of a step whose part in the flow is over (its work undone or never done)."""


def deviation(instance: Instance, event: Routed, now: float, kind: str, detail: str) -> Decision:
    """An event that breaks the declared flow, recorded and nothing else: the instance
    moves to its next version unchanged, so the history keeps the entry."""
    env = event.envelope
    new = Instance(
        instance.saga,
        instance.correlation_id,
        instance.state,
        instance.status,
        instance.version + 1,
        instance.data,
        instance.meta,
        instance.created_at,
        now,
    )
    return Decision(
        "applied", new, instance.state, deviation=f"{kind}: {env.type} {env.id} {detail}"
    )


def decide_flow(
    saga: SagaDefinition,
    flow: Flow,
    instance: Instance,
    event: Routed,
    now: float,
    merged: Callable[[], BaseModel],
    *,
    late: bool = False,
) -> Decision:
    """Apply ``event`` to a running flow ``instance`` (version 0: being started).
    ``merged()`` is the state with the event's data merged in, taken only if the event
    moves the flow (a deviation changes nothing)."""
    run = _Run(saga, flow, instance, event, now)
    etype = event.envelope.type
    if instance.version == 0:
        run.start()
    elif etype.startswith(TIMER_PREFIX):
        if not run.timer(etype[len(TIMER_PREFIX) :]):
            return Decision("ignore", reason=f"timer {etype} not waited for")
    elif etype in flow.by_success or etype in flow.by_failure:
        step = flow.by_success.get(etype) or flow.by_failure[etype]
        ok = etype in flow.by_success
        run.merged = merged
        outcome = run.step_event(flow.index[step], ok, late)
        if outcome is not None:
            return outcome
    elif etype in flow.by_undone:
        outcome = run.undone(flow.index[flow.by_undone[etype]])
        if outcome is not None:
            return outcome
    elif event.spec is not None and event.spec.starts:
        return Decision(
            "reject",
            reason=f"saga {saga.name!r} instance {instance.correlation_id!r} already exists"
            f" (state {instance.state!r}); duplicate start {etype} {event.envelope.id}",
        )
    else:
        return Decision("ignore", reason=f"{etype} is no event of this flow")
    return run.decision()


def operate_flow(
    saga: SagaDefinition,
    flow: Flow,
    instance: Instance,
    event: Routed,
    now: float,
    action: str,
    reason: str,
) -> Decision:
    """An operator's action on a flow (:mod:`orchestrator.engine.operate` checked that it
    applies): ``abort`` fails it now, a step still out abandoned (its late outcome is then
    a deviation), and compensates what was done; ``retry`` sends each step waited on
    (and each compensation) again as its next attempt; ``resume`` tries each failed
    compensation again, its attempts counted afresh, and goes on compensating."""
    run = _Run(saga, flow, instance, event, now)
    steps = run.steps
    if action == "abort":
        for step in flow.steps:
            if steps.get(step.name) == "active":
                steps[step.name] = "abandoned"
                run.cancel(step.timer, f"{step.name}.retry")
        run.fail(reason)
    elif action == "retry":
        for step in flow.steps:
            status = steps.get(step.name)
            if status == "active" and step.send is not None:
                run.cancel(f"{step.name}.retry")
                run.send(step.send, step.name)
                run.set_timer(step.timer, step.timeout)
            elif status == "undoing" and step.compensate is not None:
                run.cancel(f"undo:{step.name}.retry")
                run.send(step.compensate, f"undo:{step.name}")
                run.set_timer(f"undo:{step.name}.timeout", step.timeout)
    else:  # resume
        for step in flow.steps:
            if steps.get(step.name) == "undo_failed" and step.compensate is not None:
                steps[step.name] = "undoing"
                run.attempts.pop(f"undo:{step.name}", None)
                run.send(step.compensate, f"undo:{step.name}")
                run.set_timer(f"undo:{step.name}.timeout", step.timeout)
        run.compensate()  # nothing failed to undo but steps done: undo them
    return run.decision()


class _Run:
    """One event's work on a flow instance: copies of its step statuses, done order,
    attempts and timers, changed by the rules, then turned into a decision."""

    def __init__(
        self, saga: SagaDefinition, flow: Flow, instance: Instance, event: Routed, now: float
    ) -> None:
        self.saga = saga
        self.flow = flow
        self.instance = instance
        self.event = event
        self.now = now
        self.at: datetime = when(now)
        meta = instance.meta
        self.steps = dict(meta.steps)
        self.done = list(meta.done)
        self.attempts = dict(meta.attempts)
        self.failure = meta.failure
        self.known = meta.timers is not None
        self.live = set(meta.timers or ())
        self.state = instance.data
        self.messages: list[Message] = []
        self.timers: list[TimerChange] = []
        self.final: str | None = None
        self.deviation = ""
        self.merged: Callable[[], BaseModel] | None = None
        """The state with the event's data in: taken when the event moves the flow."""

    # -- the rules ------------------------------------------------------------

    def start(self) -> None:
        for name in self.flow.roots:
            self.activate(self.flow.index[name])

    def step_event(self, step: FlowStep, ok: bool, late: bool) -> Decision | None:
        """A step's success (``ok``) or failure event; a decision of its own if the
        event only parks or is only recorded."""
        status = self.steps.get(step.name)
        env = self.event.envelope
        failing = self.failure is not None
        if status == "active":
            self.take_data()
            self.cancel(step.timer, f"{step.name}.retry")
            if ok:
                self.steps[step.name] = "done"
                self.done.append(step.name)
                if not failing:
                    self.advance()
            else:
                self.steps[step.name] = "failed"
                if not failing:
                    self.failure = _reason(self.event) or f"step {step.name!r} failed ({env.type})"
            if self.failure is not None:
                self.compensate()
            return None
        if status is None and not failing:
            if late:
                return self.deviate("early", f"still before its step {step.name!r} could take it")
            return Decision("park", reason=f"{env.type} is for step {step.name!r}, not started yet")
        if ok and status in (None, "failed", "abandoned") and failing:
            # done after all, though the flow failed meanwhile: its work is undone too
            self.take_data()
            self.steps[step.name] = "done"
            self.done.append(step.name)
            self.deviation = (
                f"late: {env.type} {env.id} did step {step.name!r} after the flow failed"
            )
            self.compensate()
            return None
        if status == "done":
            kind = "repeated" if ok else "contradicting"
            what = "again" if ok else "after the step was done"
            return self.deviate(kind, f"for step {step.name!r} {what}")
        return self.deviate("late", f"for step {step.name!r}, which is {status or 'not started'}")

    def undone(self, step: FlowStep) -> Decision | None:
        if self.steps.get(step.name) != "undoing":
            return self.deviate(
                "unexpected", f"undoes step {step.name!r}, which is not being undone"
            )
        self.cancel(f"undo:{step.name}.timeout", f"undo:{step.name}.retry")
        self.steps[step.name] = "undone"
        self.compensate()
        return None

    def timer(self, name: str) -> bool:
        """A fired timer; False if the flow no longer waits for it."""
        self.live.discard(name)  # it fired: the engine deletes its row
        base, _, kind = name.rpartition(".")
        undo = base.startswith("undo:")
        step = self.flow.index.get(base[5:] if undo else base)
        if step is None:
            return False
        status = self.steps.get(step.name)
        if undo:
            if status != "undoing" or step.compensate is None:
                return False
            if kind == "retry":
                self.send(step.compensate, f"undo:{step.name}")
                self.set_timer(f"undo:{step.name}.timeout", step.timeout)
            elif self.attempts.get(f"undo:{step.name}", 0) < step.attempts:
                self.set_timer(
                    f"undo:{step.name}.retry", step.delay(self.attempts[f"undo:{step.name}"])
                )
            else:
                self.steps[step.name] = "undo_failed"
                self.end(COMPENSATION_FAILED, self.flow.on_compensation_failed)
            return True
        if status != "active":
            return False
        failing = self.failure is not None
        if kind == "retry":
            if step.send is None:
                return False
            if failing:  # not asked again once the flow failed: nothing came, nothing to undo
                self.steps[step.name] = "abandoned"
                self.compensate()
            else:
                self.send(step.send, step.name)
                self.set_timer(step.timer, step.timeout)
            return True
        if (
            step.send is not None
            and not failing
            and self.attempts.get(step.name, 0) < step.attempts
        ):
            self.set_timer(f"{step.name}.retry", step.delay(self.attempts[step.name]))
        elif failing:
            self.steps[step.name] = "abandoned"
            self.compensate()
        else:
            self.steps[step.name] = "failed"
            if step.send is not None:
                self.fail(f"step {step.name!r} timed out after {step.attempts} attempt(s)")
            else:
                self.fail(f"step {step.name!r} missed its deadline of {step.timeout:g}s")
        return True

    def deviate(self, kind: str, detail: str) -> Decision:
        """Record a deviation; under the ``fail`` policy a running flow fails with it."""
        env = self.event.envelope
        if self.flow.deviations != "fail" or self.failure is not None:
            return deviation(self.instance, self.event, self.now, kind, detail)
        self.deviation = f"{kind}: {env.type} {env.id} {detail}"
        self.fail(f"deviation ({kind}): {env.type} {detail}")
        return self.decision()

    def take_data(self) -> None:
        """The event moves the flow: its data goes into the state."""
        if self.merged is not None:
            self.state = self.merged()

    # -- moving the flow -------------------------------------------------------

    def activate(self, step: FlowStep) -> None:
        self.steps[step.name] = "active"
        if step.send is not None:
            self.send(step.send, step.name)
        self.set_timer(step.timer, step.timeout)

    def advance(self) -> None:
        """Start every step whose prerequisites are all done; all done: completed."""
        flow, steps = self.flow, self.steps
        for s in flow.steps:
            if s.name not in steps and all(steps.get(p) == "done" for p in s.after):
                self.activate(s)
        if all(steps.get(s.name) == "done" for s in flow.steps):
            self.end(COMPLETED, flow.on_completed)

    def fail(self, reason: str) -> None:
        self.failure = reason
        self.compensate()

    def compensate(self) -> None:
        """Undo the last step done that is not undone yet, once none is being undone and
        no step is still out (it may yet be done, and then, having come after the steps
        it follows, must be undone before them); with nothing left to undo and nothing
        out, the flow is compensated."""
        steps = self.steps
        if any(status in ("undoing", "active") for status in steps.values()):
            return
        for name in reversed(self.done):
            step = self.flow.index[name]
            if steps.get(name) == "done" and step.compensate is not None:
                steps[name] = "undoing"
                self.send(step.compensate, f"undo:{name}")
                self.set_timer(f"undo:{name}.timeout", step.timeout)
                return
        self.end(COMPENSATED, self.flow.on_compensated)

    def end(self, final: str, outcome: SendSpec | None) -> None:
        self.final = final
        if outcome is not None:
            self.send(outcome, None)

    # -- what it sends and sets ---------------------------------------------

    def send(self, spec: SendSpec, key: str | None) -> None:
        cid = self.instance.correlation_id
        attempt = None
        if key is None:
            mid = message_id(self.event.envelope.id, self.saga.name, len(self.messages))
        else:
            attempt = self.attempts.get(key, 0) + 1
            self.attempts[key] = attempt
            mid = command_id(self.saga.name, key, cid)
        self.messages.append(message(spec, self.context(), self.saga.name, mid, attempt, self.at))

    def context(self) -> Context:
        """What a payload builder sees: the state as it stands, the reason if failing."""
        meta = Meta(self.attempts, self.failure, None)
        return Context(
            self.state, self.event.payload, self.event.envelope, self.instance.correlation_id,
            meta, self.at,
        )  # fmt: skip

    def set_timer(self, name: str, seconds: float) -> None:
        self.timers.append(TimerChange(name, self.now + seconds))
        self.live.add(name)

    def cancel(self, *names: str) -> None:
        for name in names:
            if name in self.live or not self.known:
                self.timers.append(TimerChange(name, None))
            self.live.discard(name)

    # -- the decision ---------------------------------------------------------

    def decision(self) -> Decision:
        inst = self.instance
        status = Status.RUNNING
        if self.final is not None:
            status = self.saga.final[self.final]
            remaining = self.live if self.known else set(self.saga.timer_names)
            self.cancel(*sorted(remaining))
            self.live = set()
            self.timers = [t for t in self.timers if t.due is None]
        meta = Meta(
            self.attempts, self.failure, tuple(sorted(self.live)), self.steps, tuple(self.done)
        )
        new = Instance(
            inst.saga,
            inst.correlation_id,
            self.final or self.state_name(),
            status,
            inst.version + 1,
            self.state,
            meta,
            inst.created_at,
            self.now,
        )
        return Decision(
            "applied",
            new,
            inst.state,
            tuple(self.messages),
            tuple(self.timers),
            deviation=self.deviation,
        )

    def state_name(self) -> str:
        """What the instance waits for (see the module docstring)."""
        steps = self.steps
        undoing = [n for n, status in steps.items() if status == "undoing"]
        if undoing:
            return f"compensating:{undoing[0]}"
        if self.failure is not None:
            return "compensating"
        active = [s.name for s in self.flow.steps if steps.get(s.name) == "active"]
        return "+".join(active)


def _reason(event: Routed) -> str | None:
    """A failure event's ``reason`` field, if it has one."""
    payload = event.payload
    reason = (
        payload.get("reason") if isinstance(payload, dict) else getattr(payload, "reason", None)
    )
    return str(reason) if reason else None
