"""Two sagas that show, from outside, how replicas in partitioned mode move instances.

``tick`` writes down the order in which its events were applied. Each instance takes ``test.tick`` events ``{"id": ..., "n": ...}`` again and again and
appends each ``n`` to ``seen`` in its state, so after a run ``seen`` is the order the
engine applied them in: a test publishes ``n = 1..TICKS`` per instance and compares.
The tick numbered :data:`TICKS` ends the instance (``completed``), so a test can count
finished instances instead of reading each one; a tick out of order shows in ``seen``
(or, if the last came early, as the ticks after it dead-lettered).

``beat`` waits on a timer: ``test.beat`` ``{"id": ...}`` starts an instance, which
:data:`RING` seconds later fires its timer (state ``rung``), and a second
``test.beat`` ends it. Which replica fires a timer is the question: only the one that
owns the instance's partition should, or the others move instances they do not own
(each firing decided by every replica, the owner's cached copy left stale).

Loaded by the sidecar by path (``--sagas tests/sagas/ticks.py``); used by
:mod:`tests.e2e.test_partitioned_replicas`.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from orchestrator import Event, StateMachine, Timeout, When

__all__ = ["BEAT", "QUIET", "RING", "TICK", "TICKS", "beats", "ticks"]

TICK = "test.tick"
BEAT = "test.beat"
TICKS = 20
"""The tick that ends an instance."""
QUIET = 600.0
"""Seconds without a tick after which an instance is abandoned (the checks want a
timeout on every wait; no test waits this long)."""
RING = 0.5
"""Seconds from a beat's first event to its timer."""


class Tick(BaseModel):
    id: str = Field(min_length=1)
    n: int = Field(ge=1)


class TickState(BaseModel):
    id: str
    seen: list[int] = Field(default_factory=list)


def _append(s: TickState, e: Tick) -> dict[str, Any]:
    return {"seen": [*s.seen, e.n]}


def _last(s: TickState, e: Tick) -> bool:
    return e.n >= TICKS


ticks = StateMachine(
    "tick",
    state=TickState,
    correlate="id",
    start=TICK,
    events=[Event(TICK, Tick, merge=False)],
    final={"done": "completed", "abandoned": "aborted"},
    transitions=[
        When("initial", TICK).update(_append).timer("quiet", QUIET).to("ticking"),
        When("ticking", TICK, guard=_last).update(_append).cancel("quiet").to("done"),
        When("ticking", TICK).update(_append).timer("quiet", QUIET).to("ticking"),
        When("ticking", Timeout("quiet")).to("abandoned"),
    ],
)


class Beat(BaseModel):
    id: str = Field(min_length=1)


class BeatState(BaseModel):
    id: str
    rung: int = 0


def _rung(s: BeatState, e: object) -> dict[str, Any]:
    return {"rung": s.rung + 1}


beats = StateMachine(
    "beat",
    state=BeatState,
    correlate="id",
    start=BEAT,
    events=[Event(BEAT, Beat)],
    final={"done": "completed", "abandoned": "aborted"},
    transitions=[
        When("initial", BEAT).timer("ring", RING).to("waiting"),
        When("waiting", Timeout("ring")).update(_rung).timer("quiet", QUIET).to("rung"),
        When("rung", BEAT).cancel("quiet").to("done"),
        When("rung", Timeout("quiet")).to("abandoned"),
    ],
)
