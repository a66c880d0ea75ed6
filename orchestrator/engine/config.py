"""How an engine is tuned, and who is told of each transition (what it counts:
:mod:`orchestrator.engine.stats`, re-exported here)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from orchestrator.engine.model import Decision, Instance
from orchestrator.engine.stats import Stats
from schemas.errors import ConfigError
from schemas.limits import DEFAULT_LIMITS, Limits

__all__ = ["CONTENT_MODES", "EngineConfig", "Observer", "Stats"]

CONTENT_MODES = ("structured", "binary")
"""How the engine writes the CloudEvents it sends (it reads both, and plain JSON)."""

Observer = Callable[[Instance, Decision], None]
"""Called after commit for every applied transition (demo progress, bench latency)."""


@dataclass(frozen=True)
class EngineConfig:
    group: str = "sagawire"
    max_batch: int = 256
    conflict_retries: int = 5
    """Rounds of version conflicts decided again at once; past them, with a pause."""
    housekeeping_interval: float = 0.5
    retry_backoff_first: float = 0.05
    retry_backoff_max: float = 1.0
    """Pauses (capped exponential, with jitter) between probes of a store that went
    away, and between rounds of conflicts that do not settle. The cap bounds how long
    after a store comes back the engine notices (``/readyz`` turns 200)."""
    inbox_retention: float = 7 * 24 * 3600.0
    """How long a message id is remembered for de-duplication (past any redelivery)."""
    deadletter_retention: float = 14 * 24 * 3600.0
    """Seconds dead letters are kept in the store for ``GET /deadletters`` and redrive."""
    prune_interval: float = 3600.0
    cache_size: int = 20_000
    """Running instances kept in memory between messages (0 disables the cache)."""
    limits: Limits = DEFAULT_LIMITS
    """Largest incoming message and attribute: larger ones are dead letters."""
    catch_up: float = 0.0
    """Seconds, after :meth:`Engine.run` starts, that timers wait for the consumer to
    catch up: its broker ready that long and nothing left to read. A deadline judged
    while a restarted sidecar has not yet read the events published while it was down
    would fail flows that went well (and an early event parked before the restart would
    expire before the event it waited for is read). 0: timers fire at once, as a harness
    and the bench want; the sidecar sets 5 (see ``catch_up_limit``)."""
    catch_up_limit: float = 30.0
    """Seconds after which timers fire whether caught up or not (a broker busy without
    pause would otherwise hold them for ever)."""
    partitions: int = 0
    """Partitioned mode on brokers that carry events by type (NATS, RabbitMQ): this many
    partitions, each read by one replica at a time, so that each instance has one
    owner (:mod:`orchestrator.engine.partitioning`). 0: replicas compete for messages.
    Ignored where the broker partitions itself (Kafka) or there is one process (memory)."""
    replica: str = ""
    """This replica's name in the store's leases ('' : host, pid and a random suffix)."""
    lease_ttl: float = 3.0
    """Seconds a replica's leases outlive its last renewal: how long a killed replica's
    partitions wait before the others take them. Renewed every third of it."""
    content_mode: str = "structured"
    """How commands and outcome events go out: ``structured`` (the whole CloudEvent as
    a JSON body) or ``binary`` (``data`` as the body, each attribute in a header under
    the broker's binding prefix: ``ce_`` Kafka, ``ce-`` NATS, ``cloudEvents_`` AMQP)."""

    def __post_init__(self) -> None:
        if self.content_mode not in CONTENT_MODES:
            raise ConfigError(
                f"content mode {self.content_mode!r} is not one of {', '.join(CONTENT_MODES)}"
            )

    @property
    def binary(self) -> bool:
        return self.content_mode == "binary"
