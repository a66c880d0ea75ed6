"""The order saga end to end on NATS JetStream (stream and subject prefix of its own):
``sagawire run`` in a subprocess, raw participants, 100 orders; see :mod:`tests.e2e.driver`."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e.clients import NatsClient
from tests.e2e.driver import Restart, run_scenario

pytestmark = [pytest.mark.broker("nats"), pytest.mark.slow]


async def test_orders_end_as_their_fate_says(nats_client: NatsClient, tmp_path: Path) -> None:
    timings = await run_scenario(nats_client, tmp_path)
    print(f"nats e2e: {timings}")


async def test_kill_9_mid_run_loses_nothing_and_keeps_ids(
    nats_client: NatsClient, tmp_path: Path
) -> None:
    timings = await run_scenario(nats_client, tmp_path, Restart.KILL)
    print(f"nats e2e with kill -9: {timings}")


async def test_sigterm_under_load_exits_0_and_loses_nothing(
    nats_client: NatsClient, tmp_path: Path
) -> None:
    timings = await run_scenario(nats_client, tmp_path, Restart.TERM)
    print(f"nats e2e with SIGTERM half way: {timings}")


@pytest.mark.postgres
async def test_kill_9_mid_run_on_postgresql(
    nats_client: NatsClient, tmp_path: Path, database_url: str
) -> None:
    timings = await run_scenario(nats_client, tmp_path, Restart.KILL, store=database_url)
    print(f"nats + postgresql e2e with kill -9: {timings}")
