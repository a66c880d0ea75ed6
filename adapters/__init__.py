"""Broker adapters. Each module implements :class:`adapters.base.Transport` for one broker.

``open_transport(url)`` picks the implementation by URL scheme; broker client
libraries are imported only when their scheme is used.
"""

from __future__ import annotations

import importlib
from urllib.parse import urlsplit

from adapters._util import redact_url
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
    try:
        scheme = urlsplit(url).scheme
    except ValueError as exc:
        raise ConfigError(f"bad broker URL {redact_url(url)!r}: {exc}") from None
    target = TRANSPORT_SCHEMES.get(scheme)
    if target is None:
        known = ", ".join(f"{s}://" for s in TRANSPORT_SCHEMES)
        raise ConfigError(
            f"unknown broker URL scheme {scheme + '://'!r} in {redact_url(url)!r}; known: {known}"
        )
    module_name, _, cls_name = target.partition(":")
    cls = getattr(importlib.import_module(module_name), cls_name)
    try:
        transport: Transport = cls.from_url(url)
    except ValueError as exc:  # urllib's parse of a malformed host or port
        raise ConfigError(f"bad broker URL {redact_url(url)!r}: {exc}") from None
    return transport
