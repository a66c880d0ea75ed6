"""The wire contract of sagawire: the CloudEvents envelope, its codec and the error tree.

Nothing here imports another sagawire package; everything else imports this.
"""

from schemas.codec import decode, describe_validation_error, encode, envelope_json_schema
from schemas.envelope import CONTENT_TYPE, Envelope
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
    "CONTENT_TYPE",
    "ConcurrencyError",
    "ConfigError",
    "DeclarationError",
    "DecodeError",
    "DefinitionError",
    "Envelope",
    "EnvelopeError",
    "MessageError",
    "PayloadError",
    "RoutingError",
    "SagawireError",
    "SchemaVersionError",
    "StoreError",
    "TransportError",
    "decode",
    "describe_validation_error",
    "encode",
    "envelope_json_schema",
]
