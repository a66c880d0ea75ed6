"""Orders in, readiness and metrics out: what a fault test does while it breaks things.

* :class:`Orders` places ``order.placed`` events at a steady rate, through the
  participants' client (the broker) and now and then through ``POST /events`` (an
  HTTP client retrying a refused event a second later, as a shop would), and keeps
  when each was placed and what HTTP answered.
* :class:`ReadyWatch` polls ``/readyz`` every 0.1 s and keeps every answer, so a test
  can tell when the sidecar said it was not ready, why, and when it was ready again.
* :func:`metrics` reads ``/metrics`` into sample sums by name.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.clients import CONTENT_TYPE
from tests.e2e.scenario import cloudevent
from tests.faults.rig import Rig


def placed(oid: str, **extra: object) -> bytes:
    """An ``order.placed`` for ``oid``, correlated by its ``order_id`` (no attribute)."""
    data = {
        "order_id": oid,
        "customer_id": f"cust-{oid}",
        "items": [{"sku": "sku-1", "qty": 1}],
        "amount_cents": 1234,
        **extra,
    }
    return cloudevent("order.placed", data, id_=f"placed-{oid}")


@dataclass(frozen=True)
class Post:
    """One ``POST /events``: when it was sent, how long it took, what it got (0: no
    answer: the connection failed or the client's 10 s timeout ran out)."""

    at: float
    took: float
    status: int
    body: str

    def __str__(self) -> str:
        return f"{self.status} after {self.took:.2f}s: {self.body[:120]}"


@dataclass
class Orders:
    """The orders of one run, placed on ``rig``'s broker or through its HTTP API."""

    rig: Rig
    prefix: str = "ord"
    http_every: int = 5
    """Every n-th order goes through ``POST /events`` (0: none); the rest through the broker."""
    placed_at: dict[str, float] = field(default_factory=dict)
    http: list[Post] = field(default_factory=list)
    _count: int = 0
    _http_pending: list[str] = field(default_factory=list)

    @property
    def ids(self) -> list[str]:
        return list(self.placed_at)

    def next_id(self) -> str:
        self._count += 1
        return f"{self.prefix}-{self._count:05d}"

    async def place(self, oid: str | None = None, *, via_http: bool | None = None) -> str:
        oid = oid or self.next_id()
        if via_http is None:
            via_http = self.http_every > 0 and self._count % self.http_every == 0
        if via_http:
            self._http_pending.append(oid)
            await self.retry_http()
        else:
            await self.rig.client.publish("order.placed", placed(oid), key=oid)
            self.placed_at[oid] = time.monotonic()
        return oid

    async def retry_http(self) -> None:
        """POST the HTTP orders not accepted yet, oldest first, up to the first refusal
        (a shop retries later, it does not hammer a sidecar that said 503)."""
        while self._http_pending:
            oid = self._http_pending[0]
            sent = time.monotonic()
            status, text = await self._post(placed(oid))
            self.http.append(Post(sent, time.monotonic() - sent, status, text[:200]))
            if status != 202:
                return
            self._http_pending.pop(0)
            self.placed_at[oid] = time.monotonic()

    async def _post(self, body: bytes) -> tuple[int, str]:
        async def post() -> httpx.Response:
            return await self.rig.http.post(
                f"{self.rig.sidecar.base}/events",
                content=body,
                headers={"content-type": CONTENT_TYPE},
                timeout=10.0,
            )

        try:
            r = await with_one_retry(post)
            return r.status_code, r.text
        except httpx.TransportError as exc:
            return 0, repr(exc)

    async def steady(self, rate: float, seconds: float) -> None:
        """Place ``rate`` orders a second for ``seconds``, on a fixed schedule."""
        start = time.monotonic()
        n = 0
        while (due := start + n / rate) < start + seconds:
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            await self.place()
            n += 1
        await self.retry_http()

    async def drain_http(self, timeout: float) -> None:
        """Retry the HTTP orders not accepted yet until they are, or ``timeout``."""
        deadline = time.monotonic() + timeout
        while self._http_pending and time.monotonic() < deadline:
            await asyncio.sleep(0.5)
            await self.retry_http()

    @property
    def http_refused(self) -> list[str]:
        return list(self._http_pending)

    def http_between(self, start: float, end: float) -> list[Post]:
        """The POSTs sent from ``start`` to ``end``."""
        return [p for p in self.http if start <= p.at < end]

    def http_slow(self, limit: float) -> list[Post]:
        return [p for p in self.http if p.took > limit]


@dataclass(frozen=True)
class Sample:
    at: float
    status: int  # 0: no answer (the process is down or the port not open)
    body: str


@dataclass
class Outage:
    """What ``/readyz`` said about one outage window."""

    notice: float | None  # seconds from the start to the first non-200
    ready_again: float | None  # seconds from the end to the first 200 after it
    flaps: int  # 200s between the notice and the end
    reasons: list[str]

    def line(self) -> str:
        notice = "never" if self.notice is None else f"{self.notice:.2f}s"
        again = "never" if self.ready_again is None else f"{self.ready_again:.2f}s"
        return f"/readyz 503 after {notice}, 200 again {again} after the end, {self.flaps} flap(s)"


class ReadyWatch:
    """Polls ``/readyz`` in the background and keeps every answer."""

    def __init__(self, rig: Rig, every: float = 0.1) -> None:
        self.rig = rig
        self.every = every
        self.samples: list[Sample] = []
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> ReadyWatch:
        self._task = asyncio.create_task(self._poll())
        return self

    async def __aexit__(self, *_: object) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _poll(self) -> None:
        url = f"{self.rig.sidecar.base}/readyz"
        while True:
            try:
                r = await with_one_retry(lambda: self.rig.http.get(url, timeout=2.0))
                sample = Sample(time.monotonic(), r.status_code, r.text[:300])
            except httpx.TransportError as exc:
                sample = Sample(time.monotonic(), 0, type(exc).__name__)
            self.samples.append(sample)
            await asyncio.sleep(self.every)

    def outage(self, start: float, end: float) -> Outage:
        during = [s for s in self.samples if start <= s.at < end]
        first_bad = next((s for s in during if s.status != 200), None)
        notice = None if first_bad is None else first_bad.at - start
        flaps = (
            0
            if first_bad is None
            else sum(1 for s in during if s.at > first_bad.at and s.status == 200)
        )
        back = next((s for s in self.samples if s.at >= end and s.status == 200), None)
        reasons = sorted({s.body for s in during if s.status != 200})
        return Outage(notice, None if back is None else back.at - end, flaps, reasons)

    def not_ready_between(self, start: float, end: float) -> list[Sample]:
        return [s for s in self.samples if start <= s.at < end and s.status != 200]

    def transitions(self, t0: float) -> str:
        """``t+1.2s 503 (reason) -> t+21.5s 200`` for the messages."""
        out: list[str] = []
        last: int | None = None
        for s in self.samples:
            if s.status != last:
                reason = f" ({s.body[:80]})" if s.status != 200 else ""
                out.append(f"t+{s.at - t0:.1f}s {s.status}{reason}")
                last = s.status
        return " -> ".join(out)


async def with_one_retry(call: Callable[[], Awaitable[httpx.Response]]) -> httpx.Response:
    """``call()``, once more at once if it failed to connect or read before any answer:
    a pooled keep-alive connection the server closed just then fails that way, which
    is the client's race, not the sidecar's fault. A sidecar that is down or hangs
    fails both (a timeout is not retried)."""
    try:
        return await call()
    except (httpx.ConnectError, httpx.ReadError, httpx.RemoteProtocolError):
        return await call()


async def metrics(rig: Rig) -> dict[str, float]:
    """``/metrics`` as the sum of each sample name's values (all label sets together);
    ``name{label=value}`` keys too, for labelled samples. Empty if the sidecar does not
    answer (the caller says so, with its log)."""
    try:
        r = await rig.http.get(f"{rig.sidecar.base}/metrics")
    except httpx.TransportError:
        return {}
    if r.status_code != 200:
        return {}
    sums: dict[str, float] = {}
    for family in text_string_to_metric_families(r.text):
        for s in family.samples:
            sums[s.name] = sums.get(s.name, 0.0) + s.value
            if s.labels:
                labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
                key = f"{s.name}{{{labels}}}"
                sums[key] = sums.get(key, 0.0) + s.value
    return sums


async def until(rig: Rig, done: Callable[[], bool], timeout: float, every: float = 0.5) -> bool:
    """Wait until ``done()`` (re-checked whenever the participants saw something), or
    ``timeout``; False on timeout. A participants' crash fails the test at once."""
    record = rig.services.record
    deadline = time.monotonic() + timeout
    while not done():
        if rig.services.error is not None:
            raise AssertionError(f"participants failed: {rig.services.error!r}")
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        record.changed.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(record.changed.wait(), min(left, every))
    return True


async def gather_each(runs: dict[str, Awaitable[None]]) -> None:
    """Run one scenario per broker side by side; fail with every broker's failure."""
    names = list(runs)
    results = await asyncio.gather(*runs.values(), return_exceptions=True)
    failures = [(n, r) for n, r in zip(names, results, strict=True) if isinstance(r, BaseException)]
    for _, r in failures:
        if not isinstance(r, AssertionError | Exception):
            raise r  # cancellation, KeyboardInterrupt: not a finding
    if failures:
        text = "\n\n".join(f"=== {n}: {type(r).__name__}: {r}" for n, r in failures)
        raise AssertionError(f"{len(failures)} of {len(names)} broker(s) failed:\n{text}")
