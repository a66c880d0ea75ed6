"""The client library for services that take part in sagas: publish events, handle messages.

sagawire's side of a saga is the sidecar; this is the services' side, in Python, on
the same transports (``memory://``, ``kafka://``, ``nats://``, ``amqp://``)::

    Publisher.publish(type, data)             a domain event, envelope filled in
    Service.on(type, Model)(handler)          handler(data, envelope) -> Emit(s)

A :class:`Service` keeps the participant's contract of the README for its handlers: it
acknowledges a message only after its handler ran and its replies were published, it
answers a copy of a message it handled with its first replies (remembered in memory,
or in SQLite / PostgreSQL with ``replies=URL``), and it fills in what makes a reply
belong to its saga (``correlationid``, ``causationid``, a derived ``id``,
``traceparent``). The modules, in the order a message meets them:

* :mod:`~orchestrator.client.service` - the consume / handle / publish / ack loop;
* :mod:`~orchestrator.client.handlers` - the table of handlers and their models;
* :mod:`~orchestrator.client.replies` - what was sent, by handled message (in memory);
* :mod:`~orchestrator.client.durable` - the same, in a database table;
* :mod:`~orchestrator.client.events` - ids, envelopes and their bytes (pure);
* :mod:`~orchestrator.client.tracing` - W3C trace context, if OpenTelemetry is there;
* :mod:`~orchestrator.client.publisher` - events that answer nothing.

It imports ``schemas``, ``adapters`` and the stores' URL and error helpers, never the
engine: a service needs no saga definitions.
"""

from orchestrator.client.durable import open_replies
from orchestrator.client.events import (
    Emit,
    Mode,
    new_event,
    new_id,
    reply_event,
    reply_id,
    to_message,
)
from orchestrator.client.handlers import IGNORE, Handler, Outcome
from orchestrator.client.publisher import Publisher
from orchestrator.client.replies import RecentReplies, ReplyMemory
from orchestrator.client.service import Service, ServiceStats

__all__ = [
    "IGNORE",
    "Emit",
    "Handler",
    "Mode",
    "Outcome",
    "Publisher",
    "RecentReplies",
    "ReplyMemory",
    "Service",
    "ServiceStats",
    "new_event",
    "new_id",
    "open_replies",
    "reply_event",
    "reply_id",
    "to_message",
]
