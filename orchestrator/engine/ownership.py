"""Partitioned mode at run time: this replica's units, taken and given up by lease.

Every ``ttl / 3`` (more often while the replicas are rebalancing) a lease round in the
store (:meth:`~orchestrator.store.base.Store.lease_round`) renews this replica's
heartbeat and leases, releases what it settled giving up, claims what
:func:`~orchestrator.engine.partitioning.balance` said to take, and returns who holds
what. Then:

* a unit this replica now holds gets a pump: a partition unit's batches go to the
  engine's pipeline through :meth:`Ownership.stream` (with their type given back),
  a source unit's to the :class:`~orchestrator.engine.forwarding.Forwarder`; the
  instances of a partition taken over are dropped from the cache, since another
  replica moved them meanwhile;
* a unit to give up (a replica joined) has its pump stopped, what was read of it
  settled (:class:`~orchestrator.engine.settlewatch.SettleWatch`), then its lease
  released in the next round, so its next owner starts after this one's last
  acknowledgement: one reader at a time, order kept across the hand-over;
* a unit whose lease went to another replica (this one could not renew it for a
  ``ttl``: its store was unreachable) is dropped at once: the other reads it now.

A replica killed with -9 stops renewing: its leases lapse after ``ttl`` and the others
claim its units in their next round; the broker gives them what the dead one held
unacknowledged (RabbitMQ at once, JetStream after ``ack_wait``). A clean stop leaves
the group (:meth:`~orchestrator.store.base.Store.leave`), so the others take over in
their next round.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import structlog

from adapters.base import Delivery, Topology, close_stream
from orchestrator.engine.forwarding import Forwarder
from orchestrator.engine.intake import Intake
from orchestrator.engine.merging import Batches
from orchestrator.engine.partitioning import (
    FORWARD_ID,
    FORWARDED_FROM,
    Unit,
    balance,
    partition_of,
    plan_units,
)
from orchestrator.engine.settlewatch import SettleWatch
from orchestrator.engine.working import WorkingSet
from orchestrator.store.base import InstanceKey, Store
from schemas.errors import StoreError

__all__ = ["Ownership", "default_replica"]

log = structlog.get_logger("sagawire.engine")

_SETTLE_TIMEOUT = 10.0
"""Longest wait for a given-up unit's deliveries to settle before its lease goes
anyway (a stuck commit must not hold a unit for ever; the version check still
keeps the instance correct)."""


def default_replica() -> str:
    """A name unique to this process: host, pid and a random suffix (a restarted
    process is a new member; its predecessor's leases lapse or were left)."""
    return f"{socket.gethostname()}-{os.getpid()}-{os.urandom(2).hex()}"


@dataclass(slots=True)
class _Stream:
    """Copies of one type sent to one partition the long way, since both were taken."""

    sent: int = 0
    on_the_way: set[str] = field(default_factory=set)


class Ownership:
    """This replica's units (see the module docstring)."""

    def __init__(
        self,
        watch: SettleWatch,
        store: Store,
        topology: Topology,
        intake: Intake,
        working: WorkingSet,
        *,
        partitions: int,
        replica: str,
        ttl: float,
        max_batch: int,
    ) -> None:
        self.watch = watch
        self.store = store
        self.topology = topology
        self.working = working
        self.partitions = partitions
        self.me = replica
        self.ttl = ttl
        self.max_batch = max_batch
        self.units = plan_units(topology, partitions)
        self.by_name = {u.name: u for u in self.units}
        self.forwarder = Forwarder(watch, intake, topology.group, partitions)
        self.forwarder.route = self
        self._streams: dict[tuple[str, int], _Stream] = {}
        """Per (type, partition) both read here: the copies still on their way through
        the broker (see :meth:`local`)."""
        self.owners: Mapping[str, str] = {}
        """Who holds each unit, as the last round saw it."""
        self.members: tuple[str, ...] = ()
        """The live replicas, as the last round saw them."""
        self._batches = Batches(partitions + 2)
        """Partitions' batches for the pipeline: one per pump at most, merged as read."""
        self._pumps: dict[str, tuple[asyncio.Task[None], asyncio.Event]] = {}
        self._giving_up: dict[str, asyncio.Task[None]] = {}
        self._given_up: set[str] = set()
        self._claim: list[str] = []
        self._stopping = asyncio.Event()

    # -- what the engine asks ---------------------------------------------------------

    async def declare(self) -> None:
        """Every unit's consumer (queue), and what the engine publishes to."""
        for unit in self.units:
            await self.watch.declare(unit.topology)
        t = self.topology
        await self.watch.declare(Topology((), produces=t.produces, group=t.group))

    def held(self) -> list[str]:
        """The units this replica reads now, sources first."""
        return [u.name for u in self.units if u.name in self._pumps]

    def owns(self, key: InstanceKey) -> bool:
        """Whether this replica reads the partition of instance ``key``."""
        return f"p{partition_of(key[1], self.partitions)}" in self._pumps

    def status(self) -> dict[str, Any]:
        """For ``/readyz``: who this replica is, what it reads, who else is there."""
        return {
            "replica": self.me,
            "partitions": self.partitions,
            "owns": self.held(),
            "members": list(self.members),
            "forwarded": self.forwarder.forwarded,
            "handed": self.forwarder.handed,
        }

    async def stream(self) -> AsyncIterator[list[Delivery]]:
        """The batches of the partitions this replica holds, merged, for the pipeline."""
        while True:
            yield await self._batches.take(self.max_batch)

    # -- the lease loop -------------------------------------------------------------

    async def run(self, stopping: asyncio.Event) -> None:
        """Lease rounds until ``stopping``; then stop every pump and leave the group."""
        loop = asyncio.get_running_loop()
        last_ok = loop.time()
        try:
            while not stopping.is_set():
                busy = await self._round(loop.time() - last_ok)
                if busy is not None:
                    last_ok = loop.time()
                # claims go out in the very next round: a dead replica's units wait
                # for its leases to lapse, not for another pause
                pause = 0.0 if self._claim else self.ttl / 3 if busy is False else self.ttl / 12
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stopping.wait(), pause)
        finally:
            await self.close()

    async def _round(self, since_ok: float) -> bool | None:
        """One lease round and what follows from it. None: the store did not answer;
        True: units are moving (come back soon); False: settled."""
        release = sorted(self._given_up)
        try:
            view = await self.store.lease_round(
                self.topology.group, self.me, claim=self._claim, release=release, ttl=self.ttl
            )
        except StoreError as exc:
            if not exc.retryable:
                raise
            if since_ok > self.ttl * 0.9 and self._pumps:
                log.warning(
                    "leases not renewed within their ttl; giving up every unit",
                    error=str(exc),
                    units=self.held(),
                )
                for name in list(self._pumps):
                    self._drop(name)
            return None
        self._given_up.difference_update(release)
        self.owners, self.members = view.owners, view.members
        mine = {n for n, o in view.owners.items() if o == self.me and n in self.by_name}
        for name, (task, _) in list(self._pumps.items()):
            if task.done() and name not in self._giving_up:  # it failed: start it again
                self._pumps.pop(name)
                self._forget_streams(self.by_name[name])
                if not task.cancelled() and task.exception() is not None:
                    log.error(
                        "unit reader failed; restarting it", unit=name, error=repr(task.exception())
                    )
        for name in list(self._pumps):
            if name not in mine and name not in self._giving_up:
                log.warning("lease lost to another replica; unit dropped", unit=name)
                self._drop(name)
        # (a unit given up while this round was out is still in the view: not read again)
        for name in sorted(mine - self._given_up):
            if name not in self._pumps and name not in self._giving_up:
                self._start(self.by_name[name])
        claim, release_now = balance(self.units, view.owners, view.members, self.me)
        self._claim = claim
        for name in release_now:
            if name in self._pumps and name not in self._giving_up:
                self._giving_up[name] = asyncio.ensure_future(self._give_up(name))
        return bool(claim or release_now or self._giving_up or self._given_up)

    # -- the short cut to this replica's own partitions (forwarding.LocalRoute) --------

    def local(self, destination: str, k: int) -> bool:
        """Whether a message of ``destination`` bound for partition ``k`` may go to the
        pipeline at once. Only when this replica reads both the type and the partition,
        has sent at least one copy of that type there since it took both, and the
        partition has read every such copy: everything published to the partition
        before then was read before them, so nothing earlier of the type is left in
        the broker for the message to overtake. (A redelivery, after a crash or a
        stop, is the exception, as for any consumer.)"""
        stream = self._streams.get((destination, k))
        return stream is not None and stream.sent > 0 and not stream.on_the_way

    def streamed(self, destination: str, k: int, forward_id: str) -> None:
        """A copy of ``destination`` goes to partition ``k`` through the broker."""
        if f"p{k}" not in self._pumps or f"src:{destination}" not in self._pumps:
            return
        stream = self._streams.get((destination, k))
        if stream is None:
            stream = self._streams[(destination, k)] = _Stream()
        stream.sent += 1
        stream.on_the_way.add(forward_id)

    async def hand(self, by_partition: dict[int, list[Delivery]]) -> None:
        """Messages of a source read here, straight to their partitions' place in the
        pipeline: settling them now belongs to each partition (its hand-over waits)."""
        batch: list[Delivery] = []
        for k, deliveries in by_partition.items():
            self.watch.retrack(f"p{k}", deliveries)
            batch += deliveries
        await self._batches.put(batch)

    def _forget_streams(self, unit: Unit) -> None:
        """``unit`` taken or given up: the short cuts through it start over."""
        if unit.kind == "partition":
            gone = [key for key in self._streams if key[1] == unit.partition]
        else:
            gone = [key for key in self._streams if key[0] == unit.topology.consumes[0]]
        for key in gone:
            del self._streams[key]

    # -- pumps ------------------------------------------------------------------------

    def _start(self, unit: Unit) -> None:
        self._forget_streams(unit)
        stop = asyncio.Event()
        if unit.kind == "partition":
            k = unit.partition
            self.working.forget_where(lambda key: partition_of(key[1], self.partitions) == k)
            task = asyncio.ensure_future(self._pump(unit, stop, self._to_pipeline))
        else:
            task = asyncio.ensure_future(self._pump(unit, stop, self._forward))
        self._pumps[unit.name] = (task, stop)
        log.info("unit taken", unit=unit.name, replica=self.me)

    def _drop(self, name: str) -> None:
        """Stop reading ``name`` at once (its lease is gone or going)."""
        task, stop = self._pumps.pop(name)
        self._forget_streams(self.by_name[name])
        stop.set()
        task.cancel()

    async def _give_up(self, name: str) -> None:
        """Stop reading ``name``, wait for what was read to settle, then let the next
        round release its lease."""
        try:
            self._forget_streams(self.by_name[name])  # no short cut into a unit going away
            entry = self._pumps.get(name)
            if entry is not None:
                task, stop = entry
                stop.set()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
                self._pumps.pop(name, None)
            if not await self.watch.settled(name, _SETTLE_TIMEOUT):
                log.warning(
                    "unit given up with deliveries unsettled",
                    unit=name,
                    unsettled=self.watch.unsettled(name),
                )
            self._given_up.add(name)
            log.info("unit given up", unit=name, replica=self.me)
        finally:
            self._giving_up.pop(name, None)

    async def _pump(
        self,
        unit: Unit,
        stop: asyncio.Event,
        handle: Callable[[Unit, list[Delivery], asyncio.Event], Any],
    ) -> None:
        """Read ``unit`` until ``stop``; each batch to ``handle``."""
        stream = self.watch.consume(unit.topology, max_batch=self.max_batch)
        it = aiter(stream)
        stopped = asyncio.ensure_future(stop.wait())
        nxt: asyncio.Future[list[Delivery]] | None = None
        try:
            while not stop.is_set():
                nxt = asyncio.ensure_future(anext(it))
                await asyncio.wait({nxt, stopped}, return_when=asyncio.FIRST_COMPLETED)
                if not nxt.done():
                    break
                try:
                    batch = nxt.result()
                except StopAsyncIteration:
                    break
                nxt = None
                self.watch.track(unit.name, batch)
                await handle(unit, batch, stop)
        finally:
            stopped.cancel()
            if nxt is not None and not nxt.done():
                nxt.cancel()  # the stream gives back what it had read ahead on close
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await nxt
            with contextlib.suppress(Exception):
                await close_stream(stream)

    async def _to_pipeline(self, unit: Unit, batch: list[Delivery], stop: asyncio.Event) -> None:
        k, streams = unit.partition, self._streams
        for d in batch:
            origin = d.headers.get(FORWARDED_FROM)
            if origin is not None:
                d.destination = origin
                stream = streams.get((origin, k)) if streams else None
                if stream is not None:
                    stream.on_the_way.discard(d.headers.get(FORWARD_ID, ""))
        try:
            await self._batches.put(batch)
        except asyncio.CancelledError:  # dropped with the batch in hand: give it back
            with contextlib.suppress(Exception):
                await self.watch.nack(batch)
            raise

    async def _forward(self, unit: Unit, batch: list[Delivery], stop: asyncio.Event) -> None:
        await self.forwarder.forward(batch, self._stopping)  # settles or hands on each

    async def close(self) -> None:
        """Stop every pump, give back what was read ahead, and leave the group."""
        self._stopping.set()
        tasks = []
        for name in list(self._pumps):
            task, stop = self._pumps.pop(name)
            stop.set()
            if self.by_name[name].kind == "partition":
                task.cancel()  # a batch in hand is given back; a forwarder finishes its own
            tasks.append(task)
        tasks += self._giving_up.values()
        if tasks:
            _, late = await asyncio.wait(tasks, timeout=5.0)
            for task in late:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        for batch in self._batches.drain():
            with contextlib.suppress(Exception):
                await self.watch.nack(batch)
        with contextlib.suppress(StoreError):
            await self.store.leave(self.topology.group, self.me)
