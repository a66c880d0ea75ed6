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


@dataclass(eq=False)
class _Batch:
    """What one pass over a batch produced, before and after commit."""

    units: list[UnitOfWork] = field(default_factory=list)
    owners: list[_Item] = field(default_factory=list)
    decisions: list[Decision | None] = field(default_factory=list)
    dead: list[tuple[Delivery, str]] = field(default_factory=list)
    failed: set[int] = field(default_factory=set)  # id(delivery) not to ack

    def add(self, unit: UnitOfWork, item: _Item, decision: Decision | None) -> None:
        self.units.append(unit)
        self.owners.append(item)
        self.decisions.append(decision)


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
        stream = self.transport.consume(self.topology, max_batch=self.config.max_batch)
        self._consuming = True
        self.ready_reason = ""
        try:
            async for batch in stream:
                self._handling = True
                try:
                    await asyncio.shield(self.handle(batch))
                finally:
                    self._handling = False
                if stopping.is_set() or self._stop:
                    break
        finally:
            self._consuming = False
            aclose = getattr(stream, "aclose", None)
            if aclose is not None:
                with contextlib.suppress(Exception):
                    await aclose()

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
        """Handle one batch of deliveries end to end (ack or nack each)."""
        async with self._lock:
            self.stats.deliveries += len(deliveries)
            pending = list(deliveries)
            for _ in range(self.config.conflict_retries):
                pending = await self._attempt(pending)
                if not pending:
                    return
                self.stats.conflicts += len(pending)
            await self.transport.nack(pending, delay=self.config.transient_retry_delay)

    async def _attempt(self, deliveries: Sequence[Delivery]) -> list[Delivery]:
        """One pass; returns the deliveries to try again (version conflicts)."""
        now = self.clock.now()
        batch = _Batch()
        items: list[_Item] = []
        for d in deliveries:
            try:
                env = decode(d.body)
            except MessageError as exc:
                batch.dead.append((d, exc.reason))
                continue
            for r in self.router.route(env):
                if isinstance(r, Routed):
                    items.append(_Item(r, delivery=d))
                else:
                    batch.dead.append((d, str(r)))
        try:
            await self._decide_all(items, batch, now)
            retry = await self._commit(batch)
        except StoreError as exc:
            if not exc.retryable:
                raise
            log.warning("store unavailable; deliveries will be redelivered", error=str(exc))
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
        await self._finish(deliveries, batch)
        return retry

    async def _decide_all(self, items: list[_Item], batch: _Batch, now: float) -> None:
        by_key: dict[InstanceKey, list[_Item]] = {}
        for item in items:
            by_key.setdefault(item.routed.key, []).append(item)
        marks = [(i.routed.saga.name, i.routed.envelope.id) for i in items if i.timer is None]
        seen = await self.store.seen(marks) if marks else set()
        records = await self.store.load(list(by_key))
        parked_keys = [k for k in by_key if k in self._parked_keys]
        waiting: dict[InstanceKey, list[_Item]] = {}
        if parked_keys:
            for p in await self.store.parked(parked_keys):
                revived = self._from_parked(p, batch)
                if revived is not None:
                    waiting.setdefault(revived.routed.key, []).append(revived)
        for key, key_items in by_key.items():
            saga = key_items[0].routed.saga
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
                batch.add(
                    parked_unit(
                        item.routed,
                        item.delivery.body,
                        item.delivery.destination,
                        now,
                        reason,
                        saga.park_for,
                    ),
                    item,
                    None,
                )

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
        batch.add(unit, item, decision)
        after = decision.instance
        assert after is not None
        assert unit.instance is not None
        return Instance(
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
        outcomes = await self.store.commit(batch.units, published=self._published)
        self._published = []
        retry: dict[int, Delivery] = {}
        conflicted_keys: set[InstanceKey] = set()
        committed: list[OutgoingMessage] = []
        for unit, item, decision, outcome in zip(
            batch.units, batch.owners, batch.decisions, outcomes, strict=True
        ):
            if outcome is Outcome.COMMITTED:
                if unit.parked:
                    self.stats.parked += 1
                    self._parked_keys.add(item.routed.key)
                if decision is not None and decision.instance is not None:
                    self.stats.transitions += 1
                    committed.extend(outgoing(o) for o in unit.outbox)
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
            now = self.clock.now()
            timers = await self.store.due_timers(now, limit=self.config.max_batch)
            if timers:
                batch = _Batch()
                items = [i for i in (self._timer_item(t) for t in timers) if i is not None]
                stale = [t for t in timers if t.saga not in self.router.sagas]
                await self._decide_all(items, batch, now)
                for t in stale:
                    log.warning("timer of an unloaded saga dropped", saga=t.saga, timer=t.name)
                await self._commit(batch)
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
            batch = _Batch()
            await self._decide_all([_Item(routed)], batch, self.clock.now())
            await self._commit(batch)
        return await self.instance(saga, correlation_id)

    async def instance(self, saga: str, correlation_id: str) -> Instance | None:
        records = await self.store.load([(saga, correlation_id)])
        record = records.get((saga, correlation_id))
        return None if record is None else instance_from_record(self.router.sagas[saga], record)
