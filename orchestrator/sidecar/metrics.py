"""``/metrics``: the engine's counters and the store's instance counts, for Prometheus.

A collector, not a set of live counters: the engine already counts (``Engine.stats``,
the relay's refusals, the store's health), so a scrape reads those numbers at that
moment and nothing on the per-event path touches Prometheus. Apart from the routes
(:mod:`~orchestrator.sidecar.http`) because it has state of its own (a registry and
the cached instance counts) and reads the sidecar through :class:`SidecarView` only.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

import structlog
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from orchestrator.language.status import Status
from orchestrator.sidecar.api import SidecarView
from schemas.errors import StoreError

__all__ = ["Metrics"]

log = structlog.get_logger("sagawire.http")

_COUNTERS = (
    ("deliveries", "Messages received from the broker"),
    ("transitions", "Saga transitions committed"),
    ("duplicates", "Redeliveries recognised by the inbox and skipped"),
    ("parked", "Events parked until their instance can take them"),
    ("conflicts", "Optimistic version conflicts retried"),
    ("timers_fired", "Saga timers fired"),
)


class Metrics:
    """Prometheus view of the engine's counters and the store's instance counts.

    A private registry per HTTP app (not the global one), so tests can run several
    sidecars in one process. Counts cost a query, so they are cached for
    ``Settings.counts_ttl`` seconds."""

    def __init__(self, sidecar: SidecarView) -> None:
        self.sidecar = sidecar
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self)
        self._counts: dict[str, int] = {}
        self._counted_at = float("-inf")

    async def refresh(self) -> None:
        """Re-read the instance counts if the cached ones are older than ``counts_ttl``
        (a store that does not answer keeps the last ones, with a warning)."""
        store = self.sidecar.store
        if store is None or not self.sidecar.store_open:
            return
        if time.monotonic() - self._counted_at < self.sidecar.settings.counts_ttl:
            return
        try:
            self._counts = await store.counts()
            self._counted_at = time.monotonic()
        except StoreError as exc:
            log.warning("instance counts unavailable for /metrics", error=str(exc))

    def collect(self) -> Iterable[Metric]:
        engine = self.sidecar.engine
        for name, doc in _COUNTERS:
            family = CounterMetricFamily(f"sagawire_{name}", doc)
            family.add_metric([], getattr(engine.stats, name) if engine else 0)
            yield family
        by_reason = CounterMetricFamily(
            "sagawire_dead_letters",
            "Messages sent to the dead-letter destination, by kind of reason (decode, limit,"
            " envelope, payload, routing, rejected, expired, unloadable, unwritable, refused)",
            labels=["reason"],
        )
        for reason, n in sorted((engine.stats.dead_letter_reasons if engine else {}).items()):
            by_reason.add_metric([reason], n)
        yield by_reason
        deviations = CounterMetricFamily(
            "sagawire_deviations",
            "Events that broke a saga's declared flow (recorded, never dead-lettered), by"
            " saga and kind (early, repeated, contradicting, late, unexpected)",
            labels=["saga", "kind"],
        )
        for (saga, kind), n in sorted((engine.stats.deviations if engine else {}).items()):
            deviations.add_metric([saga, kind], n)
        yield deviations
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
        by_status = GaugeMetricFamily(
            "sagawire_instances", "Saga instances by status", labels=["status"]
        )
        counts = {s.value: 0 for s in Status} | self._counts
        for status, n in sorted(counts.items()):
            by_status.add_metric([status], n)
        yield by_status
        ready, _ = self.sidecar.readiness()
        yield GaugeMetricFamily("sagawire_ready", "1 when /readyz answers 200", value=int(ready))
