"""Stuck instances: a log line when one becomes stuck.

An instance is *stuck* when it has been running in one state past that state's SLO (a
step's or state's ``slo=``), or past ``stuck_after`` in a state with none. The listing
(``GET /sagas?stuck=true``) and the gauge (``sagawire_stuck_instances``) read the same
rule, :func:`stuck_rule` (here, beside the watcher); this watcher looks every
``interval`` seconds and logs each instance the first time it is seen stuck, so an
alert on the log fires once per instance, not once per look. It forgets an instance
once it is no longer stuck (it moved, or finished).

A look reads at most :data:`LIMIT` stuck instances (newest first): past that many, the
gauge is the number to watch, and the log says that a look did not read them all.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence

import structlog

from orchestrator.language.definition import SagaDefinition
from orchestrator.sidecar.api import SidecarView
from orchestrator.store.base import InstanceKey, InstanceQuery, StuckRule
from schemas.errors import StoreError

__all__ = ["StuckWatcher", "stuck_rule"]

log = structlog.get_logger("sagawire.stuck")

LIMIT = 1000


def stuck_rule(sagas: Sequence[SagaDefinition], now: float, default: float | None) -> StuckRule:
    """Running instances are stuck past their state's SLO (``slo=`` on a step or a
    state), or past ``default`` seconds in any other state (None: only declared ones)."""
    cutoffs = tuple(
        (saga.name, state, now - seconds)
        for saga in sagas
        for state, seconds in sorted(saga.slo.items())
    )
    return StuckRule(cutoffs, None if default is None else now - default)


class StuckWatcher:
    """Logs instances as they become stuck, until ``stopping`` is set."""

    def __init__(self, sidecar: SidecarView, interval: float = 30.0) -> None:
        self.sidecar = sidecar
        self.interval = interval
        self.known: set[InstanceKey] = set()

    async def look(self, now: float | None = None) -> list[InstanceKey]:
        """One look; the instances newly stuck."""
        store = self.sidecar.store
        default = self.sidecar.settings.stuck_after
        if store is None or not self.sidecar.store_open:
            return []
        at = time.time() if now is None else now
        rule = stuck_rule(self.sidecar.sagas, at, default)
        if not rule.cutoffs and rule.default is None:
            return []
        rows = await store.find(InstanceQuery(stuck=rule, limit=LIMIT))
        slo = {s.name: s.slo for s in self.sidecar.sagas}
        fresh = []
        for row in rows:
            if row.key in self.known:
                continue
            fresh.append(row.key)
            log.warning(
                "saga instance stuck",
                saga=row.saga,
                correlation_id=row.correlation_id,
                state=row.state,
                seconds_in_state=round(at - row.updated_at, 1),
                slo_s=slo.get(row.saga, {}).get(row.state, default),
            )
        if len(rows) == LIMIT:
            log.warning("more stuck instances than one look reads", read=LIMIT)
        self.known = {row.key for row in rows}
        return fresh

    async def run(self, stopping: asyncio.Event) -> None:
        while not stopping.is_set():
            try:
                await self.look()
            except StoreError as exc:  # the engine reports the store's outage already
                log.debug("stuck look skipped", error=str(exc))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), self.interval)
