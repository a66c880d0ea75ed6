"""nats-py errors, translated at the adapter boundary into sagawire's own.

The engine never sees a ``nats.*`` exception: it sees a :class:`TransportError`
whose ``retryable`` says whether trying again can help (lost connection, timeout,
JetStream briefly unavailable) or not (bad credentials, a payload over the
server's limit, a stream we cannot use), or a :class:`DeclarationError` when the
broker's existing configuration conflicts with ours.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import nats.errors
import nats.js.errors

from schemas.errors import DeclarationError, TransportError

__all__ = ["declaration_error", "is_not_found", "translate"]

_FATAL = (
    nats.errors.AuthorizationError,
    nats.errors.InvalidUserCredentialsError,
    nats.errors.SecureConnRequiredError,
    nats.errors.SecureConnWantedError,
    nats.errors.SecureConnFailedError,
    nats.errors.MaxPayloadError,
    nats.errors.BadSubjectError,
    nats.errors.BadHeaderError,
)

# JetStream API error codes that mean "your request conflicts with what exists".
_CONFIG_CONFLICTS = {
    10052,  # invalid stream config (e.g. overlapping subjects, storage change)
    10058,  # stream name already in use with a different configuration
    10065,  # subjects overlap with an existing stream
    10093,  # consumer filter subject is not a subset of the stream
    10148,  # consumer already exists with a different configuration
}


def translate(
    exc: BaseException, doing: str, where: str, scrub: Callable[[str], str]
) -> TransportError:
    """A :class:`TransportError` saying what failed (``doing``) on which broker
    (``where``, already secret-free); ``scrub`` removes secrets from driver text."""
    detail = scrub(str(exc) or type(exc).__name__)
    message = f"NATS {doing} failed on {where}: {detail}"
    if isinstance(exc, nats.js.errors.NoStreamResponseError):
        return TransportError(
            f"{message} (no JetStream stream captures that subject: declare a topology "
            "that produces it, or JetStream is restarting)",
            retryable=True,
        )
    if isinstance(exc, nats.js.errors.APIError):
        code = exc.code or 0
        return TransportError(message, retryable=code >= 500 and exc.err_code != 10052)
    if isinstance(exc, _FATAL):
        return TransportError(message, retryable=False)
    if isinstance(exc, nats.errors.Error | OSError | asyncio.TimeoutError):
        return TransportError(message, retryable=True)
    return TransportError(f"{message} ({type(exc).__name__})", retryable=True)


def declaration_error(
    exc: BaseException, doing: str, where: str, scrub: Callable[[str], str]
) -> TransportError:
    """Like :func:`translate` but a conflicting configuration is a
    :class:`DeclarationError`: retrying cannot fix it, a human must."""
    if isinstance(exc, nats.js.errors.APIError) and (
        exc.err_code in _CONFIG_CONFLICTS or exc.code == 400
    ):
        return DeclarationError(
            f"NATS {doing} on {where} conflicts with the broker's configuration: "
            f"{exc.description} (err_code {exc.err_code}); fix or remove it by hand"
        )
    return translate(exc, doing, where, scrub)


def is_not_found(exc: BaseException) -> bool:
    """True for JetStream's "no such stream/consumer"."""
    return isinstance(exc, nats.js.errors.NotFoundError)
