"""Publish domain events from a service: the envelope filled in, on any broker sagawire speaks.

What starts a saga (``order.placed`` from a shop) or feeds a choreography is an event a
service publishes on its own, not in reply to a message. :class:`Publisher` builds it
(:func:`~orchestrator.client.events.new_event`: id, time, source, ``correlationid``,
``causationid``, ``traceparent``) and publishes it through the same transports as
``sagawire run --broker URL``, returning once the broker confirmed it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from adapters import open_transport
from adapters.base import Topology, Transport
from orchestrator.client.events import Mode, new_event, to_message
from schemas.envelope import Envelope
from schemas.errors import ConfigError

__all__ = ["Publisher"]


class Publisher:
    """Events from ``source`` onto ``broker``: a transport URL (opened and closed here) or
    a started :class:`~adapters.base.Transport`. ``mode`` is the CloudEvents content
    mode of what it publishes (``structured``, the default, or ``binary``).

    ``declares``: the types it publishes, declared at :meth:`start` on brokers where a
    destination must exist first (a NATS stream's subjects, Kafka topics); on RabbitMQ
    an event no queue is bound to is dropped, so start its consumers first."""

    def __init__(
        self,
        broker: str | Transport,
        *,
        source: str,
        mode: Mode = "structured",
        declares: Sequence[str] = (),
    ) -> None:
        if not source:
            raise ConfigError("a publisher needs a source (a URI-reference naming the sender)")
        if mode not in ("structured", "binary"):
            raise ConfigError(f"unknown CloudEvents mode {mode!r}: 'structured' or 'binary'")
        self.source = source
        self.mode: Mode = mode
        self.declares = tuple(declares)
        self._owns_transport = isinstance(broker, str)
        self.transport: Transport = open_transport(broker) if isinstance(broker, str) else broker
        self._started = False

    async def start(self) -> None:
        """Connect (a transport opened from a URL) and declare ``declares``."""
        if self._started:
            return
        if self._owns_transport:
            await self.transport.start()
        if self.declares:
            await self.transport.declare(Topology(consumes=(), produces=self.declares))
        self._started = True

    async def close(self) -> None:
        if self._owns_transport:
            await self.transport.close()
        self._started = False

    async def __aenter__(self) -> Publisher:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def publish(
        self,
        type: str,
        data: Any = None,
        *,
        id: str | None = None,
        correlationid: str | None = None,
        causationid: str | None = None,
        subject: str | None = None,
        time: datetime | None = None,
        extensions: Mapping[str, str] | None = None,
        key: str | None = None,
    ) -> Envelope:
        """Publish one event; the envelope as sent, once the broker confirmed it.

        ``id``: give one to make publishing idempotent (the same id again is a
        duplicate every sagawire inbox drops); default a random UUID. ``key``: the
        broker key (Kafka partition), default ``correlationid``. Raises
        :class:`~schemas.errors.EnvelopeError` for an event sagawire would refuse, and
        the transport's errors (:class:`~schemas.errors.TransportError`: retryable
        unless said otherwise; publishing the same ``id`` again is safe)."""
        envelope = new_event(
            type,
            data,
            source=self.source,
            id=id,
            correlationid=correlationid,
            causationid=causationid,
            subject=subject,
            time=time,
            extensions=extensions,
        )
        await self.transport.publish([to_message(envelope, mode=self.mode, key=key)])
        return envelope
