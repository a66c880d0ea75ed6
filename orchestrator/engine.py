"""The engine: the data flow of one batch, from deliveries to acks.

    deliveries -> decode (schemas.codec) -> route + correlate (correlate.Router)
    -> inbox check + load (store) -> decide, per instance in arrival order (decide)
    -> one commit for the whole batch: state, inbox, history, outbox, timers (persist)
    -> publish the outbox (transport) -> dead-letter what can never be handled
    -> ack

One batch is handled at a time and one instance's messages are applied in the
order they arrived; the instances in a batch proceed together (the bound is the
batch size), and share one commit — that is where the throughput comes from.
Nothing is acknowledged before the commit that records what it caused; a crash
anywhere means redelivery, and redelivery is a no-op thanks to the inbox.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import structlog

from adapters.base import HEADER_MESSAGE_ID, Delivery, OutgoingMessage, Topology, Transport
from orchestrator.clock import Clock, SystemClock
from orchestrator.correlate import Routed, Router
from orchestrator.decide import ABORT_EVENT, decide
from orchestrator.definition import SagaDefinition, timer_event
from orchestrator.model import Decision, Instance
from orchestrator.persist import (
    instance_from_record,
    outgoing,
    parked_unit,
    unit_for,
)
from orchestrator.store.base import (
    InstanceKey,
    InstanceRecord,
    Outcome,
    ParkedRecord,
    Store,
    TimerRecord,
    UnitOfWork,
)
from schemas.codec import decode
from schemas.envelope import Envelope
from schemas.errors import MessageError, StoreError, TransportError

__all__ = ["Engine", "EngineConfig", "Observer"]

log = structlog.get_logger("sagawire.engine")

Observer = Callable[[Instance, Decision], None]
"""Called after commit for every applied transition (demo progress, bench latency)."""


@dataclass(frozen=True)
class EngineConfig:
    group: str = "sagawire"
    max_batch: int = 256
    conflict_retries: int = 5
    housekeeping_interval: float = 0.5
    transient_retry_delay: float = 1.0
    cache_size: int = 20_000
    """Running instances kept in memory between messages (0 disables the cache)."""


@dataclass(eq=False)
class _Item:
    routed: Routed
    delivery: Delivery | None = None
    parked: ParkedRecord | None = None
    timer: str | None = None


@dataclass
class _Stats:
    deliveries: int = 0
    transitions: int = 0
    duplicates: int = 0
    parked: int = 0
    dead_letters: int = 0
    conflicts: int = 0
    timers_fired: int = 0


@dataclass(frozen=True, slots=True)
class _Reads:
    """What the store said before deciding, plus what the batch still being committed
    knows and the store does not yet (taken at the same moment, before that commit
    can finish and forget it)."""

    seen: set[tuple[str, str]]
    records: dict[InstanceKey, InstanceRecord]
    parked: list[ParkedRecord]
    pending_parked: dict[InstanceKey, list[_Item]]
    provisional: dict[InstanceKey, Instance]


@dataclass(eq=False)
class _Batch:
    """What one pass over a batch produced, before and after commit."""

    units: list[UnitOfWork] = field(default_factory=list)
    owners: list[_Item] = field(default_factory=list)
    decisions: list[Decision | None] = field(default_factory=list)
    afters: list[Instance | None] = field(default_factory=list)  # with their new version
    dead: list[tuple[Delivery, str]] = field(default_factory=list)
    failed: set[int] = field(default_factory=set)  # id(delivery) not to ack
    deliveries: list[Delivery] = field(default_factory=list)
    items: list[_Item] = field(default_factory=list)
    parked_items: dict[InstanceKey, list[_Item]] = field(default_factory=dict)
    serial: int = 0

    def add(
        self,
        unit: UnitOfWork,
        item: _Item,
        decision: Decision | None,
        after: Instance | None = None,
    ) -> None:
        self.units.append(unit)
        self.owners.append(item)
        self.decisions.append(decision)
        self.afters.append(after)


class Engine:
    """Runs loaded saga definitions against a store and a transport."""

    def __init__(
        self,
        sagas: Sequence[SagaDefinition],
        store: Store,
        transport: Transport,
        *,
        clock: Clock | None = None,
        config: EngineConfig | None = None,
    ) -> None:
        self.router = Router(sagas)
        self.store = store
        self.transport = transport
        self.clock = clock or SystemClock()
        self.config = config or EngineConfig()
        self.topology = Topology(
            consumes=self.router.consumes(),
            produces=self.router.produces(),
            group=self.config.group,
        )
        self.stats = _Stats()
        self.observers: list[Observer] = []
        self._lock = asyncio.Lock()
        self._parked_keys: set[InstanceKey] = set()
        self._cache: dict[InstanceKey, Instance] = {}  # insertion-ordered: oldest first
        self._pending: _Batch | None = None  # decided by the pipeline, not yet committed
        self._provisional: dict[InstanceKey, tuple[int, Instance]] = {}
        self._inflight: dict[tuple[str, str], int] = {}
        self._pending_parked: dict[InstanceKey, list[_Item]] = {}
        self._serial = 0
        self._published: list[str] = []
        self._relay_needed = True
        self._consuming = False
        self._handling = False
        self._stop = False
        self.ready_reason = "not started"

    # -- lifecycle ------------------------------------------------------------

    async def prepare(self) -> None:
        """Declare the topology, learn what is parked, republish a crash's leftovers."""
        await self.transport.declare(self.topology)
        self._parked_keys = await self.store.parked_keys()
        await self.relay_pending()

    async def run(self, stopping: asyncio.Event) -> None:
        """Consume and fire timers until ``stopping`` is set; then drain and return.

        If the consumer or the housekeeping loop dies first (a non-retryable store
        error, a transport that gave up), the other is stopped the same orderly way
        and the error is raised, so the process can exit non-zero and be restarted."""
        self._stop = False
        consumer = asyncio.ensure_future(self._consume(stopping))
        housekeeping = asyncio.ensure_future(self._housekeeping(stopping))
        stop_wait = asyncio.ensure_future(stopping.wait())
        try:
            await asyncio.wait(
                {consumer, housekeeping, stop_wait}, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            self._stop = True
            self._consuming = False
            self.ready_reason = "stopping"
            stop_wait.cancel()
            if not self._handling:
                consumer.cancel()  # idle in consume(): nothing in flight to finish
            housekeeping.cancel()
            for task in (consumer, housekeeping):
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            with contextlib.suppress(StoreError):
                async with self._lock:
                    await self._flush_marks()
        for task in (consumer, housekeeping):
            if task.done() and not task.cancelled() and task.exception() is not None:
                self.ready_reason = f"engine stopped: {task.exception()}"
                raise task.exception()  # type: ignore[misc]
        if consumer.done() and not stopping.is_set() and not consumer.cancelled():
            self.ready_reason = "the transport stopped delivering"
            raise TransportError("the transport's consumer ended unexpectedly")

    @property
    def consuming(self) -> bool:
        return self._consuming

    async def _consume(self, stopping: asyncio.Event) -> None:
        """Feed batches to the pipeline; when no batch is waiting, commit the pending one
        rather than hold it (its commands may be what the participants wait for)."""
        stream = self.transport.consume(self.topology, max_batch=self.config.max_batch)
        queue: asyncio.Queue[list[Delivery] | None] = asyncio.Queue(maxsize=1)

        async def read() -> None:
            try:
                async for batch in stream:
                    await queue.put(batch)
            finally:
                await queue.put(None)

        reader = asyncio.ensure_future(read())
        self._consuming = True
        self.ready_reason = ""
        try:
            while True:
                if queue.empty() and self._pending is not None:
                    self._handling = True
                    try:
                        async with self._lock:
                            await asyncio.shield(self._drain())
                    finally:
                        self._handling = False
                batch = await queue.get()
                if batch is None:
                    break
                self._handling = True
                try:
                    async with self._lock:
                        await asyncio.shield(self._step(batch))
                finally:
                    self._handling = False
                if stopping.is_set() or self._stop:
                    break
        finally:
            self._consuming = False
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reader
            aclose = getattr(stream, "aclose", None)
            if aclose is not None:
                with contextlib.suppress(Exception):
                    await aclose()
            async with self._lock:
                await self._drain()

    async def _housekeeping(self, stopping: asyncio.Event) -> None:
        interval = self.config.housekeeping_interval
        while not (stopping.is_set() or self._stop):
            try:
                await self.fire_due()
                if self._relay_needed:
                    await self.relay_pending()
                async with self._lock:
                    await self._flush_marks()
                nxt = await self.store.next_timer_due()
            except (StoreError, TransportError) as exc:
                if not exc.retryable:
                    raise
                log.warning("housekeeping failed; retrying", error=str(exc))
                nxt = None
            delay = interval
            if nxt is not None:
                delay = max(0.0, min(interval, nxt - self.clock.now()))
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stopping.wait(), timeout=delay)

    # -- the batch ------------------------------------------------------------

    async def handle(self, deliveries: Sequence[Delivery]) -> None:
        """Handle one batch of deliveries end to end (ack or nack each), unpipelined."""
        async with self._lock:
            await self._drain()
            await self._handle_serially(list(deliveries))

    async def _handle_serially(self, deliveries: list[Delivery]) -> None:
        self.stats.deliveries += len(deliveries)
        pending = deliveries
        for _ in range(self.config.conflict_retries):
            batch = self._parse(pending)
            reads = await self._read(batch.items)
            self._decide_batch(batch, reads, self.clock.now())
            pending = await self._complete(batch)
            if not pending:
                return
            self.stats.conflicts += len(pending)
            self._provisional.clear()
        await self.transport.nack(pending, delay=self.config.transient_retry_delay)

    async def _step(self, deliveries: list[Delivery]) -> None:
        """The pipelined path: decide this batch while the previous one commits.

        The store reads for this batch happen *before* the previous commit starts (one
        writer thread serves both); instances the previous batch decided but has not
        yet committed are read from ``_provisional``, its inbox marks from
        ``_inflight``. Commits stay in batch order, so an instance's transitions are
        persisted, published and acknowledged in arrival order. If the previous batch
        met a version conflict, this one is committed too and both are retried
        serially, in order."""
        self.stats.deliveries += len(deliveries)
        batch = self._parse(deliveries)
        reads = await self._read(batch.items)
        prev, self._pending = self._pending, None
        committing = asyncio.ensure_future(self._complete(prev)) if prev is not None else None
        if committing is not None:
            await asyncio.sleep(0)  # let the commit reach the store thread before we decide
        try:
            self._decide_batch(batch, reads, self.clock.now())
        finally:
            retry = await committing if committing is not None else []
        if retry:
            retry += await self._complete(batch)
            self.stats.conflicts += len(retry)
            self._provisional.clear()
            await self._handle_serially(retry)
            return
        self._pending = batch

    async def _drain(self) -> None:
        """Complete the batch the pipeline decided but has not committed yet."""
        batch, self._pending = self._pending, None
        if batch is not None:
            retry = await self._complete(batch)
            if retry:
                self.stats.conflicts += len(retry)
                self._provisional.clear()
                await self._handle_serially(retry)

    def _parse(self, deliveries: list[Delivery]) -> _Batch:
        self._serial += 1
        batch = _Batch(deliveries=deliveries, serial=self._serial)
        for d in deliveries:
            try:
                env = decode(d.body)
            except MessageError as exc:
                batch.dead.append((d, exc.reason))
                continue
            for r in self.router.route(env):
                if isinstance(r, Routed):
                    batch.items.append(_Item(r, delivery=d))
                else:
                    batch.dead.append((d, str(r)))
        return batch

    async def _complete(self, batch: _Batch) -> list[Delivery]:
        """Commit, publish, dead-letter, ack. Returns deliveries to retry (conflicts)."""
        try:
            retry = await self._commit(batch)
        except StoreError as exc:
            self._forget(batch)
            if not exc.retryable:
                raise
            log.warning("store unavailable; deliveries will be redelivered", error=str(exc))
            deliveries = batch.deliveries
            final = [d for d in deliveries if d.final_attempt]
            for d in final:  # the broker would drop it after this: keep it, with why
                await self.transport.dead_letter(
                    d, f"not handled after {d.delivery_count} deliveries: {exc}"
                )
            if final:
                await self.transport.ack(final)
            rest = [d for d in deliveries if not d.final_attempt]
            await self.transport.nack(rest, delay=self.config.transient_retry_delay)
            return []
        self._forget(batch)
        await self._finish(batch.deliveries, batch)
        return retry

    def _forget(self, batch: _Batch) -> None:
        """Drop this batch's provisional instances and in-flight marks (committed now,
        or failed: either way the store and the cache say what is true)."""
        if self._pending_parked is batch.parked_items:
            self._pending_parked = {}
        serial = batch.serial
        for unit, item, after in zip(batch.units, batch.owners, batch.afters, strict=True):
            if after is not None:
                entry = self._provisional.get(item.routed.key)
                if entry is not None and entry[0] == serial:
                    del self._provisional[item.routed.key]
            if unit.inbox is not None and self._inflight.get(unit.inbox) == serial:
                del self._inflight[unit.inbox]

    async def _decide_all(self, items: list[_Item], batch: _Batch, now: float) -> None:
        batch.items = items
        self._decide_batch(batch, await self._read(items), now)

    async def _read(self, items: list[_Item]) -> _Reads:
        """Everything the store must say before deciding: inbox marks, instances not
        held in memory, parked messages of these instances."""
        keys = list(dict.fromkeys(i.routed.key for i in items))
        marks = [(i.routed.saga.name, i.routed.envelope.id) for i in items if i.timer is None]
        seen = await self.store.seen(marks) if marks else set()
        missing = [k for k in keys if k not in self._cache and k not in self._provisional]
        records = await self.store.load(missing) if missing else {}
        parked_keys = [k for k in keys if k in self._parked_keys]
        parked = await self.store.parked(parked_keys) if parked_keys else []
        seen.update(self._inflight)  # decided by the pending batch, not yet committed
        provisional = {k: self._provisional[k][1] for k in keys if k in self._provisional}
        return _Reads(seen, records, parked, self._pending_parked, provisional)

    def _decide_batch(self, batch: _Batch, reads: _Reads, now: float) -> None:
        """Decide every item of the batch, per instance in arrival order. No I/O."""
        by_key: dict[InstanceKey, list[_Item]] = {}
        for item in batch.items:
            by_key.setdefault(item.routed.key, []).append(item)
        seen = reads.seen
        records = reads.records
        waiting: dict[InstanceKey, list[_Item]] = {}
        for p in reads.parked:
            revived = self._from_parked(p, batch)
            if revived is not None:
                waiting.setdefault(revived.routed.key, []).append(revived)
        prev = reads.pending_parked
        for key in by_key:
            if key in prev:
                waiting.setdefault(key, []).extend(prev[key])
        for key, key_items in by_key.items():
            saga = key_items[0].routed.saga
            current = reads.provisional.get(key) or self._cache.get(key)
            if current is None:
                record = records.get(key)
                current = instance_from_record(saga, record) if record is not None else None
            current = self._settle(current, waiting.get(key, []), batch, seen, now)
            held: list[_Item] = []
            for item in key_items:
                mark = (saga.name, item.routed.envelope.id)
                if item.timer is None and mark in seen:
                    self.stats.duplicates += 1
                    continue
                decision = decide(saga, current, item.routed, now)
                if decision.kind == "applied":
                    current = self._applied(item, current, decision, batch, now)
                    seen.add(mark)
                    current = self._settle(current, held, batch, seen, now)
                    current = self._settle(current, waiting.get(key, []), batch, seen, now)
                elif decision.kind == "park":
                    held.append(item)
                elif decision.kind == "reject":
                    self._reject(item, decision.reason, batch)
                elif item.timer is not None:
                    batch.add(
                        UnitOfWork(timers_cancelled=((saga.name, key[1], item.timer),)), item, None
                    )
            for item in held:
                assert item.delivery is not None
                reason = f"parked: {decide(saga, current, item.routed, now).reason}"
                unit = parked_unit(
                    item.routed,
                    item.delivery.body,
                    item.delivery.destination,
                    now,
                    reason,
                    saga.park_for,
                )
                batch.add(unit, item, None)
                batch.parked_items.setdefault(key, []).append(
                    _Item(item.routed, parked=unit.parked[0])
                )
        serial = batch.serial
        for unit, item, after in zip(batch.units, batch.owners, batch.afters, strict=True):
            if after is not None:
                self._provisional[item.routed.key] = (serial, after)
            if unit.inbox is not None:
                self._inflight[unit.inbox] = serial
        self._pending_parked = batch.parked_items

    def _settle(
        self,
        current: Instance | None,
        waiting: list[_Item],
        batch: _Batch,
        seen: set[tuple[str, str]],
        now: float,
    ) -> Instance | None:
        """Apply waiting (parked) items that the instance can now take, until none can."""
        progress = True
        while progress and waiting and current is not None:
            progress = False
            for item in list(waiting):
                saga = item.routed.saga
                mark = (saga.name, item.routed.envelope.id)
                if mark in seen:
                    waiting.remove(item)
                    if item.parked is not None:
                        batch.add(UnitOfWork(unparked=(mark,)), item, None)
                    continue
                decision = decide(saga, current, item.routed, now)
                if decision.kind == "park":
                    continue
                waiting.remove(item)
                progress = True
                if decision.kind == "applied":
                    current = self._applied(item, current, decision, batch, now)
                    seen.add(mark)
                else:
                    self._reject(item, decision.reason, batch)
                    if item.parked is not None:
                        batch.add(UnitOfWork(unparked=(mark,)), item, None)
        return current

    def _applied(
        self, item: _Item, before: Instance | None, decision: Decision, batch: _Batch, now: float
    ) -> Instance:
        unit = unit_for(item.routed, before, decision, now, fired_timer=item.timer)
        if item.parked is not None:
            unit.unparked = ((item.parked.saga, item.parked.message_id),)
        after = decision.instance
        assert after is not None
        assert unit.instance is not None
        versioned = Instance(
            after.saga,
            after.correlation_id,
            after.state,
            after.status,
            unit.instance.version,
            after.data,
            after.meta,
            after.created_at,
            after.updated_at,
        )
        batch.add(unit, item, decision, versioned)
        return versioned

    def _reject(self, item: _Item, reason: str, batch: _Batch) -> None:
        if item.timer is not None:
            saga, cid = item.routed.key
            batch.add(UnitOfWork(timers_cancelled=((saga, cid, item.timer),)), item, None)
            return
        d = item.delivery
        if d is None and item.parked is not None:
            d = Delivery(destination=item.parked.destination, body=item.parked.body, headers={})
        if d is not None:
            batch.dead.append((d, reason))

    def _from_parked(self, p: ParkedRecord, batch: _Batch) -> _Item | None:
        saga = self.router.sagas.get(p.saga)
        if saga is None:
            return None
        try:
            env = decode(p.body)
        except MessageError:
            return None
        for r in self.router.route(env):
            if isinstance(r, Routed) and r.saga.name == p.saga:
                return _Item(r, parked=p)
        return None

    async def _commit(self, batch: _Batch) -> list[Delivery]:
        if not batch.units:
            return []
        try:
            outcomes = await self.store.commit(batch.units, published=self._published)
        except BaseException:
            self._cache.clear()  # the outcome is unknown: trust only the store
            raise
        self._published = []
        debug = log.bind().is_enabled_for(logging.DEBUG)  # once per batch, not per line
        retry: dict[int, Delivery] = {}
        conflicted_keys: set[InstanceKey] = set()
        committed: list[OutgoingMessage] = []
        for unit, item, decision, after, outcome in zip(
            batch.units, batch.owners, batch.decisions, batch.afters, outcomes, strict=True
        ):
            if after is not None:
                self._remember(after if outcome is Outcome.COMMITTED else None, item.routed.key)
            if outcome is Outcome.COMMITTED:
                if unit.parked:
                    self.stats.parked += 1
                    self._parked_keys.add(item.routed.key)
                if decision is not None and decision.instance is not None:
                    self.stats.transitions += 1
                    committed.extend(outgoing(o) for o in unit.outbox)
                    if debug:
                        log.debug(
                            "transition",
                            saga=item.routed.saga.name,
                            correlation_id=item.routed.correlation_id,
                            message_id=item.routed.envelope.id,
                            message_type=item.routed.envelope.type,
                            from_state=decision.from_state,
                            state=decision.instance.state,
                            status=decision.instance.status.value,
                            sent=[m.type for m in decision.messages],
                        )
                    if decision.instance.status.final:
                        log.info(
                            "saga finished",
                            saga=item.routed.saga.name,
                            correlation_id=item.routed.correlation_id,
                            state=decision.instance.state,
                            status=decision.instance.status.value,
                            failure=decision.instance.meta.failure,
                        )
                    for observe in self.observers:
                        observe(decision.instance, decision)
            elif outcome is Outcome.DUPLICATE:
                self.stats.duplicates += 1
            else:
                conflicted_keys.add(item.routed.key)
                if item.delivery is not None:
                    retry[id(item.delivery)] = item.delivery
                    batch.failed.add(id(item.delivery))
        if committed:
            try:
                await self.transport.publish(committed)
                self._published.extend(m.message_id for m in committed)
            except TransportError as exc:
                self._relay_needed = True
                log.warning("publish failed; the outbox relay will retry", error=str(exc))
        return list(retry.values())

    def _remember(self, instance: Instance | None, key: InstanceKey) -> None:
        """Keep running instances this engine committed, so the next message for them
        needs no store read; finished ones leave memory. A stale entry (another
        sidecar moved the instance) is caught by the version check at commit."""
        cache = self._cache
        cache.pop(key, None)
        if instance is None or instance.status.final or self.config.cache_size <= 0:
            return
        cache[key] = instance
        if len(cache) > self.config.cache_size:
            del cache[next(iter(cache))]

    async def _finish(self, deliveries: Sequence[Delivery], batch: _Batch) -> None:
        for d, reason in batch.dead:
            try:
                await self.transport.dead_letter(d, reason)
                self.stats.dead_letters += 1
                log.warning(
                    "dead-lettered",
                    reason=reason,
                    destination=d.destination,
                    message_id=d.headers.get(HEADER_MESSAGE_ID, ""),
                )
            except TransportError as exc:
                batch.failed.add(id(d))
                log.warning("dead-letter failed; will be redelivered", error=str(exc))
                with contextlib.suppress(TransportError):
                    await self.transport.nack([d], delay=self.config.transient_retry_delay)
        done = [d for d in deliveries if id(d) not in batch.failed]
        if done:
            await self.transport.ack(done)

    # -- timers, parking, relay ---------------------------------------------

    async def fire_due(self) -> int:
        """Fire due timers and expire parked messages. Returns timers fired."""
        async with self._lock:
            await self._drain()
            now = self.clock.now()
            timers = await self.store.due_timers(now, limit=self.config.max_batch)
            if timers:
                batch = _Batch()
                items = [i for i in (self._timer_item(t) for t in timers) if i is not None]
                stale = [t for t in timers if t.saga not in self.router.sagas]
                await self._decide_all(items, batch, now)
                if stale:
                    for t in stale:
                        log.warning(
                            "timer of an unloaded saga dropped",
                            saga=t.saga,
                            correlation_id=t.correlation_id,
                            timer=t.name,
                        )
                    await self.store.commit(
                        [UnitOfWork(timers_cancelled=tuple(t.key for t in stale))]
                    )
                await self._complete(batch)
                self.stats.timers_fired += len(items)
            await self._expire_parked(now)
            return len(timers)

    def _timer_item(self, t: TimerRecord) -> _Item | None:
        saga = self.router.sagas.get(t.saga)
        if saga is None:
            return None
        env = Envelope.new(
            timer_event(t.name),
            {},
            id=f"timer:{t.saga}:{t.correlation_id}:{t.name}:{t.due!r}",
            source="sagawire/timer",
            correlationid=t.correlation_id,
        )
        return _Item(Routed(saga, None, env, t.correlation_id, {}), timer=t.name)

    async def _expire_parked(self, now: float) -> None:
        expired = await self.store.expired_parked(now, limit=self.config.max_batch)
        if not expired:
            return
        for p in expired:
            d = Delivery(destination=p.destination, body=p.body, headers={})
            await self.transport.dead_letter(
                d,
                f"saga {p.saga!r}: {p.reason or 'parked'}; still not applicable after"
                f" {p.expires - p.parked_at:g}s, instance {p.correlation_id!r}",
            )
            self.stats.dead_letters += 1
        await self.store.commit(
            [UnitOfWork(unparked=tuple((p.saga, p.message_id) for p in expired))]
        )
        self._parked_keys = await self.store.parked_keys()

    async def relay_pending(self) -> int:
        """Publish outbox rows left unpublished (a crash, a broker outage), ids intact."""
        async with self._lock:
            await self._drain()
            total = 0
            while True:
                rows = await self.store.pending_outbox(limit=1000)
                rows = [r for r in rows if r.id not in set(self._published)]
                if not rows:
                    break
                await self.transport.publish([outgoing(r) for r in rows])
                await self.store.mark_published([r.id for r in rows])
                total += len(rows)
            self._relay_needed = False
            return total

    async def _flush_marks(self) -> None:
        if self._published:
            await self.store.mark_published(self._published)
            self._published = []

    # -- admin ---------------------------------------------------------------

    async def abort(self, saga: str, correlation_id: str, reason: str = "") -> Instance | None:
        """Stop a running instance where it is: status ``aborted``, timers cancelled, no
        compensation. Returns the instance (unchanged if it had already finished)."""
        definition = self.router.sagas[saga]
        env = Envelope.new(
            ABORT_EVENT,
            {"reason": reason} if reason else {},
            id=f"abort:{uuid.uuid4()}",
            source="sagawire/admin",
            correlationid=correlation_id,
        )
        routed = Routed(definition, None, env, correlation_id, env.data)
        if await self.instance(saga, correlation_id) is None:
            return None
        async with self._lock:
            await self._drain()
            batch = _Batch()
            await self._decide_all([_Item(routed)], batch, self.clock.now())
            await self._complete(batch)
        return await self.instance(saga, correlation_id)

    async def instance(self, saga: str, correlation_id: str) -> Instance | None:
        records = await self.store.load([(saga, correlation_id)])
        record = records.get((saga, correlation_id))
        return None if record is None else instance_from_record(self.router.sagas[saga], record)
