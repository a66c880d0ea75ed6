"""The reserved names of the language: the pseudo-state before an instance exists, and
how timers and deviations are spelled as event types.

Kept apart from :mod:`orchestrator.language.definition` so that what reads a definition
(the graph renderer) can know them without importing the definition it draws.
"""

from __future__ import annotations

__all__ = ["ABORT_EVENT", "DEVIATION_EVENT", "INITIAL", "TIMER_PREFIX", "timer_event"]

INITIAL = "initial"
"""The pseudo-state before an instance exists; start events are accepted in it."""

TIMER_PREFIX = "timer:"

DEVIATION_EVENT = "sagawire.deviation"
"""What a state machine's ``When(state, Deviation())`` rows take: an event that broke
the declared flow, under the saga's ``deviations="fail"`` policy."""

ABORT_EVENT = "sagawire.abort"
"""An operator's abort (``POST /sagas/{saga}/{id}/abort``), as the event its rows take: a
step saga compensates on it in every step; a state machine that declares rows on it
(``When(state, ABORT_EVENT)``) runs them, otherwise an abort with compensation
is refused there (:mod:`orchestrator.engine.operate`)."""


def timer_event(name: str) -> str:
    """The event type a fired timer is delivered as (``timer:<name>``)."""
    return TIMER_PREFIX + name
