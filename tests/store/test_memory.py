"""The store contract against the in-memory store."""

from __future__ import annotations

import pytest

from orchestrator.store.memory import MemoryStore
from tests.store.contract import StoreContract, StoreFactory


class TestMemoryStore(StoreContract):
    durable = False

    @pytest.fixture
    def store_factory(self) -> StoreFactory:
        return MemoryStore
