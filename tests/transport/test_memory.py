"""The transport contract against the in-memory broker."""

from __future__ import annotations

import pytest

from adapters.base import Delivery, OutgoingMessage
from adapters.memory import MemoryBroker, MemoryTransport
from schemas.errors import ConfigError, PublishRefused
from tests.transport.contract import Names, TransportContract, TransportFactory


class TestMemoryTransport(TransportContract):
    @pytest.fixture
    def transport_factory(self) -> TransportFactory:
        broker = MemoryBroker(max_message_size=64 * 1024)

        async def make() -> MemoryTransport:
            return MemoryTransport(broker)

        return make

    def refused_message(self, names: Names) -> tuple[OutgoingMessage, str]:
        return OutgoingMessage(names.dest("a"), b"x" * 70_000, "too-big"), "max_message_size"


async def test_the_size_limit_comes_from_the_url_and_applies_to_dead_letters() -> None:
    t = MemoryTransport.from_url("memory://size-test?max_message_size=100")
    try:
        assert t.broker.max_message_size == 100
        await t.start()
        with pytest.raises(PublishRefused, match="over the memory broker's max_message_size"):
            await t.publish([OutgoingMessage("a", b"x" * 101, "m1")])
        delivery = Delivery("a", b"x" * 90, {"sagawire-message-id": "m2"})
        with pytest.raises(PublishRefused) as refused:
            await t.dead_letter(delivery, "a reason that makes it too large")
        assert set(refused.value.refused) == {"m2"}
        with pytest.raises(ConfigError, match="max_message_size"):
            MemoryTransport.from_url("memory://size-test?max_message_size=lots")
    finally:
        MemoryBroker.forget("size-test")
