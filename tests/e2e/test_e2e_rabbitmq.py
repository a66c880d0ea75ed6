"""The order saga end to end on RabbitMQ (exchange and consumer group of its own):
``sagawire run`` in a subprocess, raw participants, 100 orders; see :mod:`tests.e2e.driver`."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e.clients import RabbitClient
from tests.e2e.driver import Restart, run_scenario

pytestmark = [pytest.mark.broker("rabbitmq"), pytest.mark.slow]


async def test_orders_end_as_their_fate_says(rabbit_client: RabbitClient, tmp_path: Path) -> None:
    timings = await run_scenario(rabbit_client, tmp_path)
    print(f"rabbitmq e2e: {timings}")


async def test_kill_9_mid_run_loses_nothing_and_keeps_ids(
    rabbit_client: RabbitClient, tmp_path: Path
) -> None:
    timings = await run_scenario(rabbit_client, tmp_path, Restart.KILL)
    print(f"rabbitmq e2e with kill -9: {timings}")


async def test_sigterm_under_load_exits_0_and_loses_nothing(
    rabbit_client: RabbitClient, tmp_path: Path
) -> None:
    timings = await run_scenario(rabbit_client, tmp_path, Restart.TERM)
    print(f"rabbitmq e2e with SIGTERM half way: {timings}")
