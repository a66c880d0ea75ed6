"""The demo is deterministic per seed and reaches every final status; the bench reports sanely.

No timing assertions: these run on loaded CI machines.
"""

from __future__ import annotations

import io
import sys
from pathlib import Path

import pytest
from rich.console import Console

from orchestrator.sidecar.logs import configure_logging
from orchestrator.store import open_store
from orchestrator.tooling.bench import fresh_sqlite, percentile, run_bench, warmup_sagas
from orchestrator.tooling.demo import DemoResult, run_demo, simulate
from orchestrator.tooling.participants import BENCH, Behaviour, Participant

SEED = 1  # with the default failure rates, 50 orders reach all three final statuses


@pytest.fixture(autouse=True)
def _quiet_logs() -> None:
    configure_logging("warning", json=True)


async def _demo(orders: int, seed: int, store_url: str = "memory://") -> tuple[DemoResult, str]:
    out = io.StringIO()
    console = Console(file=out, width=120, force_terminal=False)
    result = await simulate(orders, seed, store_url, "memory://", console)
    assert await run_demo(orders, seed, store_url, "memory://", console) == 0
    return result, out.getvalue()


async def test_demo_finishes_every_order_deterministically_with_every_outcome() -> None:
    first, text = await _demo(50, SEED)
    second, _ = await _demo(50, SEED)
    counts = first.counts
    assert sum(counts.values()) == 50
    assert counts.get("running", 0) == 0
    assert counts == second.counts
    assert first.latencies == second.latencies  # saga time: the very same figures
    for status in ("completed", "compensated", "compensation_failed"):
        assert counts.get(status, 0) >= 1, counts
        assert status in text
    assert "saga time" in text and "p99" in text


@pytest.fixture
def stale_db(tmp_path: Path) -> Path:
    """A file where the demo's database goes: the demo must delete it and start fresh."""
    db = tmp_path / "demo.db"
    db.write_bytes(b"not a database")
    (tmp_path / "demo.db-wal").write_bytes(b"junk")
    return db


async def test_demo_on_sqlite_matches_memory(stale_db: Path) -> None:
    url = f"sqlite:///{stale_db}"
    on_sqlite, _ = await _demo(30, SEED, url)
    on_memory, _ = await _demo(30, SEED)
    assert on_sqlite.counts == on_memory.counts
    assert on_sqlite.latencies == on_memory.latencies


def test_fates_depend_on_the_command_not_on_arrival_order() -> None:
    p = Participant("payment", transport=None, seed=3, behaviour=Behaviour())  # type: ignore[arg-type]
    command = {
        "id": "c1",
        "type": "payment.charge",
        "correlationid": "o-1",
        "attempt": 1,
        "data": {"order_id": "o-1", "customer_id": "c", "amount_cents": 5},
    }
    answers = set()
    for _ in range(3):
        reply, delay = p._answer(command)
        answers.add((reply and (reply.destination, reply.message_id, reply.key), delay))
    assert len(answers) == 1
    bench = Participant("payment", transport=None, behaviour=BENCH)  # type: ignore[arg-type]
    reply, delay = bench._answer(command)
    assert reply is not None and reply.destination == "payment.charged" and delay == 0


def test_fresh_sqlite_and_percentile(tmp_path: Path) -> None:
    db = tmp_path / "x.db"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db}{suffix}").write_text("x")
    fresh_sqlite(f"sqlite:///{db}")
    assert not list(tmp_path.iterdir())
    fresh_sqlite("memory://")  # not a file: nothing happens
    assert percentile([3.0, 1.0, 2.0, 4.0], 50) == 2.0
    assert percentile([3.0, 1.0, 2.0, 4.0], 100) == 4.0


async def test_bench_reports_every_figure(capsys: pytest.CaptureFixture[str]) -> None:
    result = await run_bench("memory://", "memory://", sagas=300, concurrency=64)
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert line.startswith("{") and '"transitions_per_s"' in line
    for key in (
        "transitions_per_s",
        "sagas_per_s",
        "p50_ms",
        "p99_ms",
        "peak_rss_mb",
        "rss_growth_mb",
        "baseline_relay_per_s",
        "ratio",
    ):
        assert isinstance(result[key], float), key  # type: ignore[literal-required]
    assert result["sagas"] == 300 and result["concurrency"] == 64
    assert result["broker"] == "memory://" and result["store"] == "memory://"
    assert result["participants"] == "inline"  # what "auto" means on the in-memory broker
    assert result["transitions_per_s"] > 0 and result["baseline_relay_per_s"] > 0
    assert 0 < result["p50_ms"] <= result["p99_ms"]
    assert result["peak_rss_mb"] > 0
    assert result["ratio"] == pytest.approx(
        result["transitions_per_s"] / result["baseline_relay_per_s"], rel=0.01
    )
    before, after = result["baseline_relay_runs"]  # one relay each side of the engine
    assert result["baseline_relay_per_s"] == pytest.approx((before + after) / 2, rel=0.01)
    # Rates count the measured sagas only, not the untimed warm-up lot before them.
    assert result["warmup_sagas"] == warmup_sagas(300, 64) == 30
    # (a warm-up saga's transitions counted too would make this more than 4 per saga)
    assert result["transitions_per_s"] == pytest.approx(4 * result["sagas_per_s"], rel=0.01)
    # Where the CPU went: this process's per transition (and per relayed message), and
    # the whole machine's, which includes it (to a tick's resolution, 10 ms a core).
    assert result["cores"] >= 1
    assert result["cpu_us_per_transition"] > 0 and result["relay_cpu_us_per_msg"] > 0
    assert result["cpu_us_per_transition"] == pytest.approx(
        result["cpu_s"] * 1e6 / (4 * 300), rel=0.05, abs=50
    )
    if sys.platform == "linux":
        transitions = 4 * 300
        slack_us = 0.02 * result["cores"] * 1e6 / transitions  # two readings' ticks
        assert result["machine_cpu_us_per_transition"] >= (
            result["cpu_us_per_transition"] - slack_us
        )
        assert result["relay_machine_cpu_us_per_msg"] >= 0


async def test_bench_ring_reports_the_engine_free_flow(capsys: pytest.CaptureFixture[str]) -> None:
    result = await run_bench("memory://", "memory://", sagas=200, concurrency=64, ring=True)
    assert result["ring_per_s"] > result["transitions_per_s"] > 0  # a stub outruns the engine
    assert result["ratio_to_ring"] == pytest.approx(
        result["transitions_per_s"] / result["ring_per_s"], rel=0.01
    )
    assert '"ratio_to_ring"' in capsys.readouterr().out
    assert result["ring_cpu_us_per_transition"] > 0
    without = await run_bench("memory://", "memory://", sagas=50, concurrency=16)
    assert "ring_per_s" not in without and "ratio_to_ring" not in without


def test_warm_up_is_a_tenth_of_the_run_within_one_window() -> None:
    assert warmup_sagas(10_000, 512) == 512
    assert warmup_sagas(300, 64) == 30
    assert warmup_sagas(5, 64) == 1


async def test_bench_on_sqlite_starts_from_an_empty_store(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'bench.db'}"
    await run_bench("memory://", url, sagas=100, concurrency=32)
    await run_bench("memory://", url, sagas=100, concurrency=32)  # fresh file: no leftovers
    store = open_store(url)
    await store.open()
    try:
        # The measured sagas and the untimed warm-up lot before them, of the second run only.
        assert await store.counts() == {"completed": 100 + warmup_sagas(100, 32)}
    finally:
        await store.close()
