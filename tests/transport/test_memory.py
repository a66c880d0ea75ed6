"""The transport contract against the in-memory broker."""

from __future__ import annotations

import pytest

from adapters.memory import MemoryBroker, MemoryTransport
from tests.transport.contract import TransportContract, TransportFactory


class TestMemoryTransport(TransportContract):
    @pytest.fixture
    def transport_factory(self) -> TransportFactory:
        broker = MemoryBroker()

        async def make() -> MemoryTransport:
            return MemoryTransport(broker)

        return make
