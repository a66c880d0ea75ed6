"""``GET /overview``: what the console's first page shows, in one answer.

Per saga: instances by state and status and the stuck ones (the store's census, the
same cached one ``/metrics`` reads), and the engine's counters since it started
(instances started, finished by status, compensations begun, deviations by kind), from
which a client that polls computes rates. Then the dead letters kept and the latest
deviations of choreographies.
"""

import time
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends
from pydantic import BaseModel

from orchestrator.engine.stats import Stats
from orchestrator.language.definition import INITIAL
from orchestrator.sidecar.admin.context import Admin
from orchestrator.sidecar.admin.models import Error, HistoryEntry
from orchestrator.sidecar.admin.views import history_view, iso
from orchestrator.sidecar.metrics import Metrics
from orchestrator.store.base import Census, DeadLetterQuery

__all__ = ["overview_routes"]

DEAD_LETTER_CAP = 1000


class SagaOverview(BaseModel):
    name: str
    kind: str
    instances: dict[str, int]
    """By status."""
    states: dict[str, dict[str, int]]
    """By state, then status (a finished instance's state is its status)."""
    stuck: int
    stuck_by_state: dict[str, int]
    started: int
    finished: dict[str, int]
    compensations_started: int
    deviations: dict[str, int]


class DeviationEntry(HistoryEntry):
    saga: str
    correlation_id: str


class Overview(BaseModel):
    at: datetime
    sagas: list[SagaOverview]
    dead_letters: int
    dead_letters_capped: bool
    dead_letters_by_kind: dict[str, int]
    outbox_backlog: int
    parked: int
    recent_deviations: list[DeviationEntry]


def _saga(name: str, kind: str, census: Census | None, stats: Stats) -> SagaOverview:
    by_status: dict[str, int] = {}
    states: dict[str, dict[str, int]] = {}
    for (saga, state, status), n in census.instances.items() if census else ():
        if saga == name:
            by_status[status] = by_status.get(status, 0) + n
            row = states.setdefault(state or status, {})
            row[status] = row.get(status, 0) + n
    stuck = {
        state: n for (saga, state), n in (census.stuck.items() if census else ()) if saga == name
        and n
    }  # fmt: skip
    return SagaOverview(
        name=name,
        kind=kind,
        instances=by_status,
        states=states,
        stuck=sum(stuck.values()),
        stuck_by_state=stuck,
        started=sum(n for (s, src, _), n in stats.moves.items() if s == name and src == INITIAL),
        finished={st: h.count for (s, st), h in stats.saga_seconds.items() if s == name},
        compensations_started=stats.compensations.get(name, 0),
        deviations={kind: n for (s, kind), n in stats.deviations.items() if s == name},
    )


def overview_routes(admin: Admin, metrics: Metrics) -> APIRouter:
    router = APIRouter(tags=["overview"], responses={401: {"model": Error}, 503: {"model": Error}})
    reader = Depends(admin.reader)

    @router.get("/overview", response_model=Overview, summary="Counts per saga, for the console")
    async def overview(who: Annotated[str, reader]) -> Overview:
        store = admin.store()
        await metrics.refresh()
        census = metrics.census
        engine = admin.sidecar.engine
        stats = engine.stats if engine is not None else Stats()
        kept = await store.dead_letters(DeadLetterQuery(redriven=False, limit=DEAD_LETTER_CAP))
        by_kind: dict[str, int] = {}
        for d in kept:
            by_kind[d.kind] = by_kind.get(d.kind, 0) + 1
        deviations = [
            DeviationEntry(
                **history_view(h).model_dump(), saga=h.saga, correlation_id=h.correlation_id
            )
            for h in await store.recent_deviations(20)
        ]
        return Overview(
            at=iso(engine.clock.now() if engine is not None else time.time()),
            sagas=[_saga(s.name, s.kind, census, stats) for s in admin.sidecar.sagas],
            dead_letters=len(kept),
            dead_letters_capped=len(kept) == DEAD_LETTER_CAP,
            dead_letters_by_kind=by_kind,
            outbox_backlog=census.outbox_backlog if census else 0,
            parked=census.parked if census else 0,
            recent_deviations=deviations,
        )

    return router
