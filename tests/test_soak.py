"""Soak: many sagas through the engine on the durable store, memory bounded by the work in
flight, not by history. CI runs a bounded version; set SAGAWIRE_SOAK_SCALE=50 for the
100,000-saga run the README quotes (about 30 s of engine time per 1,000 x scale)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from orchestrator.bench import run_bench
from orchestrator.logs import configure_logging
from orchestrator.store import open_store

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
        assert await store.counts() == {"completed": sagas}
        assert await store.pending_outbox() == []
        assert await store.due_timers(float("inf")) == []
    finally:
        await store.close()
