"""Input too big to take and a command the broker refuses: set aside, and nothing waits.

Issue 14, part 2: one ``order.placed`` with a 100 KB ``correlationid`` created an
instance whose command NATS refused (header too large); the outbox retried it
forever and good orders took seconds instead of a tenth of one. Here good orders
flow at 10 a second (every fifth through ``POST /events``) before, during and after
three bad inputs, placed by a participant:

* an ``order.placed`` whose ``correlationid`` is 100 KB (over the ~1 KiB attribute
  limit): dead-lettered at decode, with a reason naming ``correlationid``;
* an ``order.placed`` of 400 KB (over the 256 KiB message limit, under every
  broker's own): dead-lettered, with a reason about its size;
* ``bloat.requested`` (:mod:`tests.faults.sagas_refused`), small, whose command is
  2 MB, over NATS's ``max_payload`` and aiokafka's request size: the broker (or its
  client) refuses it for good, so it must be recorded as a failed publish
  (``sagawire_publish_refused_total``, ``GET /outbox/failed``) and leave the relay.
  Not on RabbitMQ, whose limit (16-128 MiB) is too big to reach in a test.

What must hold: the bad inputs are dead-lettered (and counted, by reason) or
recorded as failed, nothing else is; every good order completes; their latency
while the bad input is handled stays near what it was before (p95 within
:data:`SLOWER` times, or :data:`FLOOR` s); ``/readyz`` stays 200 and ``POST /events``
answers 202 throughout. Bounded: NATS, the broker of the original report; full:
every broker.
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import httpx
import pytest

from tests.e2e.scenario import cloudevent
from tests.faults.checks import check_orders, dead_letter_reasons, instance, verdict
from tests.faults.mode import ALL_BROKERS, FULL, SETTLE
from tests.faults.report import p95, report, spread
from tests.faults.rig import Rig, open_rig, select_brokers
from tests.faults.sidecar import REFUSED_SAGAS
from tests.faults.traffic import Orders, ReadyWatch, gather_each, metrics, placed, until
from tests.support.kafka import Tansu

pytestmark = [pytest.mark.fault, pytest.mark.slow, *(pytest.mark.broker(b) for b in ALL_BROKERS)]

BROKERS = ALL_BROKERS if FULL else ("nats",)
REFUSING = ("nats", "kafka")
"""Brokers whose limit a 2 MB command exceeds."""
RATE = 10.0
BEFORE, DURING, AFTER = 3.0, 8.0, 3.0
SLOWER = 3.0
FLOOR = 1.0
"""Seconds of p95 latency that count as unaffected whatever the baseline."""
BIG_CORRELATION = cloudevent(
    "order.placed",
    {
        "order_id": "bad-corr",
        "customer_id": "c",
        "items": [{"sku": "s", "qty": 1}],
        "amount_cents": 1,
    },
    id_="placed-bad-corr",
    correlation="c" * 100_000,
)
BIG_MESSAGE = placed("bad-size", note="x" * 400_000)
BLOAT = cloudevent("bloat.requested", {"bloat_id": "bloat-1", "size": 2_000_000}, id_="bloat-1")


def _latencies(rig: Rig, orders: Orders, start: float, end: float) -> list[float]:
    return [
        done - at
        for oid, at in orders.placed_at.items()
        if start <= at < end and (done := rig.record.outcome_at(oid)) is not None
    ]


async def _refused(rig: Rig) -> tuple[float, str]:
    counted = await metrics(rig)
    try:
        r = await rig.http.get(f"{rig.sidecar.base}/outbox/failed")
        failed = f"{r.status_code} {r.text[:300]}"
    except httpx.TransportError as exc:
        failed = repr(exc)
    return counted.get("sagawire_publish_refused_total", 0.0), failed


async def _scenario(broker: str, workdir: Path, kafka: Tansu | None) -> None:
    refuse = broker in REFUSING
    async with (
        open_rig(broker, workdir, kafka=kafka, store="sqlite", sagas=REFUSED_SAGAS) as rig,
        ReadyWatch(rig) as ready,
    ):
        orders = Orders(rig)
        await orders.steady(RATE, BEFORE)
        start = time.monotonic()
        await rig.client.publish("order.placed", BIG_CORRELATION, key="bad-corr")
        await rig.client.publish("order.placed", BIG_MESSAGE, key="bad-size")
        if refuse:
            await rig.client.publish("bloat.requested", BLOAT, key="bloat-1")
        await orders.steady(RATE, DURING)
        end = time.monotonic()
        await orders.steady(RATE, AFTER)
        await orders.drain_http(10.0)
        problems: list[str] = []
        try:
            await check_orders(
                rig,
                orders.ids,
                timeout=SETTLE,
                expected_dead=(BIG_CORRELATION, BIG_MESSAGE),
                what=f"bad input on {broker}: ",
            )
        except AssertionError as exc:
            problems.append(str(exc))
        bloat: dict[str, object] = {}
        if refuse:

            async def bloat_done() -> bool:
                nonlocal bloat
                bloat = await instance(rig, "bloat-1", saga="bloat")
                return bloat.get("status") not in (None, "running")

            deadline = time.monotonic() + 15
            while not await bloat_done() and time.monotonic() < deadline:
                await until(rig, lambda: False, 0.5)
        refused, failed = await _refused(rig)
        counted = await metrics(rig)
        not_ready = ready.not_ready_between(rig.t0, time.monotonic())
    before = _latencies(rig, orders, rig.t0, start)
    during = _latencies(rig, orders, start, end)
    after = _latencies(rig, orders, end, time.monotonic())
    reasons = {
        "correlationid": next(
            (
                d.headers.get("sagawire-reason", "")
                for d in rig.record.dead
                if d.body == BIG_CORRELATION
            ),
            None,
        ),
        "size": next(
            (
                d.headers.get("sagawire-reason", "")
                for d in rig.record.dead
                if d.body == BIG_MESSAGE
            ),
            None,
        ),
    }
    dead_metric = {k: v for k, v in counted.items() if k.startswith("sagawire_dead_letters_total")}
    report(
        f"bad input on {broker}: good-order latency before {spread(before)}; during "
        f"{spread(during)}; after {spread(after)}; POST /events {dict(Counter(p.status for p in orders.http))}; "
        f"/readyz not 200 {len(not_ready)} time(s); dead letters {dict(dead_letter_reasons(rig.record))}; "
        f"metric {dead_metric}"
        + (
            f"; refused publishes {refused:.0f}, /outbox/failed {failed[:160]}; bloat {bloat}"
            if refuse
            else ""
        )
    )
    for bad in ("bad-corr", "bad-size"):
        if rig.record.messages.get(bad):
            problems.append(f"{bad} was taken: {rig.record.describe(bad)}")
    if reasons["correlationid"] is None or "correlationid" not in reasons["correlationid"].lower():
        problems.append(
            f"the 100 KB correlationid: dead-letter reason {reasons['correlationid']!r}"
        )
    words = ("size", "bytes", "large", "limit")
    if reasons["size"] is None or not any(w in reasons["size"].lower() for w in words):
        problems.append(f"the 400 KB message: dead-letter reason {reasons['size']!r}")
    if dead_metric.get("sagawire_dead_letters_total") != 2:
        problems.append(f"sagawire_dead_letters_total: {dead_metric}, want 2")
    if not any("reason=" in k for k in dead_metric):
        problems.append(f"sagawire_dead_letters_total has no reason label: {dead_metric}")
    if refuse:
        if refused < 1:
            problems.append(f"sagawire_publish_refused_total is {refused} after a 2 MB command")
        if not failed.startswith("200") or "bloat.do" not in failed:
            problems.append(f"GET /outbox/failed does not list bloat.do: {failed}")
        if bloat.get("status") != "compensated":
            problems.append(f"the bloat saga did not end compensated: {bloat}")
    for name, window in (("during", during), ("after", after)):
        limit = max(FLOOR, SLOWER * p95(before))
        if p95(window) > limit:
            problems.append(
                f"good orders slowed {name} the bad input: p95 {p95(window):.2f}s > {limit:.2f}s "
                f"(before: {spread(before)}; {name}: {spread(window)})"
            )
    if not_ready:
        problems.append(f"/readyz not 200: {ready.transitions(rig.t0)}")
    refused_http = [p for p in orders.http if p.status != 202]
    if refused_http:
        problems.append(
            f"POST /events refused {len(refused_http)} good order(s): "
            f"{'; '.join(map(str, refused_http[:3]))}"
        )
    verdict(f"bad input on {broker}", problems, rig)


@pytest.mark.timeout(int(BEFORE + DURING + AFTER + SETTLE + 90))
async def test_bad_input_is_set_aside_and_good_traffic_does_not_wait(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    brokers, kafka = select_brokers(request, BROKERS)
    await gather_each({b: _scenario(b, tmp_path / b, kafka) for b in brokers})
