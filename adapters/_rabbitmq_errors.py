"""aio-pika/aiormq errors translated into sagawire's, at the adapter boundary.

The engine only ever sees :class:`TransportError` (retry later) or
:class:`DeclarationError` (someone must fix the broker). Messages name the
operation and the broker by its redacted URL; the driver's own text is kept
(it carries RabbitMQ's reply text, e.g. which argument was inequivalent) but
scrubbed of the password, since nothing we raise may carry a secret.
"""

from __future__ import annotations

import asyncio

import aiormq.exceptions as amqp

from adapters._rabbitmq_config import RabbitConfig
from schemas.errors import DeclarationError, TransportError

__all__ = ["translate"]

_HAND_FIX = (
    amqp.ChannelPreconditionFailed,  # 406: exists with other arguments
    amqp.ChannelAccessRefused,  # 403: the user may not declare/use it
    amqp.ChannelLockedResource,  # 405: exclusive to another connection
)


def _describe(exc: BaseException, config: RabbitConfig) -> str:
    if isinstance(exc, asyncio.TimeoutError | TimeoutError):
        text = "timed out"
    elif isinstance(exc, amqp.DeliveryError):
        text = str(exc)  # its __str__ names the nack/return frame
    elif isinstance(exc, amqp.AMQPError):
        text = "; ".join(str(a) for a in exc.args) or exc.reason
    else:
        text = str(exc) or repr(exc)
    if config.password and config.password in text:
        text = text.replace(config.password, "***")
    return f"{type(exc).__name__}: {text}"


def translate(
    exc: BaseException, doing: str, config: RabbitConfig, *, publishing: bool = False
) -> TransportError:
    """The sagawire error for ``exc``, raised while ``doing`` something. A refusal (406,
    403) while declaring is for an operator to mend. While publishing, a 406 concerns
    one message, which :mod:`adapters._rabbitmq_publish` finds and reports as refused;
    anything else (403, 404, a nack) is retryable, and the channel is reopened for the
    next publish."""
    where = f"{doing} on {config.display_url}"
    detail = _describe(exc, config)
    if isinstance(exc, _HAND_FIX) and not publishing:
        return DeclarationError(
            f"{where} failed: {detail}. The broker already has this entity with "
            "other settings (or refuses us); delete or fix it by hand, or pick other "
            "names with ?exchange= / ?queue_prefix="
        )
    if isinstance(exc, amqp.ProbableAuthenticationError | amqp.AuthenticationError):
        return TransportError(
            f"{where} failed: the broker refused user {config.user!r} ({detail}); "
            "check the credentials (URL or SAGAWIRE_AMQP_USER/SAGAWIRE_AMQP_PASSWORD)",
            retryable=False,
        )
    if isinstance(exc, amqp.PublishError):
        return TransportError(
            f"{where} failed: the broker returned an unroutable message ({detail}); "
            "no queue is bound to that destination (mandatory publishing is on)"
        )
    if isinstance(exc, amqp.DeliveryError):
        return TransportError(f"{where} failed: the broker did not confirm ({detail})")
    return TransportError(f"{where} failed: {detail}")
