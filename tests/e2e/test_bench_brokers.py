"""``sagawire bench`` on each real broker, small: every saga completes, both relays run.

The figures are not checked (timed assertions flake on a shared machine); what is
checked is that the bench *works* on each broker, including the relay measured
again after the engine run, with its broker names removed afterwards
(scripts/bench_brokers.py, the script behind the README table, does the naming
and the clean-up)."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.tooling.bench import TRANSITIONS_PER_SAGA, BenchResult
from scripts.bench_brokers import RUNNERS
from tests.support.kafka import TansuUnavailable, unavailable
from tests.support.services import require

SAGAS = 200  # enough that rounded figures (elapsed_s to 10 ms) still add up

pytestmark = pytest.mark.timeout(240)


def _check(result: BenchResult) -> None:
    assert result["transitions_per_s"] > 0
    assert result["sagas_per_s"] * result["elapsed_s"] == pytest.approx(SAGAS, rel=0.05)
    assert result["transitions_per_s"] * result["elapsed_s"] == pytest.approx(
        SAGAS * TRANSITIONS_PER_SAGA, rel=0.05
    )
    assert len(result["baseline_relay_runs"]) == 2
    assert all(r > 0 for r in result["baseline_relay_runs"])
    assert result["cpu_us_per_transition"] > 0 and result["relay_cpu_us_per_msg"] > 0
    # The broker's and the services' CPU is the machine's beyond this process's.
    assert result["machine_cpu_us_per_transition"] > 0
    if "ring_per_s" in result:
        assert result["ring_per_s"] > 0
        assert result["ratio_to_ring"] == pytest.approx(
            result["transitions_per_s"] / result["ring_per_s"], rel=0.01
        )


@pytest.mark.parametrize("store", ["memory://", "sqlite"])
async def test_bench_on_nats(store: str, tmp_path: Path) -> None:
    require("nats", "127.0.0.1", 4222)
    url = store if store != "sqlite" else f"sqlite:///{tmp_path / 'b.db'}"
    result = await RUNNERS["nats"](url, SAGAS, 64, "inline")
    assert result["participants"] == "inline"
    _check(result)


async def test_bench_with_services_in_a_child_process(tmp_path: Path) -> None:
    """The default on a real broker (``--participants auto``): the services run as
    ``sagawire simulate`` beside it."""
    require("nats", "127.0.0.1", 4222)
    result = await RUNNERS["nats"](f"sqlite:///{tmp_path / 'b.db'}", SAGAS, 64, "auto", True)
    assert result["participants"] == "process"
    _check(result)
    assert "ring_per_s" in result  # the ring's services ran in a child too


async def test_bench_on_rabbitmq(tmp_path: Path) -> None:
    require("rabbitmq", "127.0.0.1", 5672)
    _check(await RUNNERS["amqp"](f"sqlite:///{tmp_path / 'b.db'}", SAGAS, 64))


async def test_bench_on_kafka_with_the_ring(tmp_path: Path) -> None:
    """With ``--ring``: on Kafka the stub's new consumer group starts from the earliest
    offset, so it reads the engine run's messages first and must let them pass."""
    try:
        result = await RUNNERS["kafka"](f"sqlite:///{tmp_path / 'b.db'}", SAGAS, 64, "inline", True)
    except TansuUnavailable as err:
        unavailable(str(err))
    _check(result)
    assert "ring_per_s" in result
