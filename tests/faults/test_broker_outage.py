"""The broker cut for 20 s mid-run, on every broker side by side.

Each sidecar reaches its broker through its own proxy (for Kafka, a Tansu Kafka-aware
proxy behind it, so metadata points every connection at the cut); the
participants keep their own direct connections and go on placing orders and
answering what was sent before. Stores: SQLite (the store-outage test covers
PostgreSQL). What must hold: :mod:`tests.faults.outage`, the 503 naming the broker.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.faults.mode import ALL_BROKERS, BROKER_CUT, SETTLE
from tests.faults.outage import AFTER, BEFORE, cut_mid_run
from tests.faults.rig import open_rig, select_brokers
from tests.faults.traffic import gather_each
from tests.support.kafka import Tansu

pytestmark = [pytest.mark.fault, pytest.mark.slow, *(pytest.mark.broker(b) for b in ALL_BROKERS)]

NAMES = {"nats": ("nats",), "rabbitmq": ("amqp", "rabbitmq"), "kafka": ("kafka",)}
"""Words one of which the 503's reason must contain: it names the broker."""


async def _scenario(broker: str, workdir: Path, kafka: Tansu | None) -> None:
    async with open_rig(broker, workdir, kafka=kafka, store="sqlite", cut_broker=True) as rig:
        assert rig.broker_proxy is not None
        await cut_mid_run(rig, rig.broker_proxy, BROKER_CUT, what="broker", names=NAMES[broker])


@pytest.mark.timeout(int(BEFORE + BROKER_CUT + AFTER + SETTLE + 90))
async def test_a_broker_cut_loses_no_saga_and_readyz_says_so(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    brokers, kafka = select_brokers(request, ALL_BROKERS)
    await gather_each({b: _scenario(b, tmp_path / b, kafka) for b in brokers})
