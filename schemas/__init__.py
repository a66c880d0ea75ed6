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
    LimitError,
    MessageError,
    PayloadError,
    PublishRefused,
    RoutingError,
    SagawireError,
    SchemaVersionError,
    StoreError,
    TransportError,
)
from schemas.limits import DEFAULT_LIMITS, Limits

__all__ = [
    "CONTENT_TYPE",
    "DEFAULT_LIMITS",
    "ConcurrencyError",
    "ConfigError",
    "DeclarationError",
    "DecodeError",
    "DefinitionError",
    "Envelope",
    "EnvelopeError",
    "LimitError",
    "Limits",
    "MessageError",
    "PayloadError",
    "PublishRefused",
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
