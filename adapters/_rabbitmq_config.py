"""RabbitMQ settings, read once from the broker URL and the environment.

``amqp://user:pass@host:port/vhost?exchange=NAME&queue_prefix=P&prefetch=256
&heartbeat=10&reconnect_max=1&queue_type=classic&mandatory=0`` and ``amqps://``
with ``?cafile=ca.pem``. Credentials missing from the URL come from
``SAGAWIRE_AMQP_USER`` / ``SAGAWIRE_AMQP_PASSWORD`` (so a URL in a config file
need not hold a secret), then RabbitMQ's ``guest``/``guest``. Any other option is
refused with an error naming it, rather than left to fall back to its default.

``reconnect_max`` caps the pause between reconnect attempts (seconds, with jitter):
1 s by default, so a sidecar is ready again within about a second of its broker
coming back (a lost connection stops everything it carries; one attempt a second
costs the broker nothing).

Names on the broker, all derived here so the whole layout is in one place:

- one durable *topic* exchange (``exchange``, default ``sagawire``); the routing
  key of a message is its destination;
- one durable queue per consumer group, ``<queue_prefix>.<group>``;
- one durable queue ``<exchange>.deadletter`` bound to :data:`DEADLETTER`, so
  dead letters are kept even when nobody consumes them. For the default exchange
  that is ``sagawire.deadletter``; a test's private exchange ``sw_1234`` gets
  ``sw_1234.deadletter``, which the test can delete with the exchange.
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

from adapters._util import check_options, query_params, redact_url
from schemas.errors import ConfigError

__all__ = ["RabbitConfig"]

ENV_USER = "SAGAWIRE_AMQP_USER"
ENV_PASSWORD = "SAGAWIRE_AMQP_PASSWORD"
QUEUE_TYPES = ("classic", "quorum")
_OPTIONS = frozenset(
    {
        "exchange",
        "queue_prefix",
        "queue_type",
        "prefetch",
        "heartbeat",
        "reconnect_max",
        "mandatory",
        "cafile",
    }
)
"""The query options the URL may hold; any other is refused (a misspelling)."""


@dataclass(frozen=True, slots=True)
class RabbitConfig:
    """Everything the RabbitMQ transport reads from its URL. ``password`` never
    leaves this object except into the connection; ``display_url`` is for humans."""

    display_url: str
    host: str
    port: int
    vhost: str
    user: str
    password: str
    tls: bool
    cafile: str | None
    exchange: str = "sagawire"
    queue_prefix: str = "sagawire"
    queue_type: str = "classic"
    prefetch: int = 256
    heartbeat: int = 10
    reconnect_max: float = 1.0
    mandatory: bool = False

    @classmethod
    def from_url(cls, url: str, env: Mapping[str, str] | None = None) -> RabbitConfig:
        env = os.environ if env is None else env
        display = redact_url(url)
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError as exc:
            raise ConfigError(f"bad RabbitMQ URL {display!r}: {exc}") from None
        if parts.scheme not in ("amqp", "amqps"):
            raise ConfigError(f"RabbitMQ URL must start with amqp:// or amqps://, got {display!r}")
        tls = parts.scheme == "amqps"
        check_options(url, _OPTIONS, repr(display))
        q = query_params(url)
        path = parts.path[1:] if parts.path.startswith("/") else parts.path
        try:
            config = cls(
                display_url=display,
                host=parts.hostname or "localhost",
                port=port or (5671 if tls else 5672),
                vhost=unquote(path) or "/",
                user=unquote(parts.username or "") or env.get(ENV_USER, "guest"),
                password=unquote(parts.password or "") or env.get(ENV_PASSWORD, "guest"),
                tls=tls,
                cafile=q.get("cafile"),
                exchange=q.get("exchange", "sagawire"),
                queue_prefix=q.get("queue_prefix", "sagawire"),
                queue_type=q.get("queue_type", "classic"),
                prefetch=int(q.get("prefetch", "256")),
                heartbeat=int(q.get("heartbeat", "10")),
                reconnect_max=float(q.get("reconnect_max", "1")),
                mandatory=q.get("mandatory", "0").lower() in ("1", "true", "yes"),
            )
        except ValueError as exc:
            raise ConfigError(f"bad number in RabbitMQ URL {display!r}: {exc}") from None
        if config.queue_type not in QUEUE_TYPES:
            raise ConfigError(
                f"queue_type={config.queue_type!r} in {display!r}; use one of {QUEUE_TYPES}"
            )
        if not config.exchange or not config.queue_prefix or config.prefetch < 1:
            raise ConfigError(f"exchange, queue_prefix and prefetch>=1 are required in {display!r}")
        if config.cafile and not tls:
            raise ConfigError(f"cafile= needs an amqps:// URL, got {display!r}")
        return config

    def queue_name(self, group: str) -> str:
        """The durable queue a consumer group shares."""
        return f"{self.queue_prefix}.{group}"

    @property
    def deadletter_queue(self) -> str:
        """The queue that keeps dead letters published through this exchange."""
        return f"{self.exchange}.deadletter"

    @property
    def queue_arguments(self) -> dict[str, Any] | None:
        """Only quorum queues get an argument: classic is the broker default, and
        sending no arguments matches queues declared by hand without them."""
        return {"x-queue-type": "quorum"} if self.queue_type == "quorum" else None

    def connect_kwargs(self, role: str = "") -> dict[str, Any]:
        """Keyword arguments for :func:`aio_pika.connect`; ``role`` names the connection
        on the broker (``sagawire publish``, ``sagawire consume``)."""
        kwargs: dict[str, Any] = {
            "host": self.host,
            "port": self.port,
            "login": self.user,
            "password": self.password,
            "virtualhost": self.vhost,
            "heartbeat": self.heartbeat,
            "timeout": 10,
            "client_properties": {"connection_name": f"sagawire {role}".strip()},
        }
        if self.tls:
            kwargs["ssl"] = True
            kwargs["ssl_context"] = ssl.create_default_context(cafile=self.cafile)
        return kwargs
