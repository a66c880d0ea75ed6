"""Bulk actions: abort, retry, resume or redrive everything a filter matches.

``POST /bulk/{action}`` takes the filters of ``GET /sagas`` (or, for ``redrive``, of
``GET /deadletters``). With ``dry_run=true`` it only counts what they match. Otherwise
it answers 202 with a job at once and works in the background, in small batches, each
instance through the same :meth:`~orchestrator.engine.operator.Operator.act` as the
one-instance routes (so each is serialised with its events and may be refused on its
own: a refusal is counted, not an error). Every affected instance's history names the
job (``bulk <id>: <reason>``), as every redrive record names its caller. ``GET
/bulk/{id}`` shows the progress; ``POST /bulk/{id}/cancel`` stops it after the batch in
hand.

Jobs live in this process (a restart ends them, with what they did committed), and the
pages are walked newest first by cursor: an instance the job has acted on has moved to
the top, behind the cursor, so it is not met twice.
"""

import asyncio
import dataclasses
import time
import uuid
from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal

import structlog
from fastapi import APIRouter, Depends
from starlette.responses import JSONResponse

from orchestrator.sidecar.admin.context import Admin, ApiError
from orchestrator.sidecar.admin.deadletters import dead_letter_query, redrive
from orchestrator.sidecar.admin.filters import BadFilter, instance_query
from orchestrator.sidecar.admin.models import ERRORS, BulkJob, BulkRequest
from orchestrator.sidecar.admin.views import iso
from orchestrator.store.base import Cursor, DeadLetterRecord, InstanceQuery, InstanceRecord
from schemas.errors import StoreError

__all__ = ["BulkJobs", "bulk_routes"]

log = structlog.get_logger("sagawire.bulk")

BATCH = 50
"""Instances acted on between two looks at the cancel flag (and two yields to the
engine's own work: each action takes the engine's lock for one batch of one)."""
DRY_RUN_CAP = 100_000
"""A dry run counts at most this many (a count over ten million rows is a scan)."""
KEPT_JOBS = 100

Action = Literal["abort", "retry", "resume", "redrive"]


@dataclasses.dataclass
class _Job:
    id: str
    action: str
    by: str
    reason: str
    filters: dict[str, Any]
    started_at: float
    state: Literal["dry_run", "running", "done", "cancelled", "failed"] = "running"
    matched: int | None = None
    done: int = 0
    refused: int = 0
    errors: list[str] = dataclasses.field(default_factory=list)
    finished_at: float | None = None
    cancel: bool = False
    task: asyncio.Task[None] | None = None

    def view(self) -> BulkJob:
        return BulkJob(
            id=self.id,
            action=self.action,
            state=self.state,
            by=self.by,
            reason=self.reason,
            filters=self.filters,
            matched=self.matched,
            done=self.done,
            refused=self.refused,
            errors=self.errors[-20:],
            started_at=iso(self.started_at),
            finished_at=None if self.finished_at is None else iso(self.finished_at),
        )


class BulkJobs:
    """The bulk jobs of this sidecar, the last :data:`KEPT_JOBS` of them."""

    def __init__(self, admin: Admin) -> None:
        self.admin = admin
        self.jobs: dict[str, _Job] = {}

    def query(self, request: BulkRequest, limit: int) -> InstanceQuery:
        try:
            return instance_query(
                self.admin.sidecar.sagas, self.admin.stuck_rule(), saga=request.saga,
                status=request.status, state=request.state, correlation_id=request.correlation_id,
                stuck=bool(request.stuck), updated_before=request.updated_before,
                updated_after=request.updated_after, limit=limit,
            )  # fmt: skip
        except BadFilter as exc:
            raise ApiError(400, str(exc)) from None

    async def _instance_pages(
        self, request: BulkRequest, size: int
    ) -> AsyncIterator[list[InstanceRecord]]:
        """The instances the filters match, a page at a time, newest first."""
        query = self.query(request, size)
        while True:
            page = await self.admin.store().find(query)
            yield page
            if len(page) < size:
                return
            query = dataclasses.replace(query, after=_cursor(page[-1]))

    async def _dead_pages(
        self, request: BulkRequest, size: int
    ) -> AsyncIterator[list[DeadLetterRecord]]:
        """The dead letters the filters match, not yet redriven, a page at a time."""
        query = self._dead_query(request, size)
        while True:
            page = await self.admin.store().dead_letters(query)
            yield page
            if len(page) < size:
                return
            query = dataclasses.replace(query, before_id=page[-1].id)

    async def count(self, action: str, request: BulkRequest) -> int:
        """What the filters match now (up to :data:`DRY_RUN_CAP`, and ``limit``)."""
        cap = min(DRY_RUN_CAP, request.limit or DRY_RUN_CAP)
        pages = (
            self._dead_pages(request, 1000)
            if action == "redrive"
            else self._instance_pages(request, 1000)
        )
        n = 0
        async for page in pages:
            n += len(page)
            if n >= cap:
                break
        return min(n, cap)

    def _dead_query(self, request: BulkRequest, limit: int) -> Any:
        filters = request.model_dump(exclude_none=True)
        try:
            return dead_letter_query(filters, limit)
        except BadFilter as exc:
            raise ApiError(400, str(exc)) from None

    def start(self, action: str, request: BulkRequest, who: str) -> _Job:
        if action == "redrive":
            self._dead_query(request, BATCH)  # a bad filter is a 400 now, not a failed job
        else:
            self.query(request, BATCH)
            self.admin.engine()
        job = _Job(
            id=uuid.uuid4().hex[:12],
            action=action,
            by=who,
            reason=request.reason,
            filters=request.model_dump(mode="json", exclude_none=True, exclude={"reason"}),
            started_at=time.time(),
        )
        self.jobs[job.id] = job
        for old in list(self.jobs)[:-KEPT_JOBS]:
            if self.jobs[old].state != "running":
                del self.jobs[old]
        job.task = asyncio.create_task(self._run(job, request), name=f"bulk {job.id}")
        log.info("bulk action started", job=job.id, action=action, by=who, filters=job.filters)
        return job

    async def _run(self, job: _Job, request: BulkRequest) -> None:
        try:
            job.matched = await self.count(job.action, request)
            if job.action == "redrive":
                await self._redrive(job, request)
            else:
                await self._act(job, request)
            job.state = "cancelled" if job.cancel else "done"
        except (ApiError, StoreError) as exc:
            job.state = "failed"
            job.errors.append(str(exc))
        except Exception as exc:
            job.state = "failed"
            job.errors.append(f"{type(exc).__name__}: {exc}")
            log.exception("bulk action failed", job=job.id)
        finally:
            job.finished_at = time.time()
            log.info(
                "bulk action ended", job=job.id, state=job.state, done=job.done, refused=job.refused
            )

    async def _act(self, job: _Job, request: BulkRequest) -> None:
        reason = f"bulk {job.id}: {job.reason}" if job.reason else f"bulk {job.id}"
        async for page in self._instance_pages(request, BATCH):
            for row in page:
                if self._enough(job, request):
                    return
                engine = self.admin.engine()
                result = await engine.operator.act(
                    row.saga, row.correlation_id, job.action, reason=reason, by=job.by,
                    compensate=request.compensate,
                )  # fmt: skip
                if result.instance is not None and result.refused is None:
                    job.done += 1
                else:
                    job.refused += 1
            await asyncio.sleep(0)  # the engine's batches go between ours

    async def _redrive(self, job: _Job, request: BulkRequest) -> None:
        async for page in self._dead_pages(request, BATCH):
            for record in page:
                if self._enough(job, request):
                    return
                try:
                    await redrive(self.admin, record, f"{job.by} (bulk {job.id})")
                    job.done += 1
                except ApiError as exc:
                    if exc.status != 409:
                        raise
                    job.refused += 1
            await asyncio.sleep(0)

    @staticmethod
    def _enough(job: _Job, request: BulkRequest) -> bool:
        """Cancelled, or ``limit`` instances acted on (done or refused)."""
        limit = request.limit
        return job.cancel or (limit is not None and job.done + job.refused >= limit)

    async def close(self) -> None:
        """Cancel the jobs still running (the sidecar is stopping)."""
        tasks = [j.task for j in self.jobs.values() if j.task is not None and not j.task.done()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def _cursor(row: InstanceRecord) -> Cursor:
    return (row.updated_at, row.saga, row.correlation_id)


def bulk_routes(admin: Admin, jobs: BulkJobs) -> APIRouter:
    router = APIRouter(tags=["bulk actions"], responses=ERRORS)
    reader, writer = Depends(admin.reader), Depends(admin.writer)

    @router.post(
        "/bulk/{action}",
        response_model=BulkJob,
        status_code=202,
        summary="Act on every instance (or dead letter) a filter matches",
    )
    async def start(
        who: Annotated[str, writer],
        action: Action,
        request: BulkRequest,
        dry_run: bool = False,
    ) -> Any:
        """``abort``, ``retry``, ``resume``: the filters of ``GET /sagas``. ``redrive``:
        those of ``GET /deadletters`` (``type``, ``saga``, ``kind``, ``since``,
        ``reason_contains``). ``dry_run=true``: the count, nothing done (200)."""
        if dry_run:
            job = _Job(
                id="", action=action, by=who, reason=request.reason,
                filters=request.model_dump(mode="json", exclude_none=True, exclude={"reason"}),
                started_at=time.time(), state="dry_run",
            )  # fmt: skip
            job.matched = await jobs.count(action, request)
            job.finished_at = time.time()
            return JSONResponse(job.view().model_dump(mode="json"), status_code=200)
        return jobs.start(action, request, who).view()

    @router.get("/bulk/{job_id}", response_model=BulkJob, summary="A bulk action's progress")
    async def progress(who: Annotated[str, reader], job_id: str) -> BulkJob:
        job = jobs.jobs.get(job_id)
        if job is None:
            raise ApiError(
                404, f"no bulk action {job_id!r} (jobs live in the sidecar that ran them)"
            )
        return job.view()

    @router.post("/bulk/{job_id}/cancel", response_model=BulkJob, summary="Cancel a bulk action")
    async def cancel(who: Annotated[str, writer], job_id: str) -> BulkJob:
        """Stops after the instance in hand; what was done stays done."""
        job = jobs.jobs.get(job_id)
        if job is None:
            raise ApiError(404, f"no bulk action {job_id!r}")
        if job.state != "running":
            raise ApiError(409, f"bulk action {job_id} is already {job.state}")
        job.cancel = True
        if job.task is not None:
            await asyncio.wait({job.task}, timeout=5)
        return job.view()

    return router
