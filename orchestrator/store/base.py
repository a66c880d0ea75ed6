"""The Store protocol and the plain records it stores.

Stores hold bytes and scalars, never pydantic models: the engine serialises, the
store persists. Everything one incoming message causes — the new instance state
with its version, the inbox mark, the history entry, the outbox rows, timers set
and cancelled, events parked and un-parked — is one :class:`UnitOfWork`, and
:meth:`Store.commit` writes *many* units in one transaction (group commit). A
unit whose expected version no longer matches, or whose inbox mark already
exists, is skipped and reported; the others commit. This maps directly onto
SQLite and PostgreSQL transactions.

Times are UNIX seconds as floats, from the engine's clock: stores never read a
clock themselves, so virtual time in tests works for them too. The one exception is
:meth:`Store.lease_round`, whose leases are timed by the store's clock (it says why).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

__all__ = [
    "Census",
    "Cursor",
    "DeadLetterQuery",
    "DeadLetterRecord",
    "FailedOutboxRecord",
    "HistoryRecord",
    "InstanceKey",
    "InstanceQuery",
    "InstanceRecord",
    "LeaseView",
    "OutboxRecord",
    "Outcome",
    "ParkedRecord",
    "Store",
    "StuckRule",
    "TimerRecord",
    "UnitOfWork",
]

InstanceKey = tuple[str, str]
"""``(saga name, correlation id)``."""


@dataclass(slots=True)  # not frozen: built per message, frozen __init__ costs 3x
class InstanceRecord:
    """One saga instance as stored. ``version`` starts at 1 and grows by one per commit.

    ``data`` is the JSON of the saga's state model; ``meta`` is JSON the engine owns
    (attempt counters, completed steps, failure reason)."""

    saga: str
    correlation_id: str
    state: str
    status: str
    version: int
    data: bytes
    meta: bytes
    created_at: float
    updated_at: float

    @property
    def key(self) -> InstanceKey:
        return (self.saga, self.correlation_id)


@dataclass(slots=True)  # not frozen: built per message, frozen __init__ costs 3x
class HistoryRecord:
    """One transition, appended for every message an instance handled."""

    saga: str
    correlation_id: str
    seq: int  # equals the instance version the transition produced
    message_id: str
    message_type: str
    from_state: str
    to_state: str
    commands: tuple[str, ...]  # "type:id" of each message sent
    at: float
    note: str = ""
    """What else the entry records, in words: a deviation from the declared flow
    (``deviation <kind>: ...``). Empty for a plain transition."""


@dataclass(slots=True)  # not frozen: built per message, frozen __init__ costs 3x
class OutboxRecord:
    """A message to publish after commit. ``id`` is the broker message id of this send
    (the CloudEvents id, ``#<attempt>`` added from a command's second attempt): kept on
    re-publish, so a broker that de-duplicates (JetStream) does, and a re-send is new."""

    id: str
    destination: str
    key: str | None
    body: bytes
    headers: tuple[tuple[str, str], ...] = ()
    created_at: float = 0.0


@dataclass(frozen=True, slots=True)
class FailedOutboxRecord:
    """An outbox row the broker refused for good (:class:`~schemas.errors.PublishRefused`):
    taken out of the relay so it blocks nothing behind it, and kept with the broker's
    reason for an operator to see."""

    row: OutboxRecord
    reason: str
    failed_at: float


@dataclass(slots=True)  # not frozen: built per message, frozen __init__ costs 3x
class TimerRecord:
    """A timer of an instance; ``(saga, correlation_id, name)`` is unique (setting it
    again moves it)."""

    saga: str
    correlation_id: str
    name: str
    due: float
    payload: bytes = b"{}"

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.saga, self.correlation_id, self.name)


@dataclass(slots=True)  # not frozen: built per message, frozen __init__ costs 3x
class ParkedRecord:
    """A message that arrived before it could be applied (no instance yet, or not
    accepted in the current state). Retried after each change of its instance;
    dead-lettered once ``expires`` passes."""

    saga: str
    correlation_id: str
    message_id: str
    destination: str
    body: bytes
    parked_at: float
    expires: float
    reason: str = ""


@dataclass(slots=True)
class UnitOfWork:
    """Everything one message caused, committed atomically with the rest of its batch.

    ``expected_version`` is the version the engine loaded (0 for a new instance).
    ``inbox`` is the ``(saga, message_id)`` mark that makes redelivery a no-op.
    ``check`` is ``(instance key, version)`` for a unit that does not write the instance
    but was decided on it (a message parked or rejected, a timer ignored): it commits
    only if the instance is still at that version (0: does not exist), like a write.
    A unit chained on one that conflicted or was a duplicate in the same commit (it
    expects the version that one would have written) conflicts too: that version, if
    stored, is another writer's.
    """

    instance: InstanceRecord | None = None
    expected_version: int = 0
    inbox: tuple[str, str] | None = None
    history: tuple[HistoryRecord, ...] = ()
    outbox: tuple[OutboxRecord, ...] = ()
    timers_set: tuple[TimerRecord, ...] = ()
    timers_cancelled: tuple[tuple[str, str, str], ...] = ()
    parked: tuple[ParkedRecord, ...] = ()
    unparked: tuple[tuple[str, str], ...] = ()  # (saga, message_id)
    check: tuple[InstanceKey, int] | None = None

    def expects(self) -> tuple[InstanceKey, int] | None:
        """``(instance key, version)`` this unit may commit on, if it depends on one."""
        if self.instance is not None:
            return self.instance.key, self.expected_version
        return self.check


@dataclass(frozen=True, slots=True)
class StuckRule:
    """Which running instances are *stuck*: not updated since a cut-off that depends on
    their state (its SLO). ``cutoffs`` are ``(saga, state, updated before)``; a running
    instance in any other state is stuck when updated before ``default`` (None: never)."""

    cutoffs: tuple[tuple[str, str, float], ...] = ()
    default: float | None = None


Cursor = tuple[float, str, str]
"""Where a page of instances ended: the last row's ``(updated_at, saga, correlation_id)``."""


@dataclass(frozen=True, slots=True)
class InstanceQuery:
    """A filtered page of instances for the operator API, newest first.

    Rows come in ``(updated_at, saga, correlation_id)`` order, all descending, so a page
    continues after the previous page's last row (``after``: keyset pagination; a deep
    page costs what the first does, and rows updated meanwhile are not skipped twice).
    Which index serves which filter is in :mod:`orchestrator.store._schema` (version 4)."""

    saga: str | None = None
    status: str | None = None
    state: str | None = None
    correlation_id: str | None = None
    updated_before: float | None = None
    updated_after: float | None = None
    stuck: StuckRule | None = None
    after: Cursor | None = None
    limit: int = 100


@dataclass(frozen=True, slots=True)
class DeadLetterRecord:
    """A message dead-lettered by this sidecar, kept in the store (as well as published
    to ``sagawire.deadletter``) so an operator can list it and redrive its original
    bytes to its original destination. ``id`` is the store's (0 before it is kept)."""

    id: int
    message_id: str
    type: str
    saga: str
    correlation_id: str
    destination: str
    key: str | None
    body: bytes
    headers: tuple[tuple[str, str], ...]
    kind: str
    reason: str
    at: float
    redriven_at: float | None = None
    redriven_by: str = ""


@dataclass(frozen=True, slots=True)
class DeadLetterQuery:
    """Filters of ``GET /deadletters``, newest first; ``before_id`` continues a page."""

    type: str | None = None
    saga: str | None = None
    kind: str | None = None
    reason: str | None = None  # a part of the reason's text
    since: float | None = None
    redriven: bool | None = None
    before_id: int | None = None
    limit: int = 100


class Outcome(enum.Enum):
    """What :meth:`Store.commit` did with each unit."""

    COMMITTED = "committed"
    DUPLICATE = "duplicate"  # inbox mark existed: another delivery already did this
    CONFLICT = "conflict"  # version moved: reload and decide again


@dataclass(frozen=True, slots=True)
class StoreInfo:
    """For ``/readyz`` and logs: what the store is, with no secrets."""

    kind: str
    location: str
    schema_version: int = 0
    extra: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Census:
    """How much the store holds at one moment (:meth:`Store.census`): the gauges of
    ``/metrics``, read in one go so a scrape costs one visit to the store."""

    instances: dict[tuple[str, str, str], int] = field(default_factory=dict)
    """Instances by ``(saga, state, status)`` (groups with none are absent). A finished
    instance's state is ``""``: it is its final state, and reading it would take a scan
    of every row where an index gives the rest (:mod:`orchestrator.store._census`)."""
    outbox_backlog: int = 0
    """Outbox rows not yet published (nor failed): the relay's work to do."""
    outbox_oldest: float | None = None
    """``created_at`` of the oldest of them (None: the outbox is empty)."""
    timers_pending: int = 0
    """Timers set and not yet fired or cancelled."""
    timers_due: int = 0
    """Of those, the ones due at the census's ``now``: more than a pass's worth means
    housekeeping falls behind (or waits for the consumer to catch up)."""
    parked: int = 0
    """Messages parked until their instance can take them."""
    stuck: dict[tuple[str, str], int] = field(default_factory=dict)
    """Running instances past their state's cut-off, by ``(saga, state)``, per the
    :class:`StuckRule` given (0 for every group with running instances without one)."""


@dataclass(frozen=True, slots=True)
class LeaseView:
    """What the store says about one group's replicas after a lease round
    (:meth:`Store.lease_round`)."""

    owners: Mapping[str, str]
    """unit -> member holding an unexpired lease on it (a unit nobody holds is absent)."""
    members: tuple[str, ...]
    """Members with an unexpired heartbeat, sorted (by code point)."""
    now: float
    """The store's clock at the round (epoch seconds): what the expiries are measured by."""


@runtime_checkable
class Store(Protocol):
    """Durable saga state. Implementations: memory, sqlite, postgresql."""

    async def open(self) -> None:
        """Connect, create or migrate the schema; refuse a newer schema."""

    async def close(self) -> None:
        """Release connections. Idempotent."""

    async def load(self, keys: Sequence[InstanceKey]) -> dict[InstanceKey, InstanceRecord]:
        """The instances that exist among ``keys``."""
        ...

    async def seen(self, marks: Sequence[tuple[str, str]]) -> set[tuple[str, str]]:
        """The ``(saga, message_id)`` inbox marks that already exist among ``marks``."""
        ...

    async def commit(
        self, units: Sequence[UnitOfWork], *, published: Sequence[str] = ()
    ) -> list[Outcome]:
        """Write all units in one transaction; one outcome per unit, in order.

        ``published`` are outbox ids already sent; they are removed in the same
        transaction (so relaying costs no extra commit)."""
        ...

    async def pending_outbox(
        self, limit: int = 1000, *, exclude: Sequence[str] = ()
    ) -> list[OutboxRecord]:
        """Outbox rows not yet marked published, oldest first, leaving out those bound for
        the ``exclude`` destinations (the relay's backing-off ones: their backlog must
        not fill the window and hide every other destination's rows)."""
        ...

    async def mark_published(self, ids: Sequence[str]) -> None:
        """Remove these outbox rows."""

    async def mark_failed(self, failures: Sequence[tuple[str, str]], at: float) -> None:
        """Take the outbox rows ``(id, reason)`` out of :meth:`pending_outbox` for good,
        keeping each with the broker's reason and ``at`` (:meth:`failed_outbox`).
        Unknown ids are ignored (already published, or already failed)."""

    async def failed_outbox(self, limit: int = 100) -> list[FailedOutboxRecord]:
        """Outbox rows marked failed, most recent first."""
        ...

    async def ping(self) -> None:
        """Return once the store answered a trivial query; raise a retryable
        :class:`~schemas.errors.StoreError` if it cannot (for ``/readyz`` and the
        engine's wait for a store that went away). Bounded in time: a store that
        does not answer within a few seconds is reported as unreachable."""

    async def due_timers(self, now: float, limit: int = 1000) -> list[TimerRecord]:
        """Timers with ``due <= now``, earliest first."""
        ...

    async def next_timer_due(self) -> float | None:
        """The earliest due time of any timer, or None."""
        ...

    async def parked(self, keys: Sequence[InstanceKey]) -> list[ParkedRecord]:
        """Parked messages for these instances, oldest first."""
        ...

    async def parked_keys(self) -> set[InstanceKey]:
        """Every instance key that has parked messages (read at start-up, then on each
        housekeeping pass, to learn of what other replicas parked)."""
        ...

    async def expired_parked(self, now: float, limit: int = 1000) -> list[ParkedRecord]:
        """Parked messages whose ``expires <= now``."""
        ...

    async def prune(self, *, inbox_before: float, history_before: float | None = None) -> int:
        """Delete inbox marks written before ``inbox_before`` (and history rows before
        ``history_before``, if given); return how many rows went. A mark only has to
        outlive the broker's redelivery window; the engine prunes on a schedule."""
        ...

    async def history(self, key: InstanceKey) -> list[HistoryRecord]:
        """The transitions of one instance, in order."""
        ...

    async def instances(
        self, saga: str | None = None, status: str | None = None, limit: int = 100
    ) -> list[InstanceRecord]:
        """Instances for admin views and tests, most recently updated first (ties by saga,
        then correlation id, so that a ``limit`` cuts the same rows on every store)."""
        ...

    async def counts(self) -> dict[str, int]:
        """Number of instances per status."""
        ...

    async def census(self, now: float, stuck: StuckRule | None = None) -> Census:
        """How many instances there are by saga, state and status (with how many of the
        running ones ``stuck`` calls stuck), outbox rows and the oldest's age, timers
        (and those due at ``now``), parked messages. Reads whole indexes: callers cache it."""
        ...

    # -- the operator's reads and writes (the sidecar's admin API) ----------------------

    async def find(self, query: InstanceQuery) -> list[InstanceRecord]:
        """One page of instances matching ``query``, in its order."""
        ...

    async def timers_of(self, key: InstanceKey) -> list[TimerRecord]:
        """The pending timers of one instance, earliest first."""
        ...

    async def outbox_rows(self, ids: Sequence[str]) -> list[OutboxRecord]:
        """The outbox rows among ``ids`` not yet published (nor failed), oldest first."""
        ...

    async def recent_deviations(self, limit: int = 20) -> list[HistoryRecord]:
        """The latest history entries that record a deviation, newest first, among the
        last 100,000 history entries (``_admin_sql.DEVIATION_WINDOW``)."""
        ...

    async def keep_dead_letters(self, records: Sequence[DeadLetterRecord]) -> None:
        """Store dead letters (their ``id`` is assigned here)."""

    async def dead_letters(self, query: DeadLetterQuery) -> list[DeadLetterRecord]:
        """Kept dead letters matching ``query``, newest first."""
        ...

    async def dead_letter(self, id: int) -> DeadLetterRecord | None:
        """One kept dead letter."""
        ...

    async def mark_redriven(
        self,
        id: int,
        at: float,
        by: str,
        inbox: Sequence[tuple[str, str]],
        copy: OutboxRecord,
    ) -> bool:
        """Redrive dead letter ``id``, once: in one transaction, record who and when,
        delete the ``inbox`` marks ``(saga, message_id)`` its first handling left (so
        the copy is handled, not skipped as a duplicate), and put ``copy`` in the outbox
        for the relay to publish. False, and nothing written, if it already was
        redriven (or is unknown)."""
        ...

    async def prune_dead_letters(self, before: float) -> int:
        """Delete dead letters kept before ``before`` (the retention); how many went."""
        ...

    # -- replicas sharing the store: membership and unit leases ----------------------

    async def lease_round(
        self,
        group: str,
        member: str,
        *,
        claim: Sequence[str] = (),
        release: Sequence[str] = (),
        ttl: float,
    ) -> LeaseView:
        """One transaction: record ``member``'s heartbeat (alive until now + ``ttl``);
        delete ``member``'s leases on ``release``; for each unit in ``claim`` take the
        lease when nobody holds an unexpired one or ``member`` already holds it; extend
        every lease ``member`` holds to now + ``ttl``; forget members (and their leases)
        expired for more than ``10 * ttl``; return the unexpired owners and live members
        (``member`` itself included).

        A lease is unexpired while ``expires_at >= now``. The clock is the store's, not
        the engine's: ``time.time()`` for memory and SQLite, the server's clock for
        PostgreSQL, so that replicas on hosts whose clocks disagree still agree on who
        holds what; ``LeaseView.now`` says what it read. Two members claiming the same
        free unit at once: exactly one gets it. ``ttl`` must be a positive number of
        seconds (ValueError otherwise).

        Which units are ``member``'s is exact as of the round's commit. The others'
        are on memory and SQLite too (rounds run one after another), but on PostgreSQL
        they are as of the round's start: a unit another replica took in that same
        instant shows as held by nobody until the next round (never as ``member``'s)."""
        ...

    async def leave(self, group: str, member: str) -> None:
        """A clean stop: drop ``member``'s heartbeat and every lease it holds, at once,
        so the others take its units without waiting for the ttl."""
