"""Interop: services written with FastStream take part in sagawire's sagas, on NATS JetStream.

``sagawire run`` runs as a subprocess on a stream of the test's own; inventory and
payment are FastStream apps (:mod:`tests.client.faststream_services`), shipping a
:class:`orchestrator.client.Service`, the shop a :class:`orchestrator.client.Publisher`.
Each order's outcome is read from the sidecar's HTTP API: one order completes, one is
declined by payment and compensated (its reservation released by the FastStream
inventory on sagawire's command).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import nats
import nats.js.errors
import pytest
from faststream.nats import NatsBroker

from orchestrator.client import Emit, Publisher, Service
from schemas.envelope import Envelope
from tests.client.faststream_services import Replies, checkout_services, order_services
from tests.e2e.sidecar import SAGAWIRE, free_port, until_ready
from tests.support.services import require, unique

pytestmark = [pytest.mark.broker("nats"), pytest.mark.slow]

HOST, PORT = "127.0.0.1", 4222
ROOT = Path(__file__).resolve().parents[2]
TIMEOUT = 60.0
ORDER = {"customer_id": "c-1", "items": [{"sku": "s-1", "qty": 1}], "amount_cents": 1500}


@pytest.fixture
async def stream() -> AsyncIterator[str]:
    require("nats", HOST, PORT)
    name = unique("SWFS_")
    yield name
    nc = await nats.connect(f"nats://{HOST}:{PORT}")
    with contextlib.suppress(nats.js.errors.NotFoundError):
        await nc.jetstream().delete_stream(name)
    await nc.close()


def broker_url(stream: str) -> str:
    return f"nats://{HOST}:{PORT}?stream={stream}&deadletter=sagawire.deadletter.{stream}"


@contextlib.asynccontextmanager
async def sidecar(saga: str, stream: str, tmp_path: Path) -> AsyncIterator[str]:
    """``sagawire run --sagas sagas/<saga>.py`` on the test's stream; its HTTP base URL."""
    port = free_port()
    log = tmp_path / "sidecar.log"
    with log.open("wb") as out:
        proc = await asyncio.create_subprocess_exec(
            *SAGAWIRE,
            "run",
            *("--sagas", str(ROOT / "sagas" / f"{saga}.py")),
            *("--broker", broker_url(stream)),
            *("--store", f"sqlite:///{tmp_path / 'sagawire.db'}"),
            *("--http", f"127.0.0.1:{port}"),
            *("--group", unique("sw-")),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=out,
            stderr=asyncio.subprocess.STDOUT,
            cwd=ROOT,
            env={**os.environ, "SAGAWIRE_LOG_LEVEL": "warning"},
        )
    base = f"http://127.0.0.1:{port}"

    def tail() -> str:
        return log.read_text(errors="replace")[-3000:]

    try:
        async with httpx.AsyncClient() as http:
            await until_ready(http, base, lambda: proc.returncode, tail)
        yield base
    finally:
        if proc.returncode is None:
            proc.terminate()
            await asyncio.wait_for(proc.wait(), 20)


@contextlib.asynccontextmanager
async def faststream(
    build: Callable[[NatsBroker, str, str], Replies], stream: str
) -> AsyncIterator[Replies]:
    broker = NatsBroker(f"nats://{HOST}:{PORT}")
    replies = build(broker, stream, unique(""))
    await broker.start()
    try:
        yield replies
    finally:
        await broker.stop()


@contextlib.asynccontextmanager
async def shipping(stream: str, on: str) -> AsyncIterator[Service]:
    """Shipping, with the client library: schedules on ``on`` (a command or an event)."""
    service = Service("shipping", broker_url(stream), group=unique("shipping-"))

    @service.on(on, emits=["shipping.scheduled"])
    def schedule(data: dict[str, Any], env: Envelope) -> Emit:
        oid = data["order_id"]
        return Emit("shipping.scheduled", {"order_id": oid, "tracking_id": f"t-{oid}"})

    await service.start()
    task = asyncio.ensure_future(service.run())
    try:
        yield service
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await service.close()


async def outcomes(base: str, saga: str, orders: list[str]) -> dict[str, str]:
    """Each order's final status, once all are final."""
    async with httpx.AsyncClient() as http, asyncio.timeout(TIMEOUT):
        while True:
            found = {}
            for oid in orders:
                r = await http.get(f"{base}/instances/{saga}/{oid}")
                if r.status_code == 200:
                    found[oid] = r.json()["status"]
            if len(found) == len(orders) and "running" not in found.values():
                return found
            await asyncio.sleep(0.2)


async def place(stream: str, orders: list[str]) -> None:
    async with Publisher(broker_url(stream), source="shop") as shop:
        for oid in orders:
            await shop.publish("order.placed", {"order_id": oid, **ORDER}, correlationid=oid)


async def test_faststream_services_take_part_in_the_order_saga(stream: str, tmp_path: Path) -> None:
    orders = ["o-1", "o-2-declined"]
    async with (
        sidecar("order", stream, tmp_path) as base,
        faststream(order_services, stream) as fs,
        shipping(stream, "shipping.schedule") as ship,
    ):
        await place(stream, orders)
        assert await outcomes(base, "order", orders) == {
            "o-1": "completed",
            "o-2-declined": "compensated",
        }
    assert fs.done == {
        "fs/inventory:inventory.reserve": 2,
        "fs/payment:payment.charge": 2,
        "fs/inventory:inventory.release": 1,
    }
    assert ship.stats.handled == 1


async def test_faststream_services_take_part_in_the_checkout_choreography(
    stream: str, tmp_path: Path
) -> None:
    """Nobody commands inventory, payment or shipping: they react to each other's events,
    each on a consumer of its own; sagawire watches every step and, when payment
    declines, sends the release the FastStream inventory carries out."""
    orders = ["o-1", "o-2-declined"]
    async with (
        sidecar("checkout", stream, tmp_path) as base,
        faststream(checkout_services, stream) as fs,
        shipping(stream, "payment.charged") as ship,
    ):
        await place(stream, orders)
        assert await outcomes(base, "checkout", orders) == {
            "o-1": "completed",
            "o-2-declined": "compensated",
        }
    assert fs.done == {
        "fs/inventory:order.placed": 2,
        "fs/payment:inventory.reserved": 2,
        "fs/inventory:inventory.release": 1,
    }
    assert ship.stats.handled == 1
