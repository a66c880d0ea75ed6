"""Stores: where saga instances, inbox, outbox, timers, parked messages and history live.

``open_store(url)`` picks the implementation by URL scheme.
"""

from __future__ import annotations

import importlib
from urllib.parse import urlsplit

from adapters._util import redact_url
from orchestrator.store.base import (
    FailedOutboxRecord,
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
    "FailedOutboxRecord",
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
    try:
        scheme = urlsplit(url).scheme
    except ValueError as exc:
        raise ConfigError(f"bad store URL {redact_url(url)!r}: {exc}") from None
    target = STORE_SCHEMES.get(scheme)
    if target is None:
        known = ", ".join(f"{s}://" for s in STORE_SCHEMES)
        raise ConfigError(
            f"unknown store URL scheme {scheme + '://'!r} in {redact_url(url)!r}; known: {known}"
        )
    module_name, _, cls_name = target.partition(":")
    cls = getattr(importlib.import_module(module_name), cls_name)
    try:
        store: Store = cls.from_url(url)
    except ValueError as exc:  # urllib's parse of a malformed host or port
        raise ConfigError(f"bad store URL {redact_url(url)!r}: {exc}") from None
    return store
