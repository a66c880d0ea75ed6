"""Brokers as the AsyncAPI document shows them, read from the URLs ``sagawire run`` takes.

The address of a message type on a broker is the adapter's business: a Kafka topic is
``topic_prefix`` + the type, a NATS subject is ``subject_prefix.`` + the type in the
JetStream stream, a RabbitMQ message goes to the topic exchange with the type as its
routing key and is consumed from the group's queue. Each :class:`Server` here asks the
adapter's own settings (parsed from the same URL, with the same checks) rather than
repeating those rules, so the document shows the names a deployment really uses. No
connection is made, and no credential of the URL reaches the document.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from adapters._kafka_settings import KafkaSettings
from adapters._nats_options import NatsOptions
from adapters._nats_topology import consumer_name
from adapters._rabbitmq_config import RabbitConfig
from orchestrator.language.contract import Bindings, Server
from schemas.errors import ConfigError

__all__ = ["DEFAULT_BROKERS", "server_for"]

DEFAULT_BROKERS = ("kafka://localhost:9092", "nats://localhost:4222", "amqp://localhost:5672/")
"""What the document describes when no ``--broker`` is given: each broker with its
adapter's defaults (no prefixes, stream ``SAGAWIRE``, exchange ``sagawire``)."""

KAFKA, AMQP = "0.5.0", "0.3.0"
"""The AsyncAPI binding versions written."""


def server_for(url: str, *, group: str = "sagawire") -> Server:
    """The :class:`Server` of broker ``url``; ``group`` is the sidecar's consumer group.
    A :class:`ConfigError` for a URL the sidecar itself would refuse."""
    scheme = urlsplit(url).scheme
    if scheme == "kafka":
        return _kafka(KafkaSettings.from_url(url), group)
    if scheme in ("nats", "tls"):
        return _nats(NatsOptions.from_url(url), group)
    if scheme in ("amqp", "amqps"):
        return _rabbit(RabbitConfig.from_url(url), group)
    raise ConfigError(
        f"--broker {scheme + '://'!r}: the contract describes kafka://, nats:// (tls://) and"
        " amqp:// (amqps://) brokers"
    )


def _kafka(s: KafkaSettings, group: str) -> Server:
    hosts = s.bootstrap.split(",")

    def channel(type: str) -> Bindings:
        return {
            "kafka": {
                "topic": s.topic(type),
                "partitions": s.partitions,
                "replicas": s.replication,
                "bindingVersion": KAFKA,
            }
        }

    def operation(action: str, type: str) -> Bindings:
        if action != "receive":
            return {}
        return {"kafka": {"groupId": {"type": "string", "enum": [group]}, "bindingVersion": KAFKA}}

    def message(type: str) -> Bindings:
        key = {
            "type": "string",
            "description": "The correlation id: one instance's messages share a partition"
            " and keep their order.",
        }
        return {"kafka": {"key": key, "bindingVersion": KAFKA}}

    return Server(
        id="kafka",
        protocol="kafka",
        host=hosts[0],
        address=s.topic,
        description=f"Kafka ({', '.join(hosts)}): a topic per message type"
        + (f", prefixed {s.topic_prefix!r}" if s.topic_prefix else "")
        + f"; topics sagawire creates get {s.partitions} partition(s). sagawire consumes"
        f" as group {group!r}.",
        channel_bindings=channel,
        operation_bindings=operation,
        message_bindings=message,
    )


def _nats(o: NatsOptions, group: str) -> Server:
    parts = urlsplit(o.server)
    host = f"{parts.hostname}:{parts.port or 4222}"
    return Server(
        id="nats",
        protocol="nats",
        host=host,
        address=o.subject,
        description=f"NATS JetStream ({host}): a subject per message type"
        + (f", prefixed {o.subject_prefix + '.'!r}" if o.subject_prefix else "")
        + f", all in stream {o.stream!r}. sagawire consumes with the durable pull consumer"
        f" {consumer_name(group)!r} (or one per subject on a server before 2.10).",
    )


def _rabbit(c: RabbitConfig, group: str) -> Server:
    exchange = {
        "name": c.exchange,
        "type": "topic",
        "durable": True,
        "autoDelete": False,
        "vhost": c.vhost,
    }

    def channel(type: str) -> Bindings:
        return {"amqp": {"is": "routingKey", "exchange": exchange, "bindingVersion": AMQP}}

    def operation(action: str, type: str) -> Bindings:
        if action == "send":
            sent = {"cc": [type], "deliveryMode": 2, "mandatory": c.mandatory}
            return {"amqp": {**sent, "bindingVersion": AMQP}}
        return {"amqp": {"ack": True, "bindingVersion": AMQP}}

    return Server(
        id="amqp",
        protocol="amqps" if c.tls else "amqp",
        host=f"{c.host}:{c.port}",
        pathname=c.vhost if c.vhost.startswith("/") else f"/{c.vhost}",
        address=lambda type: type,
        description=f"RabbitMQ ({c.host}:{c.port}, vhost {c.vhost!r}): the topic exchange"
        f" {c.exchange!r}, the message type as routing key. sagawire consumes from the"
        f" durable queue {c.queue_name(group)!r}, bound to each type it consumes;"
        " participants bind queues of their own to the types they take.",
        channel_bindings=channel,
        operation_bindings=operation,
    )
