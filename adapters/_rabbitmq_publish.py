"""The publishing half of the RabbitMQ transport, on a connection of its own.

Persistent messages go out on a channel with publisher confirms, a window at a time
(all written, then all confirms awaited together); the call returns only when every
message is confirmed. Order is kept: the channel serialises writes in call order.

Why a connection of its own. RabbitMQ answers some publishes by closing the channel
(406 PRECONDITION_FAILED: a message over ``max_message_size``, a header the broker
rejects), and frames the client had already written on that channel after the close
make the broker close the whole *connection* (504 ``CHANNEL_ERROR - expected
'channel.open'``; seen with a 1000-message window on RabbitMQ 3.10). On a shared
connection that would drop the consumer channels too, and every delivery the engine
holds would be requeued and delivered again. RabbitMQ also advises against mixing
the two: flow control blocks a publishing connection, acks and all.

Refusals. A routing key over 255 bytes cannot be sent at all (AMQP's limit) and is
refused before anything is written. A 406 closes the channel without saying which
message caused it, and fails every publish still waiting for its confirm: the
unconfirmed ones are published again in halves, on a fresh channel, until the
message that is refused alone is found; it is named in a
:class:`~schemas.errors.PublishRefused`, and the others are confirmed. Messages that
had been routed before the channel closed may so be routed twice (consumers
de-duplicate on the message id). Any other failure (a nack, no confirm, the
connection lost, an exchange missing, access refused) is a retryable error for the
whole call.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence

import aio_pika
import aiormq
import aiormq.exceptions as amqp
from aio_pika.abc import AbstractChannel, AbstractConnection
from pamqp.common import FieldTable

from adapters._rabbitmq_config import RabbitConfig
from adapters._rabbitmq_errors import translate
from adapters._rabbitmq_link import Link
from adapters.base import HEADER_CONTENT_TYPE, HEADER_MESSAGE_ID, OutgoingMessage
from schemas.errors import PublishRefused, TransportError

__all__ = ["DRIVER_ERRORS", "HEADER_KEY", "Publisher"]

HEADER_KEY = "sagawire-key"
"""AMQP header carrying :attr:`OutgoingMessage.key` (RabbitMQ has no message key)."""

PERSISTENT = 2
"""AMQP delivery mode: written to disk by durable queues before the confirm."""

PUBLISH_WINDOW = 1024
"""Messages in flight (written, confirm pending) per publish call; bounds memory."""

DRIVER_ERRORS = (
    amqp.AMQPError,
    amqp.ChannelInvalidStateError,
    ConnectionError,
    OSError,
    TimeoutError,
)

_SHORTSTR = 255
"""AMQP's limit, in bytes, for a routing key and for the properties (content type,
message id): a header of that name may be longer, and then stays a header."""


class Publisher:
    """The publish connection, its confirm channel and the exchange on it."""

    def __init__(self, config: RabbitConfig) -> None:
        self.config = config
        self.link = Link(config, self._on_connect, role="publish")
        self._channel: aiormq.abc.AbstractChannel | None = None
        self._owner: AbstractChannel | None = None
        self._reopening = asyncio.Lock()

    async def _on_connect(self, conn: AbstractConnection) -> None:
        try:
            await self._open(conn)
        except DRIVER_ERRORS as exc:
            raise translate(
                exc, f"declaring exchange {self.config.exchange!r}", self.config
            ) from None

    async def _open(self, conn: AbstractConnection) -> None:
        """The channel every publish goes through (confirms on), and the exchange.

        Opened on each connect, and again when the broker closed only the channel (a
        406, the exchange deleted under us): the connection is up then, and no
        reconnect would reopen it."""
        old = self._owner
        channel = await conn.channel(publisher_confirms=True, on_return_raises=True)
        await channel.declare_exchange(
            self.config.exchange, aio_pika.ExchangeType.TOPIC, durable=True
        )
        # Publishing goes straight to aiormq: aio_pika.Message costs ~40% more CPU
        # per message, and the sidecar's relay is CPU-bound on the client side.
        self._channel = await channel.get_underlay_channel()
        self._owner = channel  # kept alive: it routes returns to the confirms
        if old is not None and old is not channel and not old.is_closed:
            with contextlib.suppress(Exception):
                await old.close()

    async def publish(self, messages: Sequence[OutgoingMessage]) -> None:
        """Publish in order; see the module docstring for errors and refusals."""
        refused: dict[str, str] = {}
        ready: list[OutgoingMessage] = []
        for m in messages:
            size = len(m.destination.encode())
            if size > _SHORTSTR:
                refused[m.message_id] = (
                    f"routing key {m.destination[:80]!r}... is {size} bytes; AMQP carries at"
                    f" most {_SHORTSTR}"
                )
            else:
                ready.append(m)
        for start in range(0, len(ready), PUBLISH_WINDOW):
            refused |= await self._window(ready[start : start + PUBLISH_WINDOW])
        if refused:
            raise PublishRefused(refused)

    async def _window(self, window: Sequence[OutgoingMessage]) -> dict[str, str]:
        """Publish ``window``; the refused messages' reasons (see the module docstring)."""
        channel = await self._channel_now()
        # Started in order; aiormq writes them in that order under its channel lock.
        results = await asyncio.gather(
            *(
                channel.basic_publish(
                    m.body,
                    exchange=self.config.exchange,
                    routing_key=m.destination,
                    properties=_properties(m),
                    mandatory=self.config.mandatory,
                )
                for m in window
            ),
            return_exceptions=True,
        )
        failed = [
            (m, r) for m, r in zip(window, results, strict=True) if isinstance(r, BaseException)
        ]
        if not failed:
            return {}
        refusal = next(
            (r for _, r in failed if isinstance(r, amqp.ChannelPreconditionFailed)), None
        )
        if refusal is None:
            doing = (
                f"publishing {len(failed)} of {len(window)} messages to exchange "
                f"{self.config.exchange!r} (first to {window[0].destination!r})"
            )
            raise translate(failed[0][1], doing, self.config, publishing=True) from None
        suspects = [m for m, _ in failed]
        if len(suspects) == 1:
            return {suspects[0].message_id: f"RabbitMQ refused it: {_reply_text(refusal)}"}
        half = len(suspects) // 2
        return await self._window(suspects[:half]) | await self._window(suspects[half:])

    async def _channel_now(self) -> aiormq.abc.AbstractChannel:
        """The open publish channel, reopened if the broker closed only it. If the
        connection turns out to be closing too (a 406 in a large window ends in a 504
        for the connection), waits for the link to reconnect, which reopens it."""
        failure: BaseException | None = None
        for _ in range(_REOPEN_ATTEMPTS):
            conn = await self.link.connection()
            channel = self._channel
            if channel is not None and not channel.is_closed:
                return channel
            async with self._reopening:  # two publishes at once reopen it once
                channel = self._channel
                if channel is not None and not channel.is_closed:
                    return channel
                try:
                    await self._open(conn)
                except DRIVER_ERRORS as exc:
                    if not (conn.is_closed or isinstance(exc, ConnectionError)):
                        raise translate(exc, "reopening the publish channel", self.config) from None
                    failure = exc  # the connection went: the link is reconnecting
                    await asyncio.sleep(_REOPEN_PAUSE)
        raise TransportError(
            f"publishing on {self.config.display_url} failed: the publish channel and its"
            f" connection are closed ({failure!r}); the connection is being restored"
        )


_REOPEN_ATTEMPTS = 5
_REOPEN_PAUSE = 0.05
"""Seconds for the link to see its connection go before asking it again."""


def _reply_text(exc: amqp.AMQPError) -> str:
    return "; ".join(str(a) for a in exc.args) or str(exc)


_ROUTING_HEADERS = ("CC", "BCC")
"""Headers RabbitMQ routes by (sender-selected distribution). A delivery keeps ``CC``, so
a dead letter would carry it back out: as text the broker refuses the publish (406,
closing the channel); as a list it would route the copy to consumed destinations."""


def _properties(m: OutgoingMessage) -> aiormq.spec.Basic.Properties:
    headers: FieldTable = dict(m.headers)
    for name in _ROUTING_HEADERS:
        headers.pop(name, None)
    content_type = m.headers.get(HEADER_CONTENT_TYPE)
    if content_type is not None and _fits(content_type):
        headers.pop(HEADER_CONTENT_TYPE, None)
    else:
        content_type = None
    message_id = m.message_id or None
    if message_id is not None and not _fits(message_id):
        headers.setdefault(HEADER_MESSAGE_ID, message_id)
        message_id = None
    if m.key is not None:
        headers[HEADER_KEY] = m.key
    return aiormq.spec.Basic.Properties(
        content_type=content_type,
        headers=headers,
        message_id=message_id,
        delivery_mode=PERSISTENT,
    )


def _fits(value: str) -> bool:
    return len(value) <= _SHORTSTR // 4 or len(value.encode()) <= _SHORTSTR
