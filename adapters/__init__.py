"""Broker adapters. Each module implements :class:`adapters.base.Transport` for one broker.

``open_transport(url)`` picks the implementation by URL scheme; broker client
libraries are imported only when their scheme is used. ``check_transport_url(url)``
reads a URL as its transport would, connecting to nothing: how ``sagawire run``
refuses a bad ``--broker`` before it starts anything.
"""

from __future__ import annotations

import importlib
from typing import Any
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
    "check_transport_url",
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

_URL_PARSERS: dict[str, str] = {
    "memory": "adapters.memory:parse_memory_url",
    "kafka": "adapters._kafka_settings:KafkaSettings.from_url",
    "nats": "adapters._nats_options:NatsOptions.from_url",
    "tls": "adapters._nats_options:NatsOptions.from_url",
    "amqp": "adapters._rabbitmq_config:RabbitConfig.from_url",
    "amqps": "adapters._rabbitmq_config:RabbitConfig.from_url",
}
"""What each transport's ``from_url`` reads its URL with: parsing only, no side effect."""


def _scheme(url: str) -> str:
    try:
        scheme = urlsplit(url).scheme
    except ValueError as exc:
        raise ConfigError(f"bad broker URL {redact_url(url)!r}: {exc}") from None
    if scheme not in TRANSPORT_SCHEMES:
        known = ", ".join(f"{s}://" for s in TRANSPORT_SCHEMES)
        raise ConfigError(
            f"unknown broker URL scheme {scheme + '://'!r} in {redact_url(url)!r}; known: {known}"
        )
    return scheme


def check_transport_url(url: str) -> None:
    """ConfigError if ``url`` is not one its transport takes (scheme, host, options and
    their values), found as :func:`open_transport` would, without opening anything."""
    module_name, _, path = _URL_PARSERS[_scheme(url)].partition(":")
    parse: Any = importlib.import_module(module_name)
    for attribute in path.split("."):
        parse = getattr(parse, attribute)
    try:
        parse(url)
    except ValueError as exc:  # urllib's parse of a malformed host or port
        raise ConfigError(f"bad broker URL {redact_url(url)!r}: {exc}") from None


def open_transport(url: str) -> Transport:
    """The transport for ``url``; a one-line :class:`ConfigError` for an unknown scheme."""
    module_name, _, cls_name = TRANSPORT_SCHEMES[_scheme(url)].partition(":")
    cls = getattr(importlib.import_module(module_name), cls_name)
    try:
        transport: Transport = cls.from_url(url)
    except ValueError as exc:  # urllib's parse of a malformed host or port
        raise ConfigError(f"bad broker URL {redact_url(url)!r}: {exc}") from None
    return transport
