"""The client contract on Kafka (the session's Tansu broker): topics under a prefix of the
test's own, deleted afterwards."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.client.contract import ClientContract
from tests.support.kafka import Tansu, delete_topics
from tests.support.services import unique

pytestmark = pytest.mark.broker("kafka")


class TestKafkaClient(ClientContract):
    @pytest.fixture
    async def broker_url(self, kafka_broker: Tansu) -> AsyncIterator[str]:
        prefix = unique("swc") + "."
        yield f"{kafka_broker.url}&topic_prefix={prefix}"
        await delete_topics(kafka_broker, prefix)
