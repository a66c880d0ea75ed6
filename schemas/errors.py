"""The one exception tree of sagawire.

It lives in ``schemas`` because ``schemas`` is the contract every other package
imports and imports nothing itself; ``orchestrator.errors`` re-exports it.

    SagawireError                  root; ``retryable`` says whether trying again may help
    ├── ConfigError                a bad URL, unknown scheme, missing setting (exit code 2)
    ├── DefinitionError            a saga module failed to load or its load-time checks
    ├── MessageError               bad input: dead-lettered with ``reason``, never retried
    │   ├── DecodeError            the bytes are not JSON
    │   ├── LimitError             the message, or one of its attributes, is larger than allowed
    │   ├── EnvelopeError          JSON that is not a valid CloudEvent 1.0
    │   ├── PayloadError           ``data`` fails the model the saga declared for it
    │   └── RoutingError           unknown type, no correlation id, finished instance...
    ├── TransportError             broker unreachable, publish not confirmed (retryable)
    │   ├── DeclarationError       existing topic/stream/queue conflicts with ours (not retryable)
    │   └── PublishRefused         the broker refused some messages for good (too large, bad
    │                              subject or header); the others were published (not retryable)
    └── StoreError                 database failure (retryable unless said otherwise)
        ├── ConcurrencyError       optimistic version conflict: reload and decide again
        └── SchemaVersionError     the database was written by a newer sagawire
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

__all__ = [
    "ConcurrencyError",
    "ConfigError",
    "DeclarationError",
    "DecodeError",
    "DefinitionError",
    "EnvelopeError",
    "LimitError",
    "MessageError",
    "PayloadError",
    "PublishRefused",
    "RoutingError",
    "SagawireError",
    "SchemaVersionError",
    "StoreError",
    "TransportError",
]


class SagawireError(Exception):
    """Root of every error sagawire raises on purpose."""

    retryable: bool = False

    def __init__(self, message: str, *, retryable: bool | None = None) -> None:
        super().__init__(message)
        if retryable is not None:
            self.retryable = retryable


class ConfigError(SagawireError):
    """Configuration the process cannot start with."""


class DefinitionError(SagawireError):
    """A saga definition that failed to import or failed its load-time checks."""


class MessageError(SagawireError):
    """An input message that can never be handled; it goes to the dead-letter destination.

    ``kind`` names the class of problem in one word: the ``reason`` label of the
    ``sagawire_dead_letters_total`` metric (a bounded set, unlike the reason text)."""

    kind = "invalid"

    @property
    def reason(self) -> str:
        return str(self)


class DecodeError(MessageError):
    """The message body is not JSON."""

    kind = "decode"


class LimitError(MessageError):
    """The message is larger than the configured limit, or one of its attributes is
    (:class:`~schemas.limits.Limits`): refused before it can reach a header, a key or a
    command, where a broker would refuse it later and for good."""

    kind = "limit"


class EnvelopeError(MessageError):
    """The body is JSON but not a valid CloudEvents 1.0 structured event."""

    kind = "envelope"


class PayloadError(MessageError):
    """The event's ``data`` does not match the model the saga declared for it.
    ``errors``: pydantic's list of field errors, for ``POST /events``' 422."""

    kind = "payload"

    def __init__(self, message: str, errors: Sequence[Mapping[str, Any]] = ()) -> None:
        super().__init__(message)
        self.errors = list(errors)


class RoutingError(MessageError):
    """A valid event that no saga can take (unknown type, no correlation, finished instance)."""

    kind = "routing"


class TransportError(SagawireError):
    """A broker operation failed; usually transient (connection lost, publish not confirmed)."""

    retryable = True


class DeclarationError(TransportError):
    """Broker topology exists with settings incompatible with ours; fix it by hand."""

    retryable = False


class PublishRefused(TransportError):
    """The broker refused some messages of a publish for good: too large, an invalid
    destination or header, a permanent error as opposed to a transient one. Every
    other message of the same publish was published and confirmed.

    ``refused`` maps each refused message's ``message_id`` to the broker's reason.
    Sending the same bytes again cannot succeed, so the caller records the failure
    (the outbox marks the row failed) instead of retrying."""

    retryable = False

    def __init__(self, refused: Mapping[str, str]) -> None:
        self.refused = dict(refused)
        first = next(iter(self.refused.items()), ("", ""))
        more = f" (and {len(self.refused) - 1} more)" if len(self.refused) > 1 else ""
        super().__init__(f"broker refused message {first[0]!r}: {first[1]}{more}")


class StoreError(SagawireError):
    """The store failed to read or commit."""

    retryable = True


class ConcurrencyError(StoreError):
    """Another writer changed the instance first; reload it and decide again."""


class SchemaVersionError(StoreError):
    """The database schema is newer than this sagawire understands."""

    retryable = False
