"""The client contract on RabbitMQ: an exchange of the test's own, deleted afterwards with
the queues of the test's groups."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import aio_pika
import pytest

from tests.client.contract import ClientContract, Names
from tests.support.services import require, unique

HOST, PORT = "127.0.0.1", 5672
ADMIN_URL = f"amqp://guest:guest@{HOST}:{PORT}/"

pytestmark = pytest.mark.broker("rabbitmq")


async def delete(exchange: str, queues: list[str]) -> None:
    """Each delete on a channel of its own: a failed one closes its channel."""
    conn = await aio_pika.connect(ADMIN_URL)
    async with conn:
        for q in queues:
            with contextlib.suppress(Exception):
                async with conn.channel() as ch:
                    await ch.queue_delete(q)
        with contextlib.suppress(Exception):
            async with conn.channel() as ch:
                await ch.exchange_delete(exchange)


class TestRabbitClient(ClientContract):
    @pytest.fixture
    async def broker_url(self, names: Names) -> AsyncIterator[str]:
        require("rabbitmq", HOST, PORT)
        exchange = unique("swc_")
        yield f"{ADMIN_URL}?exchange={exchange}"
        groups = [names.group(g) for g in ("payment", "watch")]
        queues = [f"sagawire.{g}" for g in groups] + [f"{exchange}.deadletter"]
        await delete(exchange, queues)
