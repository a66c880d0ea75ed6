"""``/metrics``: the engine's counters and histograms and the store's census, for Prometheus.

A collector, not a set of live counters: the engine already counts
(:class:`~orchestrator.engine.stats.Stats`, the relay's refusals, the store's health),
so a scrape reads those numbers at that moment and nothing on the per-event path
touches Prometheus. The store's gauges (instances by saga, state and status, stuck
instances, outbox backlog, timers, parked messages) come from one
:meth:`~orchestrator.store.base.Store.census`, cached for ``Settings.counts_ttl``
seconds because it scans. Apart from the routes (:mod:`~orchestrator.sidecar.http`)
because it has state of its own (a registry and the cached census) and reads the
sidecar through :class:`SidecarView` only.

Every family and its labels is listed in the README ("Metrics"); the Grafana dashboard
(``deploy/grafana/sagawire.json``) reads them, and a test checks it names no other.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

import structlog
from prometheus_client import CollectorRegistry
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from orchestrator.engine.stats import Histogram, Stats
from orchestrator.language.status import Status
from orchestrator.sidecar.api import SidecarView
from orchestrator.store.base import Census, StuckRule
from schemas.errors import StoreError

__all__ = ["Metrics", "StuckRuleAt"]

log = structlog.get_logger("sagawire.http")

StuckRuleAt = Callable[[float], StuckRule | None]
"""What is stuck at a time (the cut-offs of the sagas' SLOs), or None: nothing is."""

_COUNTERS = (
    ("deliveries", "Messages received from the broker"),
    ("transitions", "Saga transitions committed"),
    ("duplicates", "Redeliveries recognised by the inbox and skipped"),
    ("parked", "Events parked until their instance can take them"),
    ("conflicts", "Optimistic version conflicts retried"),
    ("timers_fired", "Saga timers fired"),
)


class Metrics:
    """Prometheus view of the engine's counters and the store's census.

    A private registry per HTTP app (not the global one), so tests can run several
    sidecars in one process. The census costs a scan, so it is cached for
    ``Settings.counts_ttl`` seconds. ``stuck`` says which instances are stuck at a
    time (the same rule as the operator's listing); without one none is, and
    ``sagawire_stuck_instances`` reads 0."""

    def __init__(self, sidecar: SidecarView, stuck: StuckRuleAt | None = None) -> None:
        self.sidecar = sidecar
        self.stuck = stuck
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self)
        self._census: Census | None = None
        self._census_at = 0.0  # the engine clock's time the census was taken at
        self._counted_at = float("-inf")  # time.monotonic() of the same moment

    async def refresh(self) -> None:
        """Take a census if the cached one is older than ``counts_ttl`` (a store that
        does not answer keeps the last one, with a warning)."""
        store = self.sidecar.store
        if store is None or not self.sidecar.store_open:
            return
        if time.monotonic() - self._counted_at < self.sidecar.settings.counts_ttl:
            return
        engine = self.sidecar.engine
        now = engine.clock.now() if engine is not None else time.time()
        try:
            self._census = await store.census(now, self.stuck(now) if self.stuck else None)
        except StoreError as exc:
            log.warning("store census unavailable for /metrics", error=str(exc))
            return
        self._census_at = now
        self._counted_at = time.monotonic()

    @property
    def census(self) -> Census | None:
        """The last census taken (:meth:`refresh`), shared with the console's overview."""
        return self._census

    def collect(self) -> Iterable[Metric]:
        engine = self.sidecar.engine
        stats = engine.stats if engine else Stats()
        for name, doc in _COUNTERS:
            yield CounterMetricFamily(f"sagawire_{name}", doc, value=getattr(stats, name))
        yield from self._engine_counters(stats, [s.name for s in self.sidecar.sagas])
        yield from self._histograms(stats)
        yield CounterMetricFamily(
            "sagawire_publish_refused",
            "Outbox messages the broker refused for good (kept as failed: GET /outbox/failed)",
            value=engine.relay.refused if engine else 0,
        )
        health = engine.store_health if engine else None
        yield CounterMetricFamily(
            "sagawire_store_outages",
            "Times the store stopped answering (deliveries were held meanwhile)",
            value=health.outages if health else 0,
        )
        yield GaugeMetricFamily(
            "sagawire_store_up", "1 while the store answers", value=int(bool(health and health.up))
        )
        yield from self._census_gauges()
        yield from self._ownership(engine.ownership_status() if engine else None)
        ready, _ = self.sidecar.readiness()
        yield GaugeMetricFamily("sagawire_ready", "1 when /readyz answers 200", value=int(ready))

    @staticmethod
    def _ownership(status: dict[str, Any] | None) -> Iterable[Metric]:
        """Which units this replica reads (1 each), how many replicas it sees, and how
        many messages it forwarded to partitions: summed over replicas, every unit
        should be owned exactly once."""
        if status is None:
            return
        yield _gauge(
            "sagawire_owned_units",
            "Units this replica reads: partitions (p<k>), forwarded types (src:<type>), or"
            " Kafka partitions (topic[partition])",
            ["unit"],
            [((u,), 1) for u in status.get("owns", ())],
        )
        if "members" in status:
            yield GaugeMetricFamily(
                "sagawire_replicas", "Live replicas this one sees", value=len(status["members"])
            )
            yield CounterMetricFamily(
                "sagawire_forwarded",
                "Messages this replica forwarded from their type to their partition",
                value=status.get("forwarded", 0),
            )

    def _engine_counters(self, stats: Stats, sagas: list[str]) -> Iterable[Metric]:
        failed = stats.compensations_failed
        yield _counter(
            "sagawire_dead_letters",
            "Messages sent to the dead-letter destination, by kind of reason (decode, limit,"
            " envelope, payload, routing, rejected, expired, unloadable, unwritable, refused)",
            ["reason"],
            [((reason,), n) for reason, n in stats.dead_letter_reasons.items()],
        )
        yield _counter(
            "sagawire_deviations",
            "Events that broke a saga's declared flow (recorded, never dead-lettered), by"
            " saga and kind (early, repeated, contradicting, late, unexpected)",
            ["saga", "kind"],
            stats.deviations.items(),
        )
        yield _counter(
            "sagawire_delivery_outcomes",
            "Deliveries routed to a saga, by saga, event type and outcome (applied, parked,"
            " duplicate, dead_lettered, ignored); what no saga takes is in"
            " sagawire_dead_letters only",
            ["saga", "type", "outcome"],
            stats.outcomes.items(),
        )
        yield _counter(
            "sagawire_state_transitions",
            "Committed transitions by saga, the state left and the state entered",
            ["saga", "from_state", "to_state"],
            stats.moves.items(),
        )
        yield _counter(
            "sagawire_commands",
            "Messages committed transitions sent (commands, and a saga's outcome events),"
            " by saga and type",
            ["saga", "type"],
            stats.sent.items(),
        )
        yield _counter(
            "sagawire_compensations_started",
            "Instances that began rolling back (entered a state from which they can only"
            " end compensated or compensation_failed), by saga",
            ["saga"],
            [((s,), stats.compensations.get(s, 0)) for s in {*sagas, *stats.compensations}],
        )
        yield _counter(
            "sagawire_compensations_failed",
            "Instances that ended compensation_failed (an operator must act), by saga",
            ["saga"],
            [((s,), failed.get(s, 0)) for s in {*sagas, *failed}],
        )

    def _histograms(self, stats: Stats) -> Iterable[Metric]:
        yield _histogram(
            "sagawire_saga_duration_seconds",
            "Start to end of instances that finished, by saga and final status",
            ["saga", "status"],
            stats.saga_seconds.items(),
        )
        yield _histogram(
            "sagawire_state_duration_seconds",
            "Time instances spent in a state, by saga and state, observed as they leave it"
            " (or move within it, a retry say: each span is observed, so the sum is the"
            " whole time spent there)",
            ["saga", "state"],
            stats.state_seconds.items(),
        )
        yield _histogram(
            "sagawire_commit_duration_seconds",
            "Wall time of each batch's store transaction",
            [],
            [((), stats.commit_seconds)],
        )

    def _census_gauges(self) -> Iterable[Metric]:
        census = self._census
        by_status = {s.value: 0 for s in Status}
        for (_, _, status), n in (census.instances if census else {}).items():
            by_status[status] = by_status.get(status, 0) + n
        yield _gauge(
            "sagawire_instances",
            "Saga instances by status",
            ["status"],
            [((status,), n) for status, n in by_status.items()],
        )
        yield _gauge(
            "sagawire_saga_instances",
            "Saga instances by saga, state and status (a finished instance's state is left"
            " out: the census counts those off an index, by status)",
            ["saga", "state", "status"],
            census.instances.items() if census else (),
        )
        yield _gauge(
            "sagawire_stuck_instances",
            "Running instances past their state's SLO, by saga and state",
            ["saga", "state"],
            census.stuck.items() if census else (),
        )
        scalars = (
            ("sagawire_outbox_backlog", "Outbox rows not yet published (nor failed)"),
            ("sagawire_outbox_oldest_age_seconds",
             "Age of the oldest unpublished outbox row (0: none)"),
            ("sagawire_timers_pending", "Timers set and not yet fired or cancelled"),
            ("sagawire_timers_due", "Timers due and not yet fired (housekeeping behind)"),
            ("sagawire_parked_messages", "Messages parked until their instance can take them"),
        )  # fmt: skip
        values: tuple[float, ...] = ()
        if census is not None:
            oldest = census.outbox_oldest
            age = 0.0 if oldest is None else max(0.0, self._census_at - oldest)
            values = (census.outbox_backlog, age, census.timers_pending, census.timers_due,
                      census.parked)  # fmt: skip
        for i, (name, doc) in enumerate(scalars):
            family = GaugeMetricFamily(name, doc)
            if values:  # no census yet: no sample, rather than a 0 that would be a guess
                family.add_metric([], values[i])
            yield family


Samples = Iterable[tuple[tuple[str, ...], int]]
"""``(label values, value)`` pairs: a dict's ``items()``."""


def _counter(name: str, doc: str, labels: list[str], samples: Samples) -> CounterMetricFamily:
    family = CounterMetricFamily(name, doc, labels=labels)
    for key, n in sorted(samples):
        family.add_metric(list(key), n)
    return family


def _gauge(name: str, doc: str, labels: list[str], samples: Samples) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, doc, labels=labels)
    for key, n in sorted(samples):
        family.add_metric(list(key), n)
    return family


def _histogram(
    name: str, doc: str, labels: list[str], hists: Iterable[tuple[tuple[str, ...], Histogram]]
) -> HistogramMetricFamily:
    family = HistogramMetricFamily(name, doc, labels=labels)
    for key, h in sorted(hists, key=lambda kh: kh[0]):
        buckets = [("+Inf" if b == float("inf") else repr(b), float(n)) for b, n in h.cumulative()]
        family.add_metric(list(key), buckets, h.sum)
    return family
