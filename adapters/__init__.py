"""Broker adapters. Each module implements :class:`adapters.base.Transport` for one broker.

``open_transport(url)`` picks the implementation by URL scheme; broker client
libraries are imported only when their scheme is used.
"""

from __future__ import annotations

import importlib
from urllib.parse import urlsplit

from adapters.base import (
    DEADLETTER,
    Delivery,
    OutgoingMessage,
    Readiness,
    Topology,
    Transport,
    dead_letter_message,
)
from schemas.errors import ConfigError

__all__ = [
    "DEADLETTER",
    "TRANSPORT_SCHEMES",
    "Delivery",
    "OutgoingMessage",
    "Readiness",
    "Topology",
    "Transport",
    "dead_letter_message",
    "open_transport",
]

TRANSPORT_SCHEMES: dict[str, str] = {
    "memory": "adapters.memory:MemoryTransport",
    "kafka": "adapters.kafka:KafkaTransport",
    "nats": "adapters.nats:NatsTransport",
    "tls": "adapters.nats:NatsTransport",
    "amqp": "adapters.rabbitmq:RabbitTransport",
    "amqps": "adapters.rabbitmq:RabbitTransport",
}


def open_transport(url: str) -> Transport:
    """The transport for ``url``; a one-line :class:`ConfigError` for an unknown scheme."""
    scheme = urlsplit(url).scheme
    target = TRANSPORT_SCHEMES.get(scheme)
    if target is None:
        known = ", ".join(f"{s}://" for s in TRANSPORT_SCHEMES)
        raise ConfigError(
            f"unknown broker URL scheme {scheme + '://'!r} in {url!r}; known: {known}"
        )
    module_name, _, cls_name = target.partition(":")
    cls = getattr(importlib.import_module(module_name), cls_name)
    transport: Transport = cls.from_url(url)
    return transport
