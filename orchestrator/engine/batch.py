"""The data the engine's parts pass along for one batch, and the state they share.

A :class:`Batch` is what one pass over a batch of deliveries produced: the units of
work (one per applied message, parked message or fired timer) with the item, the
decision and the versioned instance each came from, the dead letters, and the
deliveries not to acknowledge.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field

import structlog

from adapters.base import Delivery, Topology, Transport
from orchestrator.engine.clock import Clock
from orchestrator.engine.correlate import Routed, Router
from orchestrator.engine.model import Decision, Instance
from orchestrator.engine.outage import StoreHealth
from orchestrator.engine.relay import Relay
from orchestrator.store.base import (
    InstanceKey,
    InstanceRecord,
    ParkedRecord,
    Store,
    UnitOfWork,
)
from schemas.limits import DEFAULT_LIMITS, Limits

__all__ = [
    "Batch",
    "DeadLetter",
    "EngineConfig",
    "EngineState",
    "Item",
    "Observer",
    "Reads",
    "Stats",
    "log",
]

log = structlog.get_logger("sagawire.engine")

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
    limits: Limits = DEFAULT_LIMITS
    """Largest incoming message and attribute: larger ones are dead letters."""
    inbox_retention: float = 7 * 24 * 3600.0
    """How long a message id is remembered for de-duplication (past any redelivery)."""
    prune_interval: float = 3600.0
    cache_size: int = 20_000
    """Running instances kept in memory between messages (0 disables the cache)."""


@dataclass(eq=False)
class Item:
    routed: Routed
    delivery: Delivery | None = None
    parked: ParkedRecord | None = None
    timer: str | None = None


@dataclass
class Stats:
    deliveries: int = 0
    transitions: int = 0
    duplicates: int = 0
    parked: int = 0
    dead_letters: int = 0
    conflicts: int = 0
    timers_fired: int = 0
    dead_letter_reasons: dict[str, int] = field(default_factory=dict)
    """Dead letters by kind of reason (``MessageError.kind``, ``rejected``, ``expired``...)."""

    def dead_lettered(self, kind: str) -> None:
        self.dead_letters += 1
        self.dead_letter_reasons[kind] = self.dead_letter_reasons.get(kind, 0) + 1


DeadLetter = tuple[Delivery, str, str]
"""A delivery to dead-letter, the reason (text) and its kind (the metric's label)."""


@dataclass(frozen=True, slots=True)
class Reads:
    """What the store said before deciding, plus what the batch still being committed
    knows and the store does not yet (taken at the same moment, before that commit
    can finish and forget it)."""

    seen: set[tuple[str, str]]
    records: dict[InstanceKey, InstanceRecord]
    parked: list[ParkedRecord]
    pending_parked: dict[InstanceKey, list[Item]]
    provisional: dict[InstanceKey, Instance]


@dataclass(eq=False)
class Batch:
    """What one pass over a batch produced, before and after commit."""

    units: list[UnitOfWork] = field(default_factory=list)
    owners: list[Item] = field(default_factory=list)
    decisions: list[Decision | None] = field(default_factory=list)
    afters: list[Instance | None] = field(default_factory=list)  # with their new version
    dead: list[DeadLetter] = field(default_factory=list)
    rejected: dict[int, DeadLetter] = field(default_factory=dict)
    """Dead letters decided on an instance's state, by the index of the unit that checks
    that state: each joins ``dead`` only if its unit commits."""
    failed: set[int] = field(default_factory=set)  # id(delivery) not to ack
    deliveries: list[Delivery] = field(default_factory=list)
    items: list[Item] = field(default_factory=list)
    parked_items: dict[InstanceKey, list[Item]] = field(default_factory=dict)
    serial: int = 0
    broken: bool = False
    """Not all of it committed (a unit conflicted, or the commit failed): a batch decided
    on its instances and marks must be decided again."""

    def add(
        self,
        unit: UnitOfWork,
        item: Item,
        decision: Decision | None,
        after: Instance | None = None,
    ) -> None:
        self.units.append(unit)
        self.owners.append(item)
        self.decisions.append(decision)
        self.afters.append(after)


class EngineState:
    """The attributes the engine's parts share (set in :class:`orchestrator.engine.Engine`).

    Declared here so each part (pipeline, deciding, committing, housekeeping) reads as
    a small module of its own over one state, like the steps of the data flow."""

    router: Router
    store: Store
    transport: Transport
    clock: Clock
    config: EngineConfig
    topology: Topology
    stats: Stats
    observers: list[Observer]
    ready_reason: str
    _lock: asyncio.Lock
    _health: StoreHealth
    relay: Relay
    _parked_keys: set[InstanceKey]
    _moved: set[InstanceKey]
    _to_revive: set[InstanceKey]
    _cache: dict[InstanceKey, Instance]
    _pending: Batch | None
    _provisional: dict[InstanceKey, tuple[int, Instance]]
    _inflight: dict[tuple[str, str], int]
    _pending_parked: dict[InstanceKey, list[Item]]
    _serial: int
    _published: list[str]
