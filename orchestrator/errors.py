"""The sagawire error tree (defined in :mod:`schemas.errors`, the contract package)."""

from schemas.errors import (
    ConcurrencyError,
    ConfigError,
    DeclarationError,
    DecodeError,
    DefinitionError,
    EnvelopeError,
    MessageError,
    PayloadError,
    RoutingError,
    SagawireError,
    SchemaVersionError,
    StoreError,
    TransportError,
)

__all__ = [
    "ConcurrencyError",
    "ConfigError",
    "DeclarationError",
    "DecodeError",
    "DefinitionError",
    "EnvelopeError",
    "MessageError",
    "PayloadError",
    "RoutingError",
    "SagawireError",
    "SchemaVersionError",
    "StoreError",
    "TransportError",
]
