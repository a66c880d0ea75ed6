"""scripts/replay_pipeline.py, which docs/performance.md quotes, still measures real work.

No timing assertions: only that the captured stream is replayed in full (every delivery
a transition, not a duplicate skipped) on both embedded stores, and that the stage
timers leave the engine's behaviour alone.
"""

from __future__ import annotations

import collections
import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

from orchestrator.sidecar.logs import configure_logging

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "replay_pipeline.py"


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("replay_pipeline", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


async def test_the_captured_stream_replays_in_full_on_both_embedded_stores(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    configure_logging("warning", json=True)
    replay = _load()
    batches = await replay.capture(20)
    deliveries = sum(len(b) for b in batches)
    assert deliveries == 4 * (20 + 2)  # the bench's 2 warm-up sagas, 4 transitions each
    for owner, name, _ in replay.STAGES:  # undone after the test, like the wrappers
        monkeypatch.setattr(owner, name, getattr(owner, name))
    totals: collections.Counter[str] = collections.Counter()
    replay.time_stages(totals)
    for store in ("memory://", f"sqlite:///{tmp_path}/replay.db"):
        us, transitions = await replay.replay(batches, store)
        assert us > 0
        assert transitions == deliveries
    assert {label for _, _, label in replay.STAGES} == set(totals)
