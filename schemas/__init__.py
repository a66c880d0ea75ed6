"""The wire contract of sagawire: the CloudEvents envelope, its codecs (structured mode,
:mod:`schemas.binary` for binary content mode, :mod:`schemas.plain` for plain JSON
events) and the error tree.

Nothing here imports another sagawire package; everything else imports this.
"""

from schemas.binary import decode_binary, encode_binary, to_binary
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
from schemas.plain import Plain

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
    "Plain",
    "PublishRefused",
    "RoutingError",
    "SagawireError",
    "SchemaVersionError",
    "StoreError",
    "TransportError",
    "decode",
    "decode_binary",
    "describe_validation_error",
    "encode",
    "encode_binary",
    "envelope_json_schema",
    "to_binary",
]
