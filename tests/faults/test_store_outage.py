"""The PostgreSQL connection cut mid-run, on every broker side by side.

Issue 14, part 1: a store outage longer than the broker's delivery budget (NATS
``max_deliver`` 10 x a 1 s nack delay: ~10 s) lost sagas for good. Each broker's
sidecar has its own database behind its own proxy; all are cut at once, for 20 s
(and 60 s with ``SAGAWIRE_FAULTS=full``). See :mod:`tests.faults.outage`.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.faults.mode import ALL_BROKERS, SETTLE, STORE_CUTS
from tests.faults.outage import AFTER, BEFORE, cut_mid_run
from tests.faults.rig import open_rig, select_brokers
from tests.faults.traffic import gather_each
from tests.support.kafka import Tansu

pytestmark = [
    pytest.mark.fault,
    pytest.mark.slow,
    pytest.mark.postgres,
    *(pytest.mark.broker(b) for b in ALL_BROKERS),
]


async def _scenario(broker: str, workdir: Path, kafka: Tansu | None, seconds: float) -> None:
    async with open_rig(broker, workdir, kafka=kafka, cut_store=True) as rig:
        assert rig.store_proxy is not None
        await cut_mid_run(rig, rig.store_proxy, seconds, what="store", names=("store",))


@pytest.mark.parametrize(
    "seconds",
    [
        pytest.param(
            s, id=f"{s:.0f}s", marks=pytest.mark.timeout(int(BEFORE + s + AFTER + SETTLE + 90))
        )
        for s in STORE_CUTS
    ],
)
async def test_a_database_cut_loses_no_saga_and_readyz_says_so(
    request: pytest.FixtureRequest, tmp_path: Path, seconds: float
) -> None:
    brokers, kafka = select_brokers(request, ALL_BROKERS)
    await gather_each({b: _scenario(b, tmp_path / b, kafka, seconds) for b in brokers})
