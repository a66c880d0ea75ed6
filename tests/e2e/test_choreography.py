"""The checkout choreography end to end on every real broker, side by side.

Raw clients play inventory, payment and shipping, reacting to each other's events
with consumers of their own; ``sagawire run --sagas sagas/checkout.py`` (the shipped
saga: 10 s deadlines, 5 s grace) tracks 39 checkouts per broker, with every fate of
:mod:`tests.e2e.choreography.fates` (completes, out of stock, card declined, no
carrier, a silent service, duplicates, reordering, a second reply, an event after
the end), and is killed with -9 early in the run and started again while the
services carry on. :mod:`tests.e2e.choreography.checks` says what must hold.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from sagas.checkout import DEADLINE
from tests.e2e.choreography.driver import Kill, run_checkouts
from tests.e2e.clients import KafkaClient, NatsClient, RabbitClient, ServiceClient
from tests.e2e.sidecar import ROOT
from tests.faults.rig import select_brokers
from tests.faults.traffic import gather_each
from tests.support.kafka import Tansu

BROKERS = ("nats", "rabbitmq", "kafka")
CHECKOUT = ROOT / "sagas" / "checkout.py"
KILL = {"rabbitmq": Kill.IN_FLIGHT, "nats": Kill.IN_FLIGHT, "kafka": Kill.CAUGHT_UP}
"""When each broker's tracker is killed (see :class:`Kill`): in flight where the broker
gives what the dead tracker held to its successor within the grace period."""

pytestmark = [pytest.mark.slow, *(pytest.mark.broker(b) for b in BROKERS)]


@contextlib.asynccontextmanager
async def _client(broker: str, kafka: Tansu | None) -> AsyncIterator[ServiceClient]:
    client: ServiceClient
    if broker == "nats":
        client = await NatsClient().connect()
    elif broker == "rabbitmq":
        client = await RabbitClient().connect()
    else:
        assert kafka is not None
        client = await KafkaClient(f"127.0.0.1:{kafka.port}").connect()
    try:
        yield client
    finally:
        await client.close()


async def _run(broker: str, kafka: Tansu | None, workdir: Path) -> None:
    async with _client(broker, kafka) as client:
        # On Kafka the tracker is a static member, as a replica with a stable name
        # (a pod's) would be: restarted, it gets its partitions back without waiting
        # for its dead self's session to end.
        env = {"SAGAWIRE_KAFKA_INSTANCE_ID": f"{client.group}-0"} if broker == "kafka" else None
        figures = await run_checkouts(
            client, workdir, CHECKOUT, deadline=DEADLINE, kill=KILL[broker], env=env
        )
        print(f"choreography {figures.line()}")


@pytest.mark.timeout(150)
async def test_checkout_choreography_tracked_through_a_kill_9_on_every_broker(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    brokers, kafka = select_brokers(request, BROKERS)
    await gather_each({b: _run(b, kafka, tmp_path / b) for b in brokers})
