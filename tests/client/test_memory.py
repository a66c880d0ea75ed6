"""The client contract on the in-memory transport (a broker of its own per test)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from adapters.memory import MemoryBroker
from tests.client.contract import ClientContract
from tests.support.services import unique


class TestMemoryClient(ClientContract):
    crosses_processes = False

    @pytest.fixture
    def broker_url(self) -> Iterator[str]:
        name = unique("client")
        yield f"memory://{name}"
        MemoryBroker.forget(name)
