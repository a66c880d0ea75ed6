"""``kafka://`` URLs parsed into one immutable settings object, and driver errors translated.

Kept apart from :mod:`adapters.kafka` so the transport reads as broker logic, not
string handling; the URL is the only configuration a Kafka transport takes.

``kafka://[user:password@]host:port[,host2:port2][?option=value...]``

====================  =========  ==========================================================
option                default    meaning
====================  =========  ==========================================================
partitions            12         partitions of topics :meth:`declare` creates. 12 divides
                                 evenly among 1, 2, 3, 4, 6 and 12 replicas (3 over 2
                                 leaves one with twice the work); a topic's count can
                                 only grow later, and growing it moves keys. Sizing:
                                 ``docs/kafka.md``
replication           1          replication factor of created topics (set 3 in production)
topic_prefix          (none)     topic = prefix + destination, e.g. ``prod.``
max_in_flight         2048       unacked deliveries per consumer before fetching pauses
session_timeout_ms    2000       group session (6000 with ``instance_id``, below): a
                                 member silent this long (a process killed with -9) is
                                 dropped and its partitions move to the others, 3.0-4.1
                                 s after a kill -9 on Tansu (9.2-9.8 s with 6000).
                                 Heartbeats go every second, or a third of the session
                                 when that is shorter (666 ms), so a rebalance is
                                 noticed within one. Apache Kafka refuses
                                 a session under its ``group.min.session.timeout.ms``
                                 (6000 unless lowered): left at its default, the
                                 consumer then warns and joins with 6000; a value
                                 given here is used as given, and a refusal of it is
                                 an error. Trade-off and numbers: ``docs/kafka.md``
instance_id           (none)     static membership (KIP-345, ``group.instance.id``; or
                                 ``SAGAWIRE_KAFKA_INSTANCE_ID``): a sidecar restarted
                                 with the same id within the session gets its partitions
                                 back at once, with no rebalance. Must differ between
                                 replicas (a StatefulSet pod name); there is no default,
                                 since two replicas sharing one are fenced by Kafka and,
                                 on Tansu, both consume every partition. A static member
                                 does not leave the group when it stops: its partitions
                                 wait for it for up to the session timeout, so it pays
                                 only with a session longer than a restart; its default
                                 session stays 6000, since 2000 is shorter than any
                                 restart and a static member that misses its session
                                 costs the others a rebalance after all. (Tansu 0.6
                                 holds static joins for seconds: a restart takes ~6 s
                                 there at 6000, ~18 s at 30000.) When to use it:
                                 ``docs/kafka.md``
max_poll_interval_ms  300000     longest the client may go without polling before it
                                 leaves the group (aiokafka's); the transport keeps
                                 polling, with its partitions paused, while the engine
                                 holds what it has, so this no longer limits how long
                                 the engine may hold a delivery. Also the rebalance
                                 timeout
max_message_bytes     1048576    largest record (key, value, headers and batch overhead,
                                 as aiokafka's ``send()`` counts it against
                                 ``max_request_size``); a larger one is refused
                                 (:class:`~schemas.errors.PublishRefused`) before it is
                                 sent. Set it to the broker's ``message.max.bytes``
fetch_max_wait_ms     50         longest a fetch waits for data while the consumer is
                                 idle (no records for a quarter second); bounds the
                                 latency the first step after a lull adds on a broker
                                 that holds fetches (below)
busy_fetch_wait_ms    10         the same while records flow (any broker). Apache Kafka
                                 answers a fetch as soon as data arrives, so there both
                                 only set how often a consumer polls when nothing comes;
                                 Tansu holds a fetch for about its whole wait, and every
                                 saga step (consume -> publish -> consume) pays it at
                                 each hop. Default: 10, or ``fetch_max_wait_ms`` when
                                 only that is given (one wait for every fetch, as
                                 before). Why two: :mod:`adapters._kafka_fetch_wait`
start                 all        where a new consumer group begins: ``all`` the topics
                                 hold (earliest), or only ``new`` records (latest). It
                                 applies when the group has no committed offsets: a
                                 tracker joining a system with history it must not act
                                 on wants ``new``; a group that exists goes on from
                                 where it was
idempotence           false      idempotent producer (brokers that support it; Tansu does not)
transactions          false      wrap each publish batch in a Kafka transaction (implies
                                 idempotence); correctness never rests on it
security_protocol     PLAINTEXT  PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL
sasl_mechanism        PLAIN      PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512
ssl_cafile            (system)   CA bundle for SSL / SASL_SSL
====================  =========  ==========================================================

User and password come from the URL's userinfo, else from ``SAGAWIRE_KAFKA_USER`` and
``SAGAWIRE_KAFKA_PASSWORD``. They never appear in ``repr``, logs or errors.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlsplit

from aiokafka import errors as kafka_errors

from adapters._util import check_options, query_params, redact_url
from schemas.errors import ConfigError, DeclarationError, TransportError

__all__ = [
    "DEFAULT_PARTITIONS",
    "DEFAULT_SESSION_MS",
    "KAFKA_MIN_SESSION_MS",
    "STATIC_SESSION_MS",
    "KafkaSettings",
    "translate_error",
]

DEFAULT_PARTITIONS = 12
"""Evenly shared by 1, 2, 3, 4, 6 or 12 replicas of one consumer group."""
DEFAULT_SESSION_MS = 2000
"""Short enough that a replica killed with -9 hands its partitions over within 5 s
(issue 19's target; 3.0-4.1 s measured on Tansu, where 6000 took 9.2-9.8 s)."""
STATIC_SESSION_MS = 6000
"""The default session of a static member (``instance_id``), which exists to outlast a
restart: no restart fits in 2 s, and on Tansu a static member that came back after
its 2 s session cost the other replica a 12 s pause."""
KAFKA_MIN_SESSION_MS = 6000
"""Apache Kafka's default ``group.min.session.timeout.ms``: a broker left at its
defaults refuses any shorter session, and the default one falls back to this."""

_PROTOCOLS = {"PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"}
_MECHANISMS = {"PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"}
_OPTIONS = {
    "partitions",
    "replication",
    "topic_prefix",
    "max_in_flight",
    "session_timeout_ms",
    "instance_id",
    "max_poll_interval_ms",
    "max_message_bytes",
    "start",
    "fetch_max_wait_ms",
    "busy_fetch_wait_ms",
    "idempotence",
    "transactions",
    "security_protocol",
    "sasl_mechanism",
    "ssl_cafile",
}
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


@dataclass(frozen=True, slots=True)
class KafkaSettings:
    """Everything a :class:`~adapters.kafka.KafkaTransport` needs, read from its URL."""

    bootstrap: str
    redacted_url: str
    partitions: int = DEFAULT_PARTITIONS
    replication: int = 1
    topic_prefix: str = ""
    max_in_flight: int = 2048
    session_timeout_ms: int = DEFAULT_SESSION_MS
    session_fallback_ms: int | None = KAFKA_MIN_SESSION_MS
    """The session to join with when the broker refuses ``session_timeout_ms`` as too
    short; ``None`` when the URL chose the session (then a refusal is an error)."""
    instance_id: str | None = None
    max_poll_interval_ms: int = 300000
    max_message_bytes: int = 1048576
    start: str = "all"
    fetch_max_wait_ms: int = 50
    busy_fetch_wait_ms: int = 10
    idempotence: bool = False
    transactions: bool = False
    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str = "PLAIN"
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    ssl_cafile: str | None = None

    @classmethod
    def from_url(cls, url: str, env: Mapping[str, str] | None = None) -> KafkaSettings:
        """Parse ``url``; a :class:`ConfigError` naming the bad option otherwise."""
        env = os.environ if env is None else env
        safe = _redact(url)
        parts = urlsplit(url)
        hosts = parts.netloc.rpartition("@")[2]
        if parts.scheme != "kafka" or not hosts:
            raise ConfigError(f"not a kafka URL: {safe!r}; expected kafka://host:port[,host:port]")
        check_options(url, _OPTIONS, repr(safe))
        q = query_params(url)
        protocol = q.get("security_protocol", "PLAINTEXT").upper()
        mechanism = q.get("sasl_mechanism", "PLAIN").upper()
        if protocol not in _PROTOCOLS:
            raise ConfigError(f"security_protocol={protocol!r} in {safe!r}; one of {_PROTOCOLS}")
        if mechanism not in _MECHANISMS:
            raise ConfigError(f"sasl_mechanism={mechanism!r} in {safe!r}; one of {_MECHANISMS}")
        transactions = _flag(q, "transactions", safe)
        start = q.get("start", "all")
        if start not in ("all", "new"):
            raise ConfigError(f"start={start!r} in {safe!r}; all or new")
        instance_id = q.get("instance_id") or env.get("SAGAWIRE_KAFKA_INSTANCE_ID") or None
        session = _positive(
            q,
            "session_timeout_ms",
            DEFAULT_SESSION_MS if instance_id is None else STATIC_SESSION_MS,
            safe,
        )
        chosen = "session_timeout_ms" in q
        return cls(
            bootstrap=hosts,
            redacted_url=safe,
            partitions=_positive(q, "partitions", DEFAULT_PARTITIONS, safe),
            replication=_positive(q, "replication", 1, safe),
            topic_prefix=q.get("topic_prefix", ""),
            max_in_flight=_positive(q, "max_in_flight", 2048, safe),
            session_timeout_ms=session,
            session_fallback_ms=(
                None if chosen or session >= KAFKA_MIN_SESSION_MS else KAFKA_MIN_SESSION_MS
            ),
            instance_id=instance_id,
            max_poll_interval_ms=_positive(q, "max_poll_interval_ms", 300000, safe),
            max_message_bytes=_positive(q, "max_message_bytes", 1048576, safe),
            start=start,
            fetch_max_wait_ms=_positive(q, "fetch_max_wait_ms", 50, safe),
            # A fetch_max_wait_ms given alone keeps its old meaning for every fetch.
            busy_fetch_wait_ms=_positive(
                q, "busy_fetch_wait_ms", _positive(q, "fetch_max_wait_ms", 10, safe), safe
            ),
            idempotence=_flag(q, "idempotence", safe) or transactions,
            transactions=transactions,
            security_protocol=protocol,
            sasl_mechanism=mechanism,
            username=unquote(parts.username) if parts.username else env.get("SAGAWIRE_KAFKA_USER"),
            password=(
                unquote(parts.password)
                if parts.password is not None
                else env.get("SAGAWIRE_KAFKA_PASSWORD")
            ),
            ssl_cafile=q.get("ssl_cafile"),
        )

    def client_kwargs(self) -> dict[str, Any]:
        """Connection and security keywords every aiokafka client (producer, consumer,
        admin) takes; built in one place so the three never disagree."""
        kwargs: dict[str, Any] = {
            "bootstrap_servers": self.bootstrap.split(","),
            "security_protocol": self.security_protocol,
        }
        if self.security_protocol in {"SSL", "SASL_SSL"}:
            from aiokafka.helpers import create_ssl_context

            kwargs["ssl_context"] = create_ssl_context(cafile=self.ssl_cafile)
        if self.security_protocol.startswith("SASL"):
            if not self.username or self.password is None:
                raise ConfigError(
                    f"{self.security_protocol} needs a user and password: put them in "
                    f"{self.redacted_url!r} or set SAGAWIRE_KAFKA_USER/SAGAWIRE_KAFKA_PASSWORD"
                )
            kwargs.update(
                sasl_mechanism=self.sasl_mechanism,
                sasl_plain_username=self.username,
                sasl_plain_password=self.password,
            )
        return kwargs

    @property
    def heartbeat_interval_ms(self) -> int:
        return self.heartbeat_interval(self.session_timeout_ms)

    @staticmethod
    def heartbeat_interval(session_ms: int) -> int:
        """Every second, or a third of the session when that is shorter: a member
        learns of a rebalance at its next heartbeat, so this bounds how long the
        survivors of a crash take to notice it, and how long a member that has
        stopped for a rebalance waits for the others to stop too."""
        return max(100, min(1000, session_ms // 3))

    def topic(self, destination: str) -> str:
        return self.topic_prefix + destination

    def destination(self, topic: str) -> str:
        return topic.removeprefix(self.topic_prefix)


def translate_error(err: BaseException, doing: str, where: str) -> TransportError:
    """The project error for a driver error: what failed, where, and whether to retry.

    Connection-level trouble is retryable; authorization and invalid requests are not
    (nothing changes by retrying), and topic-shape problems while declaring are
    :class:`DeclarationError`."""
    text = f"kafka {doing} failed at {where}: {type(err).__name__}: {err}"
    if isinstance(err, TransportError):
        return err
    if isinstance(err, OSError | asyncio.TimeoutError):
        return TransportError(text, retryable=True)
    if isinstance(
        err,
        kafka_errors.InvalidTopicError
        | kafka_errors.InvalidPartitionsError
        | kafka_errors.InvalidReplicationFactorError
        | kafka_errors.TopicAlreadyExistsError,
    ):
        return DeclarationError(text)
    if isinstance(err, kafka_errors.KafkaError):
        retryable = bool(getattr(err, "retriable", False)) or isinstance(
            err, kafka_errors.KafkaConnectionError | kafka_errors.KafkaTimeoutError
        )
        return TransportError(text, retryable=retryable)
    return TransportError(text, retryable=False)


def _redact(url: str) -> str:
    """:func:`redact_url`, also for multi-host netlocs (``h1:9092,h2:9092``), on
    which it raises because it reads the URL's single port."""
    try:
        return redact_url(url)
    except ValueError:
        parts = urlsplit(url)
        userinfo, at, hosts = parts.netloc.rpartition("@")
        if at:
            user, colon, _ = userinfo.partition(":")
            hosts = f"{user}:***@{hosts}" if colon else f"***@{hosts}"
        return parts._replace(netloc=hosts).geturl()


def _positive(q: Mapping[str, str], name: str, default: int, safe: str) -> int:
    raw = q.get(name)
    if raw is None:
        return default
    if not raw.isdigit() or int(raw) < 1:
        raise ConfigError(f"{name}={raw!r} in {safe!r}: expected a positive integer")
    return int(raw)


def _flag(q: Mapping[str, str], name: str, safe: str) -> bool:
    raw = q.get(name, "false").lower()
    if raw not in _TRUE | _FALSE:
        raise ConfigError(f"{name}={raw!r} in {safe!r}: expected true or false")
    return raw in _TRUE
