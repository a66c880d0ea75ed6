"""What ``sagawire run`` was told: the sidecar's settings, and the ``--http`` address parser.

Apart from the process (:mod:`orchestrator.sidecar.service`) because its readers should
not need the process: the CLI checks the command line into them before anything heavy
is imported, and the HTTP API and its metrics read limits and cache times from them.
Plain data and one parser: nothing of the engine, the store or the broker.
"""

from __future__ import annotations

from dataclasses import dataclass

from schemas.errors import ConfigError
from schemas.limits import DEFAULT_LIMITS, Limits

__all__ = ["Settings", "parse_listen"]


def parse_listen(value: str) -> tuple[str, int]:
    """``HOST:PORT`` (or ``[v6]:PORT``) -> ``(host, port)``; ConfigError if malformed."""
    host, sep, port_text = value.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port_text.isdigit() or int(port_text) > 65535:
        raise ConfigError(f"--http {value!r} is not HOST:PORT (e.g. 127.0.0.1:8080)")
    return host, int(port_text)


@dataclass(frozen=True)
class Settings:
    """What ``sagawire run`` was told. URLs may hold secrets: log them redacted."""

    sagas: str = "./sagas"
    broker: str = "memory://"
    store: str = "sqlite:///sagawire.db"
    host: str = "127.0.0.1"
    port: int = 8080
    group: str = "sagawire"
    http_grace: int = 5  # seconds requests in flight get at shutdown
    memory_drain: float = 10.0  # seconds to finish accepted events on memory://
    engine_grace: float = 2.0  # seconds the engine gets to return once stopping is set
    counts_ttl: float = 5.0  # seconds /metrics reuses instance counts
    limits: Limits = DEFAULT_LIMITS  # largest message / attribute taken (HTTP and broker)
    publish_timeout: float = 4.0  # seconds POST /events waits for the broker's confirmation
    content_mode: str = "structured"  # how sent CloudEvents are written: structured, binary
    catch_up: float = 5.0  # seconds timers wait, at start, for the consumer to catch up
