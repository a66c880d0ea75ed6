"""The engine's lifecycle: it builds its stages, runs them, stops them, and answers the
operator.

:class:`Engine` holds one object per stage, each with its inputs in its constructor
(the package docstring draws the flow between them), and runs three loops: the
consumer (deliveries through the pipeline), housekeeping (timers, parked messages)
and the outbox relay. A non-retryable error in any of them stops the others the
same orderly way and is raised, so the process exits non-zero and is restarted.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from typing import Any

import structlog

from adapters.base import Delivery, Topology, Transport
from orchestrator.engine.clock import Clock, SystemClock
from orchestrator.engine.committing import Committer
from orchestrator.engine.config import EngineConfig, Observer, Stats
from orchestrator.engine.consuming import Consumer
from orchestrator.engine.correlate import Router
from orchestrator.engine.deadletters import DeadLetterKeeper
from orchestrator.engine.deciding import Decider
from orchestrator.engine.housekeeping import Housekeeper
from orchestrator.engine.intake import Intake
from orchestrator.engine.model import Instance
from orchestrator.engine.operator import Operator
from orchestrator.engine.outage import StoreHealth
from orchestrator.engine.ownership import Ownership, default_replica
from orchestrator.engine.peers import Peers
from orchestrator.engine.persist import instance_from_record
from orchestrator.engine.pipeline import Pipeline
from orchestrator.engine.reading import Reader
from orchestrator.engine.relay import Relay
from orchestrator.engine.settlewatch import SettleWatch
from orchestrator.engine.working import WorkingSet
from orchestrator.language.definition import SagaDefinition
from orchestrator.store.base import Store
from schemas.errors import DeclarationError, StoreError, TransportError

__all__ = ["Engine"]

log = structlog.get_logger("sagawire.engine")


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
        self.clock = clock = clock or SystemClock()
        self.config = config = config or EngineConfig()
        partitioned = config.partitions > 0 and getattr(transport, "partitionable", False)
        if config.partitions > 0 and not partitioned:
            log.info(
                "partitioned mode not used: this broker keeps an instance on one consumer"
                " itself (Kafka's record key) or there is one process (memory)",
                partitions=config.partitions,
            )
        watch = SettleWatch(transport) if partitioned else None
        if watch is not None:
            transport = watch  # counts what each unit has unsettled, for hand-overs
        self.transport = transport
        self.topology = Topology(
            consumes=self.router.consumes(), produces=self.router.produces(), group=config.group
        )
        self.stats = stats = Stats()
        self.observers: list[Observer] = []
        self.lock = lock = asyncio.Lock()
        """One batch, timer pass or admin action at a time (the relay reads under it)."""
        self.working = working = WorkingSet(config.cache_size)
        self.health = health = StoreHealth(
            store, first=config.retry_backoff_first, cap=config.retry_backoff_max
        )
        self.relay = Relay(store, transport, lock, lambda: working.published, clock, health)
        self.intake = intake = Intake(self.router, config.limits)
        self.reader = reader = Reader(store, working, intake)
        self.decider = decider = Decider(working, stats, binary=config.binary)
        self.committer = committer = Committer(
            store, transport, working, self.relay, health, stats, self.observers, config,
            DeadLetterKeeper(store, self.router.sagas, clock),
        )  # fmt: skip
        self.pipeline = pipeline = Pipeline(
            intake, reader, decider, committer, working, health, transport, lock, clock, stats,
            config,
        )  # fmt: skip
        self.housekeeper = Housekeeper(
            store, intake, reader, decider, pipeline, committer, working, lock, clock, stats,
            config,
        )  # fmt: skip
        self.ownership = (
            Ownership(
                watch, store, self.topology, intake, working,
                partitions=config.partitions, replica=config.replica or default_replica(),
                ttl=config.lease_ttl, max_batch=config.max_batch,
            )
            if watch is not None
            else None
        )  # fmt: skip
        """Partitioned mode's units and leases (None: replicas compete for messages)."""
        if self.ownership is not None:
            self.housekeeper.owns = self.ownership.owns
        self.peers: Peers | None = None
        """Where replicas compete on a broker that carries events by type: who else is
        there, so the cache is off while anyone is (:mod:`orchestrator.engine.peers`)."""
        if self.ownership is None and getattr(transport, "partitionable", False):
            self._compete()
        self.consumer = Consumer(
            transport, self.topology, pipeline, config.max_batch,
            source=self.ownership.stream if self.ownership is not None else None,
        )  # fmt: skip
        self.operator = Operator(
            self.router, store, pipeline, working, lock, config, self.relay, clock
        )
        self.ready_reason = "not started"
        self._stop = False

    # -- lifecycle ------------------------------------------------------------

    async def prepare(self) -> None:
        """Declare the topology, learn what is parked, republish a crash's leftovers."""
        await self._declare()
        # what was parked before a restart is tried once against the stored instances:
        # the instance may have moved on (here or on another replica) since
        self.working.restart(await self.store.parked_keys())
        await self.relay_pending()

    def _compete(self) -> None:
        config = self.config
        replica = config.replica or default_replica()
        self.peers = Peers(self.store, config.group, replica, config.lease_ttl, self.working)

    async def _declare(self) -> None:
        """The group's consumer, or in partitioned mode every unit's; a broker that
        cannot carry partitioned mode (RabbitMQ older than 3.8 has no single active
        consumer) falls back to competing consumers, with a warning."""
        if self.ownership is None:
            await self.transport.declare(self.topology)
            return
        try:
            await self.ownership.declare()
        except DeclarationError as exc:
            log.warning(
                "partitioned mode unavailable on this broker; replicas compete for"
                " messages instead (expect version conflicts with several replicas)",
                error=str(exc),
            )
            self.ownership = None
            self.housekeeper.owns = None
            self.consumer.source = lambda: self.transport.consume(
                self.topology, max_batch=self.config.max_batch
            )
            self._compete()
            await self.transport.declare(self.topology)

    async def run(self, stopping: asyncio.Event) -> None:
        """Consume, fire timers and relay until ``stopping`` is set; then drain and return.

        If one of the three loops dies first (a non-retryable store error, a transport
        that gave up), the others are stopped the same orderly way and the error is
        raised, so the process can exit non-zero and be restarted."""
        self._stop = False
        self.health.stopping.clear()
        relay_stop = asyncio.Event()
        self.ready_reason = ""
        consumer = asyncio.ensure_future(self.consumer.run(stopping, lambda: self._stop))
        housekeeping = asyncio.ensure_future(self._housekeeping(stopping))
        relay = asyncio.ensure_future(self.relay.run(relay_stop, self.config.housekeeping_interval))
        stop_wait = asyncio.ensure_future(stopping.wait())
        loops: tuple[asyncio.Future[Any], ...] = (consumer, housekeeping, relay)
        if self.ownership is not None:
            loops += (asyncio.ensure_future(self.ownership.run(relay_stop)),)
        if self.peers is not None:
            loops += (asyncio.ensure_future(self.peers.run(relay_stop)),)
        try:
            await asyncio.wait({*loops, stop_wait}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            self._stop = True
            self.ready_reason = "stopping"
            self.health.stopping.set()  # a wait for the store gives up
            relay_stop.set()
            stop_wait.cancel()
            if not self.consumer.handling:
                consumer.cancel()  # idle in consume(): nothing in flight to finish
            housekeeping.cancel()
            for task in loops:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            with contextlib.suppress(StoreError):
                async with self.lock:
                    await self.committer.flush_marks()
        for task in loops:
            if task.done() and not task.cancelled() and task.exception() is not None:
                self.ready_reason = f"engine stopped: {task.exception()}"
                raise task.exception()  # type: ignore[misc]
        if consumer.done() and not stopping.is_set() and not consumer.cancelled():
            self.ready_reason = "the transport stopped delivering"
            raise TransportError("the transport's consumer ended unexpectedly")

    @property
    def consuming(self) -> bool:
        return self.consumer.consuming

    def ownership_status(self) -> dict[str, Any] | None:
        """Which units (partitions, forwarded types) this replica reads now, and who else
        is there, for ``/readyz`` and the metrics; on Kafka the partitions assigned to
        this consumer. None where there is nothing to divide (competing consumers,
        the memory broker)."""
        if self.ownership is not None:
            return {"mode": "partitioned", **self.ownership.status()}
        if self.peers is not None:
            return {"mode": "competing", **self.peers.status()}
        owned = getattr(self.transport, "owned", None)
        if callable(owned):
            return {"mode": "kafka", "owns": list(owned())}
        return None

    @property
    def store_health(self) -> StoreHealth:
        """Whether the store answers (``/readyz``, ``POST /events``)."""
        return self.health

    def _caught_up(self, since: float, ready_at: list[float]) -> bool:
        """Whether timers may fire (see ``EngineConfig.catch_up``): the consumer's broker
        has been ready ``catch_up`` seconds and nothing has been left to read since (or
        ``catch_up_limit`` has passed). ``ready_at`` holds when readiness was first seen."""
        config = self.config
        if config.catch_up <= 0:
            return True
        now = asyncio.get_running_loop().time()
        if now - since >= config.catch_up_limit:
            return True
        if not (self.consumer.consuming and self.transport.readiness.ready):
            return False
        if not ready_at:
            ready_at.append(now)
        settled = ready_at[0] + config.catch_up
        consumer = self.consumer
        return now >= settled and (consumer.idle or consumer.idle_at >= settled)

    async def _housekeeping(self, stopping: asyncio.Event) -> None:
        interval = self.config.housekeeping_interval
        next_prune = self.clock.now()
        since = asyncio.get_running_loop().time()
        ready_at: list[float] = []
        caught_up = False
        while not (stopping.is_set() or self._stop):
            try:
                caught_up = caught_up or self._caught_up(since, ready_at)
                if caught_up:
                    await self.fire_due()
                if self.clock.now() >= next_prune:
                    await self.prune()
                    next_prune = self.clock.now() + self.config.prune_interval
                async with self.lock:
                    await self.committer.flush_marks()
                nxt = await self.store.next_timer_due()
                self.health.answered()
            except StoreError as exc:
                if not exc.retryable:
                    raise
                self.health.failed(exc)  # logged once per outage, by the health
                nxt = None
            except TransportError as exc:
                if not exc.retryable:
                    raise
                log.warning("housekeeping failed; retrying", error=str(exc))
                nxt = None
            delay = interval
            if nxt is not None and not self.housekeeper.skipped:
                # (due timers of partitions another replica reads: not ours to wait on)
                delay = max(0.0, min(interval, nxt - self.clock.now()))
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stopping.wait(), timeout=delay)

    # -- what the stages do, for callers that drive the engine themselves ------------

    async def handle(self, deliveries: Sequence[Delivery]) -> None:
        """Handle one batch of deliveries end to end (the harness, tests)."""
        await self.pipeline.handle(deliveries)

    async def fire_due(self) -> int:
        """One housekeeping pass: fire due timers, expire and revive parked messages."""
        return await self.housekeeper.fire_due()

    async def relay_pending(self) -> int:
        """Publish outbox rows left unpublished (a crash, a broker outage), ids intact."""
        return await self.relay.relay()

    # -- admin ---------------------------------------------------------------

    async def prune(self) -> int:
        """Forget inbox marks older than ``config.inbox_retention`` (they only have to
        outlive the broker's redelivery window); runs hourly from housekeeping."""
        now = self.clock.now()
        n = await self.store.prune(inbox_before=now - self.config.inbox_retention)
        if n:
            log.info("pruned inbox", marks=n, retention_s=self.config.inbox_retention)
        kept = self.config.deadletter_retention
        gone = await self.store.prune_dead_letters(now - kept)
        if gone:
            log.info("pruned dead letters", dead_letters=gone, retention_s=kept)
        return n + gone

    async def abort(self, saga: str, correlation_id: str, reason: str = "") -> Instance | None:
        """Stop a running instance where it is: status ``aborted``, timers cancelled, no
        compensation. Returns the instance (unchanged if it had already finished).
        Every other action, and abort with compensation: :attr:`operator`."""
        return await self.operator.stop(saga, correlation_id, reason)

    async def instance(self, saga: str, correlation_id: str) -> Instance | None:
        records = await self.store.load([(saga, correlation_id)])
        record = records.get((saga, correlation_id))
        return None if record is None else instance_from_record(self.router.sagas[saga], record)
