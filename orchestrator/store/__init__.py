"""Stores: where saga instances, inbox, outbox, timers, parked messages and history live.

``open_store(url)`` picks the implementation by URL scheme.
"""

from __future__ import annotations

import importlib
from urllib.parse import urlsplit

from orchestrator.store.base import (
    HistoryRecord,
    InstanceKey,
    InstanceRecord,
    OutboxRecord,
    Outcome,
    ParkedRecord,
    Store,
    TimerRecord,
    UnitOfWork,
)
from schemas.errors import ConfigError

__all__ = [
    "STORE_SCHEMES",
    "HistoryRecord",
    "InstanceKey",
    "InstanceRecord",
    "OutboxRecord",
    "Outcome",
    "ParkedRecord",
    "Store",
    "TimerRecord",
    "UnitOfWork",
    "open_store",
]

STORE_SCHEMES: dict[str, str] = {
    "memory": "orchestrator.store.memory:MemoryStore",
    "sqlite": "orchestrator.store.sqlite:SqliteStore",
    "postgresql": "orchestrator.store.postgres:PostgresStore",
    "postgres": "orchestrator.store.postgres:PostgresStore",
}


def open_store(url: str) -> Store:
    """The store for ``url`` (not yet opened); ConfigError for an unknown scheme."""
    scheme = urlsplit(url).scheme
    target = STORE_SCHEMES.get(scheme)
    if target is None:
        known = ", ".join(f"{s}://" for s in STORE_SCHEMES)
        raise ConfigError(f"unknown store URL scheme {scheme + '://'!r} in {url!r}; known: {known}")
    module_name, _, cls_name = target.partition(":")
    cls = getattr(importlib.import_module(module_name), cls_name)
    store: Store = cls.from_url(url)
    return store
