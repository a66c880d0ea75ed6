"""Stuck instances: the SLO of a step or state, the default one, the listing's rule,
the gauge, and the watcher's one log line per instance that becomes stuck."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
from structlog.testing import capture_logs

from orchestrator import Event, Retry, Send, Step, StepSaga
from orchestrator.sidecar.http import build_app
from orchestrator.sidecar.stuck import StuckWatcher, stuck_rule
from sagas.order import (
    InventoryRejected,
    InventoryReserved,
    OrderPlaced,
    OrderState,
    ReserveInventory,
)
from tests.cli.test_admin_api import _open, place, reply

slow = StepSaga(
    "slow",
    state=OrderState,
    start=Event("order.placed", OrderPlaced),
    correlate="order_id",
    steps=[
        Step(
            "inventory",
            send=Send("inventory.reserve", ReserveInventory),
            success=Event("inventory.reserved", InventoryReserved),
            failure=Event("inventory.rejected", InventoryRejected),
            timeout=600,
            retry=Retry(attempts=1),
            slo=5.0,
        )
    ],
)


def test_a_step_slo_is_its_state_cut_off_and_others_take_the_default() -> None:
    assert dict(slow.slo) == {"inventory": 5.0}
    rule = stuck_rule([slow], 100.0, 60.0)
    assert rule.cutoffs == (("slow", "inventory", 95.0),)
    assert rule.default == 40.0
    assert stuck_rule([slow], 100.0, None).default is None


async def test_the_watcher_logs_once_per_instance_and_the_gauge_counts(tmp_path: Path) -> None:
    car = await _open(tmp_path, stuck_after=0.05)
    try:
        transport = httpx.ASGITransport(app=build_app(car))
        async with httpx.AsyncClient(transport=transport, base_url="http://s") as c:
            await place(c, car, "o-1", "o-2")
            await asyncio.sleep(0.1)
            watcher = StuckWatcher(car)
            with capture_logs() as logs:
                assert sorted(await watcher.look()) == [("order", "o-1"), ("order", "o-2")]
                assert await watcher.look() == []  # once per instance
            lines = [x for x in logs if x["event"] == "saga instance stuck"]
            assert {x["correlation_id"] for x in lines} == {"o-1", "o-2"}
            assert all(x["state"] == "inventory" and x["slo_s"] == 0.05 for x in lines)
            metrics = (await c.get("/metrics")).text
            assert 'sagawire_stuck_instances{saga="order",state="inventory"} 2.0' in metrics
            await reply(car, c, "inventory.rejected", "o-1", reason="x")
            await watcher.look()
            assert watcher.known == {("order", "o-2")}  # o-1 finished: forgotten
    finally:
        await car.close()
