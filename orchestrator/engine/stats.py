"""What the engine counts: plain ints, dicts and fixed-bucket histograms.

Why not Prometheus objects: the engine counts on its per-event path, where a
``prometheus_client`` counter's lock and label lookup per increment would be paid for
every event, scraped or not. Here a count is one dict update keyed by strings the event
already carries, and the sidecar's collector (:mod:`orchestrator.sidecar.metrics`)
reads these numbers when a scrape asks. Nothing here reads a clock: durations come
from the engine's clock through the instances (``created_at``, ``updated_at``), and
the commit latency is measured by the committer.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from orchestrator.engine.model import Decision, Instance
from orchestrator.language.definition import SagaDefinition
from orchestrator.language.status import Status

__all__ = [
    "COMMIT_BUCKETS",
    "SAGA_BUCKETS",
    "STATE_BUCKETS",
    "Histogram",
    "Stats",
    "rollback_states",
]

SAGA_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0,
                21600.0, 86400.0)  # fmt: skip
"""Seconds from start to a final status: a saga's steps are remote calls, retried after
timeouts, so it may take from a fraction of a second to a day."""
STATE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
                 300.0, 3600.0, 86400.0)  # fmt: skip
"""Seconds an instance stayed in a state: a participant's answer, or a timer."""
COMMIT_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                  2.5, 5.0)  # fmt: skip
"""Seconds one batch's store transaction took: from under a millisecond (memory,
SQLite) to the seconds of a store that struggles."""

_UNDONE = (Status.COMPENSATED, Status.COMPENSATION_FAILED)
_TOTALS = ("deliveries", "transitions", "duplicates", "parked", "dead_letters", "conflicts",
           "timers_fired")  # fmt: skip


class Histogram:
    """Observations counted into fixed buckets, as Prometheus keeps them: ``counts[i]``
    observations at most ``bounds[i]`` (and above the previous bound), the last one
    above every bound; :meth:`cumulative` gives them the way the exposition wants."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value

    @property
    def count(self) -> int:
        return sum(self.counts)

    def cumulative(self) -> Iterator[tuple[float, int]]:
        """``(upper bound, observations at most it)`` per bucket, ``inf`` last."""
        total = 0
        for bound, n in zip((*self.bounds, float("inf")), self.counts, strict=True):
            total += n
            yield bound, total


def rollback_states(saga: SagaDefinition) -> frozenset[str]:
    """The states of ``saga`` in which it is rolling back: it can no longer complete,
    only end compensated (or with a compensation failed). Entering one from any other
    state is a compensation started.

    A flow's are named by its interpreter (``compensating``, ``compensating:<step>``);
    a state machine's (a step saga's ``compensating:<step>`` among them) are read off
    its rows: those that reach an undone final state and no ``completed`` one."""
    undone = {s for s, status in saga.final.items() if status in _UNDONE}
    if saga.flow is not None:
        named = {s for s in saga.states if s == "compensating" or s.startswith("compensating:")}
        return frozenset(named | undone)
    edges: dict[str, set[str]] = {}
    for rows in saga.transitions.values():
        for row in rows:
            edges.setdefault(row.target, set()).add(row.source)  # reversed: target -> sources
    completes = _reaching(
        {s for s, status in saga.final.items() if status is Status.COMPLETED}, edges
    )
    return frozenset(_reaching(undone, edges) - completes)


def _reaching(ends: set[str], sources: Mapping[str, set[str]]) -> set[str]:
    """``ends`` and every state with a path of rows to one of them."""
    seen = set(ends)
    todo = list(ends)
    while todo:
        for source in sources.get(todo.pop(), ()):
            if source not in seen:
                seen.add(source)
                todo.append(source)
    return seen


@dataclass
class Stats:
    """The engine's counters. The plain ints are the totals ``/metrics`` has always
    shown; the dicts break the same events down by saga and what happened, keyed by
    tuples of strings the events already carry (no string is built per event)."""

    deliveries: int = 0
    transitions: int = 0
    duplicates: int = 0
    parked: int = 0
    dead_letters: int = 0
    conflicts: int = 0
    timers_fired: int = 0
    dead_letter_reasons: dict[str, int] = field(default_factory=dict)
    """Dead letters by kind of reason (``MessageError.kind``, ``rejected``, ``expired``...)."""
    deviations: dict[tuple[str, str], int] = field(default_factory=dict)
    """Events that broke a saga's declared flow, by (saga, kind): ``early``,
    ``repeated``, ``contradicting``, ``late``, ``unexpected``."""
    outcomes: dict[tuple[str, str, str], int] = field(default_factory=dict)
    """Deliveries routed to a saga, by (saga, event type, outcome): ``applied``,
    ``parked``, ``duplicate``, ``dead_lettered``, ``ignored``. Counted once settled (a
    version conflict decides again, and counts then); what no saga takes (it does not
    decode or route) is in ``dead_letter_reasons`` only."""
    moves: dict[tuple[str, str, str], int] = field(default_factory=dict)
    """Committed transitions by (saga, from state, to state)."""
    sent: dict[tuple[str, str], int] = field(default_factory=dict)
    """Messages committed transitions sent (commands, outcome events), by (saga, type)."""
    compensations: dict[str, int] = field(default_factory=dict)
    """Instances that began rolling back (entered a :func:`rollback_states` state), by saga."""
    compensations_failed: dict[str, int] = field(default_factory=dict)
    """Instances that ended ``compensation_failed`` (an operator must act), by saga."""
    saga_seconds: dict[tuple[str, str], Histogram] = field(default_factory=dict)
    """Start to end of each instance that finished, by (saga, final status)."""
    state_seconds: dict[tuple[str, str], Histogram] = field(default_factory=dict)
    """Time an instance spent in a state, by (saga, state): observed at each transition
    out of it, from the transition before (a move within the state, a retry say, ends
    one span and starts the next, so the sum is the whole time spent in the state)."""
    commit_seconds: Histogram = field(default_factory=lambda: Histogram(COMMIT_BUCKETS))
    """Wall time of each batch's store transaction."""
    _rollback: dict[str, frozenset[str]] = field(default_factory=dict, repr=False)

    def summary(self) -> dict[str, Any]:
        """The counters as a log line can write them (JSON keys are strings: a tuple key
        once made the stop line raise, and the sidecar exit 1 on SIGTERM). The break-downs
        of ``/metrics`` are left out: a stop line says how much, not what went where."""
        out: dict[str, Any] = {name: getattr(self, name) for name in _TOTALS}
        out["dead_letter_reasons"] = dict(self.dead_letter_reasons)
        out["deviations"] = {f"{saga}/{kind}": n for (saga, kind), n in self.deviations.items()}
        out["compensations"] = dict(self.compensations)
        out["compensations_failed"] = dict(self.compensations_failed)
        return out

    def deviated(self, saga: str, kind: str) -> None:
        key = (saga, kind)
        self.deviations[key] = self.deviations.get(key, 0) + 1

    def dead_lettered(self, kind: str) -> None:
        self.dead_letters += 1
        self.dead_letter_reasons[kind] = self.dead_letter_reasons.get(kind, 0) + 1

    def handled(self, saga: str, event_type: str, outcome: str) -> None:
        """One delivery routed to ``saga`` settled with ``outcome``."""
        key = (saga, event_type, outcome)
        outcomes = self.outcomes
        outcomes[key] = outcomes.get(key, 0) + 1

    def moved(self, saga: SagaDefinition, decision: Decision, after: Instance) -> None:
        """One committed transition: by states, what it sent, how long the instance was
        in the state it left, and, if it finished or began rolling back, that too."""
        name = saga.name
        source = decision.from_state
        target = after.state
        key = (name, source, target)
        moves = self.moves
        moves[key] = moves.get(key, 0) + 1
        if decision.messages:
            sent = self.sent
            for m in decision.messages:
                k = (name, m.type)
                sent[k] = sent.get(k, 0) + 1
        status = after.status
        if status.final and source == target:
            return  # recorded on a finished instance (a late deviation): it did not move
        if decision.since:
            _observe(self.state_seconds, (name, source), after.updated_at - decision.since,
                     STATE_BUCKETS)  # fmt: skip
        if status.final:
            _observe(self.saga_seconds, (name, status.value), after.updated_at - after.created_at,
                     SAGA_BUCKETS)  # fmt: skip
            if status is Status.COMPENSATION_FAILED:
                failed = self.compensations_failed
                failed[name] = failed.get(name, 0) + 1
        if source != target:
            rollback = self._rollback.get(name)
            if rollback is None:
                rollback = self._rollback[name] = rollback_states(saga)
            if target in rollback and source not in rollback:
                started = self.compensations
                started[name] = started.get(name, 0) + 1


def _observe(
    hists: dict[tuple[str, str], Histogram],
    key: tuple[str, str],
    value: float,
    bounds: tuple[float, ...],
) -> None:
    h = hists.get(key)
    if h is None:
        h = hists[key] = Histogram(bounds)
    h.observe(value)
