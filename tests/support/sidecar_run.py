"""A real sidecar in this process, run through some orders, its ``/metrics`` scraped
before and after: what the metrics and the dashboard tests read.

The sidecar runs as ``sagawire run`` would (its HTTP server on a free port, the engine's
loops, the order saga, a SQLite store) on an in-memory broker, with the simulated
inventory, payment and shipping services answering its commands (some refused, so that
some orders are compensated). One order is placed twice (a duplicate), one is left
running once the services stop (its state has running instances and a timer) until it
is stuck (``stuck_after`` is half a second here), and one message that is no CloudEvent
is dead-lettered.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

from adapters.base import OutgoingMessage
from adapters.memory import MemoryBroker
from orchestrator.sidecar.service import Sidecar
from orchestrator.sidecar.settings import Settings
from orchestrator.tooling.fates import Behaviour, order_placed
from orchestrator.tooling.participants import start_participants

ORDER = str(Path(__file__).resolve().parents[2] / "sagas" / "order.py")
SERVICES = Behaviour(refuse=0.25, silent=0.0, undo_silent=0.0, delay=(0.0, 0.0))
"""Every command answered at once, a quarter of them refused: no timeouts to wait for."""


FAMILIES: dict[str, tuple[str, set[str]]] = {
    "sagawire_deliveries": ("counter", set()),
    "sagawire_transitions": ("counter", set()),
    "sagawire_delivery_outcomes": ("counter", {"saga", "type", "outcome"}),
    "sagawire_state_transitions": ("counter", {"saga", "from_state", "to_state"}),
    "sagawire_commands": ("counter", {"saga", "type"}),
    "sagawire_compensations_started": ("counter", {"saga"}),
    "sagawire_compensations_failed": ("counter", {"saga"}),
    "sagawire_deviations": ("counter", {"saga", "kind"}),
    "sagawire_dead_letters": ("counter", {"reason"}),
    "sagawire_saga_duration_seconds": ("histogram", {"saga", "status"}),
    "sagawire_state_duration_seconds": ("histogram", {"saga", "state"}),
    "sagawire_commit_duration_seconds": ("histogram", set()),
    "sagawire_instances": ("gauge", {"status"}),
    "sagawire_saga_instances": ("gauge", {"saga", "state", "status"}),
    "sagawire_stuck_instances": ("gauge", {"saga", "state"}),
    "sagawire_outbox_backlog": ("gauge", set()),
    "sagawire_outbox_oldest_age_seconds": ("gauge", set()),
    "sagawire_timers_pending": ("gauge", set()),
    "sagawire_timers_due": ("gauge", set()),
    "sagawire_parked_messages": ("gauge", set()),
}
"""The families issue 17 asks ``/metrics`` for: name -> (type, label names).
The dashboard shows each of them."""


@dataclass(frozen=True)
class Run:
    before: str
    """``/metrics`` once the sidecar was ready, before any message."""
    after: str
    """``/metrics`` once the orders finished (one left running)."""
    orders: int
    """Orders placed and finished; one more was left running (``held``)."""
    held: str = "m-held"


def families(text: str) -> dict[str, Metric]:
    """The families of an exposition, by name (a counter's without ``_total``)."""
    return {f.name: f for f in text_string_to_metric_families(text)}


def value(text: str, sample: str, **labels: str) -> float:
    """The value of one sample (0 if absent), e.g. ``value(t, "sagawire_deliveries_total")``."""
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == sample and s.labels == labels:
                return float(s.value)
    return 0.0


async def run_orders(tmp_path: Path, orders: int = 24) -> Run:
    """Run ``orders`` order sagas through a sidecar in this process (see the module)."""
    name = uuid.uuid4().hex
    broker = f"memory://{name}"
    settings = Settings(
        sagas=ORDER,
        broker=broker,
        store=f"sqlite:///{tmp_path / 'metrics.db'}",
        port=0,
        counts_ttl=0.0,  # a census per scrape: the test reads the store as it is
        stuck_after=0.5,  # the held order becomes stuck while the test waits
    )
    car = Sidecar(settings)
    task = asyncio.create_task(car.run())
    try:
        async with httpx.AsyncClient(timeout=10) as c:
            base = await _until(lambda: f"http://{car.address}" if car.address else None)
            await _until_async(lambda: _status(c, f"{base}/readyz", 200))
            before = (await c.get(f"{base}/metrics")).text
            services = await start_participants(broker, seed=7, behaviour=SERVICES)
            try:
                for i in range(orders):
                    await _post(c, base, order_placed(f"m-{i}", source="tests/shop"))
                await _post(c, base, order_placed("m-0", source="tests/shop"))  # a duplicate

                async def finished() -> bool:
                    text = (await c.get(f"{base}/metrics")).text
                    done = sum(
                        value(text, "sagawire_instances", status=s)
                        for s in ("completed", "compensated", "compensation_failed")
                    )
                    return done == orders

                await _until_async(finished, timeout=30)
            finally:
                await services.close()
            await _post(c, base, order_placed("m-held", source="tests/shop"))
            await _until_async(lambda: _status(c, f"{base}/instances/order/m-held", 200))
            assert car.transport is not None
            await car.transport.publish([OutgoingMessage("order.placed", b"{not json", "bad-1")])

            async def dead_lettered() -> bool:
                text = (await c.get(f"{base}/metrics")).text
                return value(text, "sagawire_dead_letters_total", reason="decode") == 1

            await _until_async(dead_lettered)

            async def stuck() -> bool:
                text = (await c.get(f"{base}/metrics")).text
                labels = {"saga": "order", "state": "inventory"}
                return value(text, "sagawire_stuck_instances", **labels) == 1

            await _until_async(stuck)
            after = (await c.get(f"{base}/metrics")).text
    finally:
        car.request_stop("test")
        await asyncio.wait_for(task, 15)
        MemoryBroker.forget(name)
    return Run(before, after, orders)


async def _post(c: httpx.AsyncClient, base: str, message: OutgoingMessage) -> None:
    r = await c.post(f"{base}/events", content=message.body)
    assert r.status_code == 202, r.text


async def _status(c: httpx.AsyncClient, url: str, status: int) -> bool:
    try:
        return (await c.get(url)).status_code == status
    except httpx.TransportError:
        return False


async def _until(probe: Callable[[], Any], timeout: float = 10) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = probe()
        if got:
            return got
        await asyncio.sleep(0.02)
    raise AssertionError("timed out")


async def _until_async(probe: Callable[[], Any], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await probe():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {probe}")
