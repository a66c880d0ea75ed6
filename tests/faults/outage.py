"""One dependency of the sidecar cut mid-run: the scenario the outage tests share.

Orders arrive at a steady rate before, during and after the cut (through the
broker, and every fifth through ``POST /events``, retried after a 503). What must
hold, per the issue: every order completes, with one effect per command; nothing
is dead-lettered; ``/readyz`` answers 503 within :data:`~tests.faults.mode.NOTICE`
seconds of the cut, naming the dependency, stays 503 until the cut ends and
answers 200 within :data:`~tests.faults.mode.READY_AGAIN` seconds after; ``POST
/events`` answers 503 during the cut (once the sidecar noticed it), and never hangs. The figures are
reported before anything is asserted, so a failing run still gives them.
"""

from __future__ import annotations

import time
from collections import Counter
from math import inf

from tests.faults.checks import check_orders, verdict
from tests.faults.mode import NOTICE, READY_AGAIN, SETTLE
from tests.faults.report import duration, report
from tests.faults.rig import Rig
from tests.faults.traffic import Orders, ReadyWatch, metrics
from tests.support.proxy import TcpProxy

RATE = 10.0
"""Orders a second, all through the run."""
BEFORE = 3.0
AFTER = 3.0
HTTP_SLOW = 5.0
"""Seconds a ``POST /events`` may take, outage or not: a 503 must come at once."""


async def cut_mid_run(
    rig: Rig, proxy: TcpProxy, seconds: float, *, what: str, names: tuple[str, ...]
) -> None:
    """Cut ``proxy`` for ``seconds`` while orders flow; ``names``: words one of which
    the 503's reason must contain (the failing dependency)."""
    label = f"{what} cut {seconds:.0f}s on {rig.broker}"
    async with ReadyWatch(rig) as ready:
        orders = Orders(rig)
        await orders.steady(RATE, BEFORE)
        start = time.monotonic()
        await proxy.cut()
        await orders.steady(RATE, seconds)
        proxy.resume()
        end = time.monotonic()
        await orders.steady(RATE, AFTER)
        await orders.drain_http(10.0)
        during = [o for o, at in orders.placed_at.items() if start <= at < end]
        problems: list[str] = []
        settle_start = time.monotonic()
        try:
            await check_orders(rig, orders.ids, timeout=SETTLE, what=f"{label}: ")
        except AssertionError as exc:
            problems.append(str(exc))
        backlog = [o for o, at in orders.placed_at.items() if at < end]
        drained = max((rig.record.outcome_at(o) or inf for o in backlog), default=end)
        outage = ready.outage(start, end)
        noticed = outage.notice if outage.notice is not None else NOTICE
        http_during = orders.http_between(start + min(noticed, NOTICE), end)
        counted = await metrics(rig) if rig.sidecar.running else {}
    dead = counted.get("sagawire_dead_letters_total", 0.0)  # no sample until one
    reasons = sorted({r[:90] for r in outage.reasons})
    report(
        f"{label}: {len(orders.ids)} orders ({len(during)} placed during the cut), "
        f"{sum(rig.record.finished(o) for o in orders.ids)} finished; the backlog placed "
        f"before the end drained {duration(None if drained == inf else max(0.0, drained - end))} after it "
        f"(settled in {time.monotonic() - settle_start:.1f}s); {outage.line()}; "
        f"503 reason {reasons[:2]}; POST /events during the cut: "
        f"{dict(Counter(p.status for p in http_during))}; slowest POST "
        f"{max((p.took for p in orders.http), default=0.0):.2f}s; dead letters {len(rig.record.dead)} "
        f"(metric {dead:.0f})"
    )
    if outage.notice is None or outage.notice > NOTICE:
        problems.append(f"/readyz did not answer 503 within {NOTICE}s of the cut")
    if outage.flaps:
        problems.append(f"/readyz answered 200 {outage.flaps} time(s) during the cut")
    unnamed = [r for r in outage.reasons if not any(n in r.lower() for n in names)]
    if unnamed:
        problems.append(
            f"/readyz's 503 does not name the {what} ({' or '.join(names)}): {unnamed[:3]}"
        )
    if outage.ready_again is None or outage.ready_again > READY_AGAIN:
        problems.append(f"/readyz not 200 within {READY_AGAIN}s after the cut ({outage.line()})")
    accepted = [p for p in http_during if p.status != 503]
    if accepted:
        problems.append(
            f"POST /events answered {len(accepted)} time(s) during the cut, not 503: "
            f"{'; '.join(map(str, accepted[:3]))}"
        )
    slow = orders.http_slow(HTTP_SLOW)
    if slow:
        problems.append(
            f"POST /events took over {HTTP_SLOW}s {len(slow)} time(s): {'; '.join(map(str, slow[:3]))}"
        )
    if dead != len(rig.record.dead):
        problems.append(
            f"sagawire_dead_letters_total is {dead:.0f} after {len(rig.record.dead)} dead letters"
        )
    verdict(label, problems, rig, f"/readyz: {ready.transitions(rig.t0)}")
