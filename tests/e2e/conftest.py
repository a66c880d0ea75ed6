"""Fixtures of the end-to-end tests: one raw participant client per broker, each
with broker names of its own that it deletes afterwards."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.e2e.clients import KafkaClient, NatsClient, RabbitClient
from tests.support.kafka import Tansu, kafka_broker
from tests.support.services import require

__all__ = ["kafka_broker", "kafka_client", "nats_client", "rabbit_client"]


@pytest.fixture
async def nats_client() -> AsyncIterator[NatsClient]:
    require("nats", "127.0.0.1", 4222)
    client = await NatsClient().connect()
    try:
        yield client
    finally:
        await client.close()


@pytest.fixture
async def rabbit_client() -> AsyncIterator[RabbitClient]:
    require("rabbitmq", "127.0.0.1", 5672)
    client = await RabbitClient().connect()
    try:
        yield client
    finally:
        await client.close()


@pytest.fixture
async def kafka_client(kafka_broker: Tansu) -> AsyncIterator[KafkaClient]:
    client = await KafkaClient(f"127.0.0.1:{kafka_broker.port}").connect()
    try:
        yield client
    finally:
        await client.close()
