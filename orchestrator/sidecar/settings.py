"""What ``sagawire run`` was told: the sidecar's settings, and the ``--http`` address parser.

Apart from the process (:mod:`orchestrator.sidecar.service`) because its readers should
not need the process: the CLI checks the command line into them before anything heavy
is imported, and the HTTP API and its metrics read limits and cache times from them.
Plain data, validated: nothing of the engine, the store or the broker is opened here
(a broker URL is read as its transport would read it, connecting to nothing).

Two kinds of field. The :data:`OPTIONS` are what an operator sets, each from a flag, a
``SAGAWIRE_*`` variable or the TOML file (:mod:`orchestrator.sidecar.config` merges
those and says which one a bad value came from); ``http`` (``HOST:PORT``) is the one
option that is two fields, :attr:`Settings.host` and :attr:`Settings.port`. The rest are
the process's own timings, which code and tests set by keyword.

``Settings(...)`` takes exactly the keywords it is given and reads no environment, so a
test's settings never pick up the ``SAGAWIRE_BROKER`` of the shell that runs it.
"""

from __future__ import annotations

import importlib.metadata
from typing import Any, Literal, get_args
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from adapters import check_transport_url
from orchestrator.sidecar.logs import LEVELS
from orchestrator.store import STORE_SCHEMES
from schemas.errors import ConfigError
from schemas.limits import DEFAULT_LIMITS, Limits

__all__ = ["OPTIONS", "SECRETS", "LogLevel", "Settings", "parse_listen", "version"]

LogLevel = Literal["debug", "info", "warning", "error", "critical"]

OPTIONS: tuple[str, ...] = (
    "sagas",
    "broker",
    "store",
    "http",
    "group",
    "log_level",
    "max_message_bytes",
    "max_attribute_bytes",
    "content_mode",
    "catch_up",
    "admin_token",
    "read_token",
    "max_request_bytes",
    "deadletter_retention",
    "stuck_after",
    "otel",
    "cache_size",
    "partitions",
    "replica",
    "lease_ttl",
)
"""The settings an operator gives: ``--NAME`` (dashes), ``SAGAWIRE_NAME``, or ``NAME =``
in the TOML file. ``http`` sets :attr:`Settings.host` and :attr:`Settings.port`."""

SECRETS = frozenset({"admin_token", "read_token"})
"""Settings whose value is never printed, not even in the error that refuses it."""

_OFF = frozenset({"off", "none", "never"})


def version() -> str:
    """This sagawire's version (``sagawire --version``, the OpenAPI document)."""
    try:
        return importlib.metadata.version("sagawire")
    except importlib.metadata.PackageNotFoundError:  # run from a checkout, not installed
        return "0+unknown"


def parse_listen(value: str) -> tuple[str, int]:
    """``HOST:PORT`` (or ``[v6]:PORT``) -> ``(host, port)``; ConfigError if malformed.

    The error says what is wrong, not with what: the caller names the setting and
    where its value came from."""
    host, sep, port_text = value.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port_text.isdigit() or int(port_text) > 65535:
        raise ConfigError("not HOST:PORT (e.g. 127.0.0.1:8080, [::1]:8080)")
    return host, int(port_text)


class Settings(BaseSettings):
    """What ``sagawire run`` was told. URLs and tokens may hold secrets: log URLs
    redacted (:func:`adapters._util.redact_url`); tokens are :class:`SecretStr`."""

    model_config = SettingsConfigDict(
        env_prefix="SAGAWIRE_",
        extra="forbid",  # a misspelt keyword is an error, not a setting quietly ignored
        frozen=True,
        validate_default=True,
        allow_inf_nan=False,  # no "inf" seconds: a duration is a number
    )

    # -- options: flag, SAGAWIRE_* or the TOML file ---------------------------------------
    sagas: str = Field("./sagas", min_length=1)  # file, directory or dotted module
    broker: str = "memory://"  # memory://, kafka://, nats:// (tls://), amqp:// (amqps://)
    store: str = "sqlite:///sagawire.db"  # memory://, sqlite:///file.db, postgresql://
    host: str = Field("127.0.0.1", min_length=1)  # the ``http`` option's HOST
    port: int = Field(8080, ge=0, le=65535)  # ... and its PORT (0: any free port)
    group: str = Field("sagawire", min_length=1)  # consumer group shared by replicas
    log_level: LogLevel = "info"
    max_message_bytes: int = Field(DEFAULT_LIMITS.max_message_bytes, ge=1024)
    max_attribute_bytes: int = Field(DEFAULT_LIMITS.max_attribute_bytes, ge=64)
    content_mode: Literal["structured", "binary"] = "structured"  # how sent events are written
    catch_up: float = Field(5.0, ge=0)  # seconds timers wait at start for the consumer
    admin_token: SecretStr | None = None  # bearer token of the admin (writing) routes
    read_token: SecretStr | None = None  # bearer token of the reading routes
    max_request_bytes: int = Field(1024 * 1024, ge=1024)  # largest HTTP request body
    deadletter_retention: float = Field(14 * 86400.0, gt=0)  # seconds dead letters are kept
    stuck_after: float | None = Field(3600.0, gt=0)  # seconds in one state; None ("off")
    otel: bool = False  # OpenTelemetry spans (needs the ``otel`` extra)
    cache_size: int = Field(20_000, ge=0)  # running instances kept between events; 0: none
    partitions: int = Field(0, ge=0, le=4096)  # NATS/RabbitMQ: one owner per instance; 0: off
    replica: str = ""  # this replica's name in the leases ('': host-pid-random)
    lease_ttl: float = Field(3.0, ge=0.5, le=300)  # seconds a dead replica's partitions wait

    # -- the process's own timings: keywords only -----------------------------------------
    http_grace: int = Field(5, ge=0)  # seconds requests in flight get at shutdown
    memory_drain: float = Field(10.0, ge=0)  # seconds to finish accepted events (memory://)
    engine_grace: float = Field(2.0, ge=0)  # seconds the engine gets to return once stopping
    counts_ttl: float = Field(5.0, ge=0)  # seconds /metrics reuses instance counts
    publish_timeout: float = Field(4.0, gt=0)  # seconds POST /events waits for the broker

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Keywords only: the flag, environment and file layers are merged by
        :func:`orchestrator.sidecar.config.load_settings`, which knows where each value
        came from (pydantic-settings' own merge forgets it)."""
        return (init_settings,)

    @property
    def limits(self) -> Limits:
        """Largest message / attribute taken (over HTTP and from the broker). Made on
        each call (a small value object), so a ``model_copy(update=...)`` never keeps
        the limits of the settings it was copied from."""
        return Limits(self.max_message_bytes, self.max_attribute_bytes)

    @field_validator("broker")
    @classmethod
    def _known_broker(cls, url: str) -> str:
        try:
            check_transport_url(url)
        except ConfigError as exc:
            raise ValueError(str(exc)) from None
        return url

    @field_validator("store")
    @classmethod
    def _known_store(cls, url: str) -> str:
        try:
            scheme = urlsplit(url).scheme
        except ValueError as exc:
            raise ValueError(f"bad store URL: {exc}") from None
        if scheme not in STORE_SCHEMES:
            known = ", ".join(f"{s}://" for s in STORE_SCHEMES)
            raise ValueError(f"unknown store URL scheme {scheme + '://'!r}; known: {known}")
        return url

    @field_validator("log_level", mode="before")
    @classmethod
    def _level_name(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        name = value.strip().lower()
        name = "warning" if name == "warn" else name
        if name not in get_args(LogLevel):
            raise ValueError(f"unknown log level {value!r}; use one of {', '.join(LEVELS)}")
        return name

    @field_validator("stuck_after", mode="before")
    @classmethod
    def _off(cls, value: Any) -> Any:
        if isinstance(value, str) and value.strip().lower() in _OFF:
            return None
        return value

    @field_validator("admin_token", "read_token")
    @classmethod
    def _not_empty(cls, token: SecretStr | None) -> SecretStr | None:
        if token is not None and not token.get_secret_value().strip():
            raise ValueError("empty token: give one, or leave the setting out")
        return token
