"""Soak: many sagas through the engine on the durable store, memory bounded by the work in
flight, not by history; and a burst waiting on a real broker. CI runs bounded versions;
SAGAWIRE_SOAK_SCALE=50 gives the 100,000-saga run the README quotes (about 30 s of
engine time per 1,000 x scale) and a 250,000-event burst."""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from pathlib import Path

import pytest

from adapters import open_transport
from orchestrator.engine import Engine, EngineConfig
from orchestrator.language.loader import load_sagas
from orchestrator.sidecar.logs import configure_logging
from orchestrator.store import open_store
from orchestrator.tooling.bench import run_bench, stop_engine
from orchestrator.tooling.participants import order_placed
from tests.support.nats_server import ModernNats
from tests.support.services import require

SCALE = float(os.environ.get("SAGAWIRE_SOAK_SCALE", "1"))


@pytest.mark.soak
@pytest.mark.timeout(int(600 * max(1.0, SCALE)))
async def test_many_sagas_on_sqlite_keep_memory_bounded(tmp_path: Path) -> None:
    configure_logging("warning", json=True)
    sagas = int(2000 * SCALE)
    url = f"sqlite:///{tmp_path}/soak.db"
    result = await run_bench("memory://", url, sagas, 256)
    assert result["sagas"] == sagas
    assert result["rss_growth_mb"] < 150, result
    store = open_store(url)
    await store.open()
    try:
        # every measured saga and the untimed warm-up lot before them
        assert await store.counts() == {"completed": sagas + result["warmup_sagas"]}
        assert await store.pending_outbox() == []
        assert await store.due_timers(float("inf")) == []
    finally:
        await store.close()


def _rss_mb() -> float:
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


@pytest.mark.soak
@pytest.mark.timeout(int(300 * max(1.0, SCALE)))
@pytest.mark.parametrize("server", ["shared", "modern"])
async def test_a_burst_on_nats_is_taken_with_bounded_memory_and_acks(
    tmp_path: Path, server: str, request: pytest.FixtureRequest
) -> None:
    """A burst already waiting on a real broker (5,000 events; 100,000 with
    SAGAWIRE_SOAK_SCALE=20): the engine's memory stays bounded by its in-flight
    window, unacked deliveries never exceed the consumer's ``max_ack_pending``, and
    in the end every event is handled and acknowledged. On the shared server (2.9 here:
    one consumer per subject) and on a modern one (one consumer for all subjects)."""
    import nats

    if server == "modern":
        modern: ModernNats = request.getfixturevalue("modern_nats")
        address = f"{modern.host}:{modern.port}"
    else:
        require("nats", "127.0.0.1", 4222)
        address = "127.0.0.1:4222"
    configure_logging("warning", json=True)
    n = int(5000 * SCALE)
    tag = uuid.uuid4().hex[:8]
    stream = f"SWSOAK{tag}"
    url = f"nats://{address}?stream={stream}&subject_prefix=swsoak{tag}&max_ack_pending=512"
    store = open_store(f"sqlite:///{tmp_path}/burst.db")
    await store.open()
    transport, publisher = open_transport(url), open_transport(url)
    stopping = asyncio.Event()
    running: asyncio.Future[None] | None = None
    nc = None
    try:
        nc = await nats.connect(f"nats://{address}")
        js = nc.jetstream()
        await transport.start()
        await publisher.start()
        engine = Engine(
            load_sagas("sagas.order"), store, transport, config=EngineConfig(group="burst")
        )
        await engine.prepare()  # declares the stream and the durable consumer
        for lo in range(0, n, 1000):
            await publisher.publish(
                [
                    order_placed(f"{tag}-{i}", source="tests/soak", amount_cents=100)
                    for i in range(lo, min(n, lo + 1000))
                ]
            )
        # One durable consumer per consumed subject on NATS 2.9, one in all on 2.10+.
        consumers = [c.name for c in await js.consumers_info(stream)]
        before = peak = _rss_mb()
        most_unacked = 0
        running = asyncio.ensure_future(engine.run(stopping))
        deadline = asyncio.get_running_loop().time() + 60 * max(1.0, SCALE)
        # Done when the broker holds nothing for us. (Not a count of transitions: a
        # long run outlives the 30 s step timeout, and fired timers are transitions too.)
        done = False
        while not done:
            assert not running.done(), running
            assert asyncio.get_running_loop().time() < deadline, engine.stats
            await asyncio.sleep(0.1)
            peak = max(peak, _rss_mb())
            infos = [await js.consumer_info(stream, c) for c in consumers]
            most_unacked = max(most_unacked, *(i.num_ack_pending for i in infos))
            done = all(i.num_pending == i.num_ack_pending == 0 for i in infos)
        await stop_engine(running, stopping, transport)
        assert 0 < most_unacked <= 512  # max_ack_pending in the URL
        assert peak - before < 150, (before, peak)
        print(f"burst of {n}: RSS +{peak - before:.0f} MB, at most {most_unacked} unacked")
        assert engine.stats.deliveries >= n
        assert sum((await store.counts()).values()) == n  # one instance per event
    finally:
        if running is not None and not running.done():
            await stop_engine(running, stopping, transport)
        await publisher.close()
        await transport.close()
        await store.close()
        if nc is not None:
            with contextlib.suppress(Exception):
                await nc.jetstream().delete_stream(stream)
            await nc.close()
