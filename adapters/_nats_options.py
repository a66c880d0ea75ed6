"""Settings of a NATS transport, read once from its URL and the environment.

Everything the URL can say lives here, so :mod:`adapters.nats` only moves
messages. Secrets (password, token, creds path) are kept out of the server URL
handed to nats-py and out of :attr:`NatsOptions.display`, the only form of the
URL that may appear in logs and errors.

URL: ``nats://[user:password@|token@]host[:port][?option=value&...]``, or
``tls://`` for TLS. Options (all optional):

==================  =========  ==================================================
``stream``          SAGAWIRE   JetStream stream holding every destination
``deadletter``      (note 1)   subject that carries :data:`~adapters.base.DEADLETTER`
``subject_prefix``  (none)     (note 2) destination ``X`` is subject ``PREFIX.X``
``max_age``         604800     seconds a message is kept, for a stream we create
``max_deliver``     10         deliveries of one message before JetStream gives up
``ack_wait``        4          (note 3) seconds before a delivery nobody keeps is redelivered
``max_ack_pending`` 1024       unacked deliveries per consumer (the in-flight window)
``fetch_timeout``   5          seconds one pull request lingers when idle
``publish_timeout`` 10         seconds to wait for a window of publish acks
``connect_timeout`` 10         seconds :meth:`start` tries before giving up
``ping_interval``   3          seconds between pings; 2 unanswered = disconnected
``reconnect_wait``  1          seconds between reconnect attempts
``double_ack``      false      ``true``: wait for the server to confirm every ack
``start``           all        (note 4) where a new consumer begins: ``all`` the stream
                               holds, or only ``new`` messages
``token``, ``creds``           auth token / path of a ``.creds`` file
``tls_ca``, ``tls_cert``,      CA bundle / client certificate and key (``tls://``)
``tls_key``
==================  =========  ==================================================

Any other option is refused with an error naming it: a misspelt one would otherwise
fall back to its default without a word.

Note 1: default ``sagawire.deadletter``. A subject can belong to one stream only,
so two deployments with different streams in one NATS account (or tests running
side by side) must each pick their own, e.g. ``sagawire.deadletter.ORDERS``.

Note 2: the prefix applies to every subject, the dead-letter one included
(``PREFIX.sagawire.deadletter``), and is stripped on delivery, so the engine
still sees destination ``X``. Use it to run two deployments of the same sagas
(or tests side by side) in one NATS account: their subjects never overlap.

Note 3: what the transport holds (handed to the engine, or fetched ahead) never
waits on ``ack_wait``: it gets in-progress acks before ack_wait runs out
(:mod:`adapters._nats_leases`), however long the engine holds it. So ``ack_wait`` only
says how soon the messages of a consumer that vanished without giving them back (a
process killed with -9, a lost host or network) go to another consumer: 4 s, so that
a restarted sidecar has its sagas moving within 5 s. The price of a shorter one: the
leases are renewed more often (every third of ack_wait, for messages held that long),
and a renewal that cannot reach the server within half of ack_wait (the connection
down, the event loop stalled) lets the message be delivered again, counting against
``max_deliver`` (harmless to the engine's effects: its inbox absorbs the copy). On a
link that drops for seconds at a time, raise it. :meth:`NatsTransport.declare
<adapters.nats.NatsTransport.declare>` applies it to an existing durable consumer too
(JetStream updates ``ack_wait`` in place, from nats-server 2.9).

Environment (used when the URL does not say): ``SAGAWIRE_NATS_USER``,
``SAGAWIRE_NATS_PASSWORD``, ``SAGAWIRE_NATS_TOKEN``, ``SAGAWIRE_NATS_CREDS``.

Note 4: it applies when the group's durable consumer is created, and never after: a
consumer that exists goes on from where it was. ``start=new`` is for a tracker joining
a system whose stream already holds history it must not act on (old checkouts it would
complete or compensate); a sidecar that orchestrates wants ``all``.
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

from adapters._util import check_options, query_params, redact_url
from adapters.base import DEADLETTER
from schemas.errors import ConfigError

__all__ = ["NatsOptions"]

_TRUE = {"1", "true", "yes", "on"}
_OPTIONS = frozenset(
    {
        "stream",
        "deadletter",
        "subject_prefix",
        "max_age",
        "max_deliver",
        "ack_wait",
        "max_ack_pending",
        "fetch_timeout",
        "publish_timeout",
        "connect_timeout",
        "ping_interval",
        "reconnect_wait",
        "double_ack",
        "start",
        "token",
        "creds",
        "tls_ca",
        "tls_cert",
        "tls_key",
    }
)
"""The query options of the table above; any other is refused (a misspelling)."""


@dataclass(frozen=True, slots=True)
class NatsOptions:
    """Parsed, validated settings. Build with :meth:`from_url`."""

    server: str
    display: str
    stream: str = "SAGAWIRE"
    deadletter: str = DEADLETTER
    subject_prefix: str = ""
    max_age: float = 604800.0
    max_deliver: int = 10
    ack_wait: float = 4.0
    max_ack_pending: int = 1024
    fetch_timeout: float = 5.0
    publish_timeout: float = 10.0
    connect_timeout: float = 10.0
    ping_interval: float = 3.0
    reconnect_wait: float = 1.0
    double_ack: bool = False
    start: str = "all"
    user: str | None = None
    password: str | None = None
    token: str | None = None
    creds: str | None = None
    tls: bool = False
    tls_ca: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None

    @classmethod
    def from_url(cls, url: str, env: Mapping[str, str] | None = None) -> NatsOptions:
        """Parse ``url``; a :class:`ConfigError` (without secrets) when it is malformed."""
        env = os.environ if env is None else env
        parts = urlsplit(url)
        display = redact_url(urlunsplit((parts.scheme, parts.netloc, parts.path, "", "")))
        if parts.scheme not in ("nats", "tls"):
            raise ConfigError(f"not a NATS URL: {display} (use nats:// or tls://)")
        try:
            host, port = parts.hostname, parts.port or 4222
        except ValueError as exc:
            raise ConfigError(f"bad port in NATS URL {display}") from exc
        if not host:
            raise ConfigError(f"no host in NATS URL {display}")
        check_options(url, _OPTIONS, display)
        q = query_params(url)
        stream = q.get("stream", "SAGAWIRE")
        if not stream or any(c in stream for c in ".*> \t/\\"):
            raise ConfigError(
                f"bad stream name {stream!r} in {display}: no '.', '*', '>' or spaces"
            )
        subject_prefix = q.get("subject_prefix", "")
        if subject_prefix and not _valid_subject(subject_prefix):
            raise ConfigError(
                f"bad subject_prefix {subject_prefix!r} in {display}: dot-separated tokens, "
                "no '*', '>', spaces or empty tokens"
            )
        ack_wait = _positive(q, "ack_wait", 4.0, display)
        if ack_wait < 1:
            raise ConfigError(
                f"bad ack_wait={ack_wait:g} in {display}: want >= 1 (seconds); the leases of"
                " held messages are renewed every third of it"
            )
        start = q.get("start", "all")
        if start not in ("all", "new"):
            raise ConfigError(f"bad start={start!r} in {display}: all or new")
        user = unquote(parts.username) if parts.username else None
        password = unquote(parts.password) if parts.password is not None else None
        token = q.get("token")
        if user is not None and password is None:  # nats://TOKEN@host is the NATS convention
            token, user = token or user, None
        user = user or env.get("SAGAWIRE_NATS_USER") or None
        password = password or env.get("SAGAWIRE_NATS_PASSWORD") or None

        return cls(
            server=f"{parts.scheme}://{host}:{port}",
            display=f"{display} (stream {stream})",
            stream=stream,
            deadletter=q.get("deadletter") or DEADLETTER,
            subject_prefix=subject_prefix,
            max_age=_positive(q, "max_age", 604800.0, display),
            max_deliver=int(_positive(q, "max_deliver", 10, display, whole=True)),
            ack_wait=ack_wait,
            max_ack_pending=int(_positive(q, "max_ack_pending", 1024, display, whole=True)),
            fetch_timeout=_positive(q, "fetch_timeout", 5.0, display),
            publish_timeout=_positive(q, "publish_timeout", 10.0, display),
            connect_timeout=_positive(q, "connect_timeout", 10.0, display),
            ping_interval=_positive(q, "ping_interval", 3.0, display),
            reconnect_wait=_positive(q, "reconnect_wait", 1.0, display),
            double_ack=q.get("double_ack", "").lower() in _TRUE,
            start=start,
            user=user,
            password=password,
            token=token or env.get("SAGAWIRE_NATS_TOKEN") or None,
            creds=q.get("creds") or env.get("SAGAWIRE_NATS_CREDS") or None,
            tls=parts.scheme == "tls" or "tls_ca" in q,
            tls_ca=q.get("tls_ca"),
            tls_cert=q.get("tls_cert"),
            tls_key=q.get("tls_key"),
        )

    def subject(self, destination: str) -> str:
        """The NATS subject of ``destination`` (the dead-letter one is configurable)."""
        subject = self.deadletter if destination == DEADLETTER else destination
        return f"{self.subject_prefix}.{subject}" if self.subject_prefix else subject

    def destination(self, subject: str) -> str:
        """The destination a message on ``subject`` was published to: :meth:`subject`
        reversed."""
        if self.subject_prefix:
            subject = subject.removeprefix(f"{self.subject_prefix}.")
        return DEADLETTER if subject == self.deadletter else subject

    @property
    def secrets(self) -> tuple[str, ...]:
        """Values that must never be printed, for scrubbing driver error texts."""
        return tuple(s for s in (self.password, self.token) if s)

    def scrub(self, text: str) -> str:
        """``text`` with every secret replaced by ``***``."""
        for secret in self.secrets:
            text = text.replace(secret, "***")
        return text

    def connect_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``nats.connect`` except the callbacks."""
        kwargs: dict[str, Any] = {
            "servers": [self.server],
            "connect_timeout": self.connect_timeout,
            "allow_reconnect": True,
            "max_reconnect_attempts": -1,
            "reconnect_time_wait": self.reconnect_wait,
            "ping_interval": self.ping_interval,
            "max_outstanding_pings": 2,
            "dont_randomize": True,
        }
        if self.user is not None:
            kwargs["user"] = self.user
            kwargs["password"] = self.password or ""
        if self.token is not None:
            kwargs["token"] = self.token
        if self.creds is not None:
            kwargs["user_credentials"] = self.creds
        if self.tls:
            kwargs["tls"] = self._ssl_context()
        return kwargs

    def _ssl_context(self) -> ssl.SSLContext:
        try:
            ctx = ssl.create_default_context(cafile=self.tls_ca)
            if self.tls_cert:
                ctx.load_cert_chain(self.tls_cert, self.tls_key)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"cannot load TLS files for {self.display}: {exc}") from exc
        return ctx


def _valid_subject(subject: str) -> bool:
    """A literal NATS subject: non-empty dot-separated tokens, no wildcards or spaces."""
    return all(token and not any(c in token for c in "*> \t\r\n") for token in subject.split("."))


def _positive(
    q: Mapping[str, str], name: str, default: float, display: str, *, whole: bool = False
) -> float:
    """The query option ``name`` as a number > 0 (a whole one if ``whole``)."""
    raw = q.get(name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = 0.0
    if value <= 0 or (whole and not value.is_integer()):
        kind = "a whole number" if whole else "a number"
        raise ConfigError(f"bad {name}={raw!r} in {display}: want {kind} > 0")
    return value
