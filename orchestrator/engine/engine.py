"""The engine: runs loaded sagas against a store and a transport.

The data flow of one batch, one module per step, each a layer of :class:`Engine`:

    deliveries -> decode + route + correlate ........... pipeline.py (_parse)
    -> inbox check + load, then decide per instance .... deciding.py (pure decide.py inside)
    -> one commit for the whole batch: state, inbox,
       history, outbox, timers; publish; dead-letter;
       ack ............................................. committing.py
    timers, parked expiry, outbox relay ................ housekeeping.py
    shared state and the batch record .................. batch.py

One instance's messages are applied in the order they arrived; the instances in a
batch proceed together (the bound is the batch size) and share one commit, and the
next batch is decided while this one commits. Nothing is acknowledged before the
commit that records what it caused; a crash anywhere means redelivery, and
redelivery is a no-op thanks to the inbox.

This module holds the lifecycle: start-up recovery, the consume and housekeeping
loops, orderly stop, and the admin operations.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Sequence

from adapters.base import Delivery, Topology, Transport, close_stream
from orchestrator.engine.batch import Batch, EngineConfig, Item, Observer, Stats, log
from orchestrator.engine.clock import Clock, SystemClock
from orchestrator.engine.correlate import Routed, Router
from orchestrator.engine.decide import ABORT_EVENT
from orchestrator.engine.housekeeping import Housekeeping
from orchestrator.engine.model import Instance
from orchestrator.engine.outage import StoreHealth
from orchestrator.engine.persist import instance_from_record
from orchestrator.engine.relay import Relay
from orchestrator.language.definition import SagaDefinition
from orchestrator.store.base import (
    InstanceKey,
    Store,
)
from schemas.envelope import Envelope
from schemas.errors import StoreError, TransportError

__all__ = ["Engine", "EngineConfig", "Observer"]


class Engine(Housekeeping):
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
        self.stats = Stats()
        self.observers: list[Observer] = []
        self._lock = asyncio.Lock()
        self._health = StoreHealth(
            store, first=self.config.retry_backoff_first, cap=self.config.retry_backoff_max
        )
        self.relay = Relay(
            store,
            transport,
            self._lock,
            lambda: self._published,
            self.clock,
            self._health,
            batch=1000,
        )
        self._parked_keys: set[InstanceKey] = set()
        self._moved: set[InstanceKey] = set()  # instances written since the last revive
        self._to_revive: set[InstanceKey] = set()  # parked-for instances to try (housekeeping)
        self._cache: dict[InstanceKey, Instance] = {}  # insertion-ordered: oldest first
        self._pending: Batch | None = None  # decided by the pipeline, not yet committed
        self._provisional: dict[InstanceKey, tuple[int, Instance]] = {}
        self._inflight: dict[tuple[str, str], int] = {}
        self._pending_parked: dict[InstanceKey, list[Item]] = {}
        self._serial = 0
        self._published: list[str] = []
        self._consuming = False
        self._handling = False
        self._stop = False
        self.ready_reason = "not started"

    # -- lifecycle ------------------------------------------------------------

    async def prepare(self) -> None:
        """Declare the topology, learn what is parked, republish a crash's leftovers."""
        await self.transport.declare(self.topology)
        self._parked_keys = await self.store.parked_keys()
        # what was parked before a restart is tried once against the stored instances:
        # the instance may have moved on (here or on another replica) since
        self._to_revive = set(self._parked_keys)
        await self.relay_pending()

    async def run(self, stopping: asyncio.Event) -> None:
        """Consume and fire timers until ``stopping`` is set; then drain and return.

        If the consumer, the housekeeping loop or the relay dies first (a
        non-retryable store error, a transport that gave up), the others are stopped
        the same orderly way and the error is raised, so the process can exit non-zero
        and be restarted."""
        self._stop = False
        self._health.stopping.clear()
        relay_stop = asyncio.Event()
        consumer = asyncio.ensure_future(self._consume(stopping))
        housekeeping = asyncio.ensure_future(self._housekeeping(stopping))
        relay = asyncio.ensure_future(self.relay.run(relay_stop, self.config.housekeeping_interval))
        stop_wait = asyncio.ensure_future(stopping.wait())
        try:
            await asyncio.wait(
                {consumer, housekeeping, relay, stop_wait}, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            self._stop = True
            self._consuming = False
            self.ready_reason = "stopping"
            self._health.stopping.set()  # a wait for the store gives up
            relay_stop.set()
            stop_wait.cancel()
            if not self._handling:
                consumer.cancel()  # idle in consume(): nothing in flight to finish
            housekeeping.cancel()
            for task in (consumer, housekeeping, relay):
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            with contextlib.suppress(StoreError):
                async with self._lock:
                    await self._flush_marks()
        for task in (consumer, housekeeping, relay):
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
        rather than hold it (its commands may be what the participants wait for).

        A reader task pulls from the transport one batch ahead. It never blocks in a
        ``finally`` (a full queue there once hung SIGTERM under load): the loop
        watches the reader itself to learn that the stream ended or failed."""
        stream = self.transport.consume(self.topology, max_batch=self.config.max_batch)
        queue: asyncio.Queue[list[Delivery]] = asyncio.Queue(maxsize=4)
        unhandled: list[Delivery] = []  # read or taken, then stopped before handling

        async def read() -> None:
            async for batch in stream:
                try:
                    await queue.put(batch)
                except asyncio.CancelledError:  # stopped with the queue full: not lost
                    unhandled.extend(batch)
                    raise

        reader = asyncio.ensure_future(read())

        async def next_batch() -> list[Delivery] | None:
            if not queue.empty():
                return queue.get_nowait()
            getter = asyncio.ensure_future(queue.get())
            try:
                await asyncio.wait({getter, reader}, return_when=asyncio.FIRST_COMPLETED)
            except BaseException:
                if getter.done() and not getter.cancelled():
                    unhandled.extend(getter.result())
                getter.cancel()  # no pending getter left behind to be destroyed
                raise
            if getter.done():
                return getter.result()
            getter.cancel()
            return queue.get_nowait() if not queue.empty() else None

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
                batch = await next_batch()
                if batch is None:
                    break
                # Brokers hand out what they have; merging what queued up while the last
                # batch was handled makes fewer, larger commits (a commit's fixed cost is
                # most of it when batches are small).
                while not queue.empty() and len(batch) < self.config.max_batch:
                    batch = batch + queue.get_nowait()
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
            while not queue.empty():  # read ahead but not handled: give it back now
                unhandled.extend(queue.get_nowait())
            if unhandled:
                with contextlib.suppress(Exception):
                    await self.transport.nack(unhandled)
            with contextlib.suppress(Exception):
                await close_stream(stream)
            async with self._lock:
                await self._drain()
        if reader.done() and not reader.cancelled() and reader.exception() is not None:
            raise reader.exception()  # type: ignore[misc]

    async def _housekeeping(self, stopping: asyncio.Event) -> None:
        interval = self.config.housekeeping_interval
        next_prune = self.clock.now()
        while not (stopping.is_set() or self._stop):
            try:
                await self.fire_due()
                if self.clock.now() >= next_prune:
                    await self.prune()
                    next_prune = self.clock.now() + self.config.prune_interval
                async with self._lock:
                    await self._flush_marks()
                nxt = await self.store.next_timer_due()
                self._health.answered()
            except StoreError as exc:
                if not exc.retryable:
                    raise
                self._health.failed(exc)  # logged once per outage, by the health
                nxt = None
            except TransportError as exc:
                if not exc.retryable:
                    raise
                log.warning("housekeeping failed; retrying", error=str(exc))
                nxt = None
            delay = interval
            if nxt is not None:
                delay = max(0.0, min(interval, nxt - self.clock.now()))
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stopping.wait(), timeout=delay)

    @property
    def store_health(self) -> StoreHealth:
        """Whether the store answers (``/readyz``, ``POST /events``)."""
        return self._health

    async def relay_pending(self) -> int:
        """Publish outbox rows left unpublished (a crash, a broker outage), ids intact."""
        return await self.relay.relay()

    # -- admin ---------------------------------------------------------------

    async def prune(self) -> int:
        """Forget inbox marks older than ``config.inbox_retention`` (they only have to
        outlive the broker's redelivery window); runs hourly from housekeeping."""
        n = await self.store.prune(inbox_before=self.clock.now() - self.config.inbox_retention)
        if n:
            log.info("pruned inbox", marks=n, retention_s=self.config.inbox_retention)
        return n

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
        inst = await self.instance(saga, correlation_id)
        for _ in range(self.config.conflict_retries):
            if inst is None or inst.status.final:
                break
            async with self._lock:
                await self._drain()
                self._cache.pop(routed.key, None)  # decide on the stored state, not a copy
                batch = Batch()
                await self._decide_all([Item(routed)], batch, self.clock.now())
                await self._complete(batch, wait=False)
            # still running: another replica moved it first (a conflict); try again
            inst = await self.instance(saga, correlation_id)
        return inst

    async def instance(self, saga: str, correlation_id: str) -> Instance | None:
        records = await self.store.load([(saga, correlation_id)])
        record = records.get((saga, correlation_id))
        return None if record is None else instance_from_record(self.router.sagas[saga], record)
