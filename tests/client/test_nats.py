"""The client contract on NATS JetStream: a stream of the test's own, deleted afterwards."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import nats
import nats.js.errors
import pytest

from tests.client.contract import ClientContract
from tests.support.services import require, unique

HOST, PORT = "127.0.0.1", 4222

pytestmark = pytest.mark.broker("nats")


class TestNatsClient(ClientContract):
    drops_republished = True  # Nats-Msg-Id: JetStream keeps the first reply, drops the copy

    @pytest.fixture
    async def broker_url(self) -> AsyncIterator[str]:
        require("nats", HOST, PORT)
        stream = unique("SWC_")
        yield (
            f"nats://{HOST}:{PORT}?stream={stream}&deadletter=sagawire.deadletter.{stream}"
            "&fetch_timeout=1&ack_wait=2"
        )
        nc = await nats.connect(f"nats://{HOST}:{PORT}")
        with contextlib.suppress(nats.js.errors.NotFoundError):
            await nc.jetstream().delete_stream(stream)
        await nc.close()
