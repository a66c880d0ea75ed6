"""Lose a participant's reply on the wire: publish it through a proxy that drops it.

A :class:`LossyPublisher` opens a connection of its own to the broker through a
:class:`~tests.support.proxy.TcpProxy`, sets the proxy to drop what goes up, and
publishes: the bytes leave the participant and never reach the broker, so the
publish times out as it would on a real network fault. The proxy then drops that
connection (its stream lost bytes) and the next loss opens a fresh one.

NATS and RabbitMQ only: aiokafka's producer keeps an unacknowledged batch and
sends it again on its next connection by itself, so a proxy cannot lose a Kafka
reply for good (that is a duplicate, which the other tests cover).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import aio_pika
import nats
import nats.errors

from tests.e2e.clients import CONTENT_TYPE, NatsClient, RabbitClient, RawClient
from tests.support.proxy import TcpProxy

LOSE_WAIT = 0.5
"""Seconds a lost publish waits for the broker's acknowledgement that never comes."""


class LossyPublisher:
    """Publishes replies that are lost, one at a time, for the participants of ``client``."""

    def __init__(self, client: RawClient) -> None:
        if not isinstance(client, NatsClient | RabbitClient):
            raise NotImplementedError(f"no lossy publisher for {client.broker}")
        self.client = client
        host, port = ("127.0.0.1", 4222) if isinstance(client, NatsClient) else ("127.0.0.1", 5672)
        self.proxy = TcpProxy(host, port)
        self.lost = 0
        self._lock = asyncio.Lock()

    async def start(self) -> LossyPublisher:
        await self.proxy.start()
        return self

    async def close(self) -> None:
        await self.proxy.close()

    async def lose(self, destination: str, body: bytes, key: str) -> None:
        async with self._lock:  # the proxy's drop applies to every connection through it
            before = self.proxy.dropped["up"]
            if isinstance(self.client, NatsClient):
                await self._lose_nats(self.client, destination, body)
            else:
                assert isinstance(self.client, RabbitClient)
                await self._lose_amqp(self.client, destination, body)
            assert self.proxy.dropped["up"] > before, "the proxy dropped nothing"
            self.lost += 1

    async def _lose_nats(self, client: NatsClient, destination: str, body: bytes) -> None:
        async def quiet(*_: Any) -> None:
            return None

        nc = await nats.connect(
            f"nats://127.0.0.1:{self.proxy.port}",
            allow_reconnect=False,
            connect_timeout=5,
            error_cb=quiet,
            disconnected_cb=quiet,
            closed_cb=quiet,
        )
        try:
            self.proxy.drop("up")
            with contextlib.suppress(nats.errors.TimeoutError, TimeoutError):
                await nc.jetstream().publish(
                    f"{client.prefix}.{destination}",
                    body,
                    timeout=LOSE_WAIT,
                    headers={"content-type": CONTENT_TYPE},
                )
                raise AssertionError("a publish through a dropping proxy was acknowledged")
        finally:
            await self.proxy.reset()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(nc.close(), 2)

    async def _lose_amqp(self, client: RabbitClient, destination: str, body: bytes) -> None:
        conn = await aio_pika.connect(f"amqp://guest:guest@127.0.0.1:{self.proxy.port}/")
        try:
            channel = await conn.channel(publisher_confirms=True)
            exchange = await channel.get_exchange(client.exchange_name, ensure=False)
            self.proxy.drop("up")
            with contextlib.suppress(TimeoutError):
                await exchange.publish(
                    aio_pika.Message(
                        body,
                        content_type=CONTENT_TYPE,
                        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                    ),
                    routing_key=destination,
                    timeout=LOSE_WAIT,
                )
                raise AssertionError("a publish through a dropping proxy was confirmed")
        finally:
            await self.proxy.reset()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(conn.close(), 2)
