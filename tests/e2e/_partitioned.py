"""Several ``sagawire run`` replicas in partitioned mode, and what they say they own.

What :mod:`tests.e2e.test_partitioned_replicas` drives:

* :func:`open_client` gives a raw participant client with a broker namespace of its
  own (a NATS stream and subject prefix, a RabbitMQ exchange), and on the way out
  deletes what partitioned mode declared there besides: on RabbitMQ the queues
  ``sagawire.<group>__<type>`` (one per source unit) and ``sagawire.<group>-p<k>``
  (one per partition), which :class:`~tests.e2e.clients.RabbitClient` does not know;
* :class:`Cluster` starts replicas of one consumer group on one PostgreSQL database
  (:class:`~tests.faults.sidecar.SidecarSlot`, any saga module, with
  ``--partitions`` and ``--lease-ttl`` given through the environment), reads each
  one's ``/readyz`` ``ownership`` object into a :class:`View`, and waits until the
  units are divided as they should be (:func:`division_problems`);
* :func:`scrape` sums a replica's ``/metrics`` samples by name.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aio_pika
import httpx
from prometheus_client.parser import text_string_to_metric_families

from adapters.base import Topology
from orchestrator.engine.correlate import Router
from orchestrator.engine.partitioning import Unit, plan_units
from orchestrator.language.loader import load_sagas
from tests.e2e.clients import NatsClient, RabbitClient, RawClient
from tests.faults.participants import WATCHED, Services
from tests.faults.rig import Rig
from tests.faults.sidecar import ORDER_SAGA, SidecarSlot
from tests.faults.traffic import with_one_retry
from tests.support.services import require

__all__ = [
    "ADDRESS",
    "LEASE_TTL",
    "PARTITIONS",
    "Cluster",
    "View",
    "count_instances",
    "cover_problems",
    "describe",
    "division_problems",
    "instances",
    "open_client",
    "open_cluster",
    "open_orders",
    "plan",
    "scrape",
]

PARTITIONS = 8
LEASE_TTL = 2.0
ADDRESS = {"nats": ("127.0.0.1", 4222), "rabbitmq": ("127.0.0.1", 5672)}
RABBIT_QUEUE_PREFIX = "sagawire"
"""The adapter's default ``queue_prefix``: the raw client's URL names none."""


def plan(saga: Path, group: str, partitions: int = PARTITIONS) -> list[Unit]:
    """The units the replicas of ``group`` running ``saga`` divide between them."""
    consumes = Router(load_sagas(str(saga))).consumes()
    return plan_units(Topology(consumes, group=group), partitions)


@contextlib.asynccontextmanager
async def open_client(broker: str, saga: Path) -> AsyncIterator[RawClient]:
    """A connected raw client on ``broker`` (skip on a laptop without it, fail under
    CI=true); its namespace, and on RabbitMQ the queues of the units of ``saga`` in
    the client's group, deleted after."""
    require(broker, *ADDRESS[broker])
    client: RawClient = await (NatsClient() if broker == "nats" else RabbitClient()).connect()
    try:
        yield client
    finally:
        try:
            if isinstance(client, RabbitClient):
                units = plan(saga, client.group)
                await _delete_queues(client, [u.topology.group for u in units])
        finally:
            await client.close()


async def _delete_queues(client: RabbitClient, groups: Sequence[str]) -> None:
    conn = await aio_pika.connect(client.server)
    try:
        for group in groups:
            channel = await conn.channel()  # a failed delete closes its channel
            with contextlib.suppress(Exception):
                await channel.queue_delete(f"{RABBIT_QUEUE_PREFIX}.{group}")
    finally:
        await conn.close()


@dataclass(frozen=True)
class View:
    """One replica's ``/readyz`` ``ownership`` object (``None`` fields: no answer)."""

    name: str
    replica: str
    owns: frozenset[str]
    members: tuple[str, ...]
    forwarded: int
    mode: str | None

    @classmethod
    def of(cls, name: str, body: dict[str, Any]) -> View:
        own = body.get("ownership") or {}
        return cls(
            name=name,
            replica=str(own.get("replica", "")),
            owns=frozenset(own.get("owns", ())),
            members=tuple(own.get("members", ())),
            forwarded=int(own.get("forwarded", 0)),
            mode=own.get("mode"),
        )

    def count(self, units: Sequence[Unit], kind: str) -> int:
        return sum(1 for u in units if u.kind == kind and u.name in self.owns)


def cover_problems(units: Sequence[Unit], views: Sequence[View]) -> list[str]:
    """What keeps ``views`` from covering ``units``: every unit owned by exactly one
    replica, each in partitioned mode. Empty: all is well."""
    problems: list[str] = []
    names = {u.name for u in units}
    holders: dict[str, list[str]] = {}
    for v in views:
        if v.mode != "partitioned":
            problems.append(f"{v.name} is not in partitioned mode (mode {v.mode!r})")
        for unit in v.owns:
            holders.setdefault(unit, []).append(v.name)
    unowned = sorted(names - set(holders))
    if unowned:
        problems.append(f"owned by nobody: {unowned}")
    shared = {u: h for u, h in holders.items() if len(h) > 1}
    if shared:
        problems.append(f"owned twice: {shared}")
    strange = sorted(set(holders) - names)
    if strange:
        problems.append(f"units that do not exist: {strange}")
    return problems


def division_problems(units: Sequence[Unit], views: Sequence[View]) -> list[str]:
    """What is wrong with how ``views`` divide ``units``: :func:`cover_problems`, and
    every replica seeing all the others, and each kind of unit shared out evenly
    (counts differ by at most one). Empty: all is well."""
    problems = cover_problems(units, views)
    everyone = sorted(v.replica for v in views)
    for v in views:
        if sorted(v.members) != everyone:
            problems.append(f"{v.name} sees members {sorted(v.members)}, not {everyone}")
    for kind in ("source", "partition"):
        counts = {v.name: v.count(units, kind) for v in views}
        if counts and max(counts.values()) - min(counts.values()) > 1:
            problems.append(f"{kind} units unevenly shared: {counts}")
    return problems


def describe(units: Sequence[Unit], views: Sequence[View]) -> str:
    """One line per replica: its name, and how many units of each kind it owns."""
    return "; ".join(
        f"{v.name}={v.replica}: {v.count(units, 'source')} src + "
        f"{v.count(units, 'partition')} p {sorted(v.owns)}"
        for v in views
    )


async def scrape(http: httpx.AsyncClient, base: str) -> dict[str, float]:
    """``/metrics`` of the replica at ``base``, each sample name's values summed."""
    r = await with_one_retry(lambda: http.get(f"{base}/metrics"))
    r.raise_for_status()
    sums: dict[str, float] = {}
    for family in text_string_to_metric_families(r.text):
        for s in family.samples:
            sums[s.name] = sums.get(s.name, 0.0) + s.value
    return sums


async def instances(
    http: httpx.AsyncClient, base: str, saga: str, ids: Sequence[str], *, at_once: int = 25
) -> dict[str, dict[str, Any]]:
    """``GET /sagas/{saga}/{id}`` (the admin API: state, data, history) of each of
    ``ids``, ``at_once`` at a time; an answer other than 200 as ``{"http": status}``."""

    async def one(cid: str) -> dict[str, Any]:
        r = await with_one_retry(lambda: http.get(f"{base}/sagas/{saga}/{cid}"))
        return r.json() if r.status_code == 200 else {"http": r.status_code, "body": r.text}

    found: dict[str, dict[str, Any]] = {}
    for start in range(0, len(ids), at_once):
        chunk = ids[start : start + at_once]
        found.update(zip(chunk, await asyncio.gather(*(one(c) for c in chunk)), strict=True))
    return found


async def count_instances(http: httpx.AsyncClient, base: str, saga: str, **where: str) -> int:
    """How many instances of ``saga`` match ``where`` (``status=``, ``state=``: the
    filters of ``GET /sagas``), up to 1000."""
    params = {"saga": saga, "limit": "1000", **where}
    r = await with_one_retry(lambda: http.get(f"{base}/sagas", params=params))
    r.raise_for_status()
    return len(r.json()["instances"])


@dataclass
class Cluster:
    """The replicas of one consumer group, on one broker namespace and one database."""

    client: RawClient
    saga: Path
    store_url: str
    workdir: Path
    http: httpx.AsyncClient
    units: list[Unit]
    replicas: list[SidecarSlot] = field(default_factory=list)
    ttl: float = LEASE_TTL

    def add(self) -> SidecarSlot:
        """Start one more replica (named ``r<n>`` in the leases)."""
        n = len(self.replicas)
        slot = SidecarSlot(
            sagas=self.saga,
            broker_url=self.client.broker_url,
            store_url=self.store_url,
            group=self.client.group,
            log=self.workdir / f"replica-{n}.log",
            env={
                "SAGAWIRE_PARTITIONS": str(len([u for u in self.units if u.kind == "partition"])),
                "SAGAWIRE_LEASE_TTL": str(self.ttl),
                "SAGAWIRE_REPLICA": f"r{n}",
            },
        )
        self.replicas.append(slot)
        slot.start()
        return slot

    @property
    def live(self) -> list[SidecarSlot]:
        return [r for r in self.replicas if r.running]

    def name(self, slot: SidecarSlot) -> str:
        return f"r{self.replicas.index(slot)}"

    async def view(self, slot: SidecarSlot) -> View | None:
        """What ``slot`` says it owns now (None: it did not answer)."""
        try:
            r = await with_one_retry(lambda: self.http.get(f"{slot.base}/readyz", timeout=2.0))
            return View.of(self.name(slot), r.json())
        except (httpx.HTTPError, ValueError):
            return None

    async def views(self, slots: Sequence[SidecarSlot]) -> list[View | None]:
        return list(await asyncio.gather(*(self.view(s) for s in slots)))

    async def divided(
        self,
        slots: Sequence[SidecarSlot],
        timeout: float,
        *,
        check: Callable[[Sequence[Unit], Sequence[View]], list[str]] = division_problems,
        times: int = 2,
        every: float = 0.1,
    ) -> tuple[float, list[View]]:
        """Poll ``slots`` until ``check`` finds nothing wrong with how they divide the
        units, ``times`` readings in a row (two replicas' answers are not one instant:
        a unit handed over between them may show twice, or not at all, in one
        reading); the seconds that took, and the views. AssertionError with the last
        problems on timeout."""
        start = time.monotonic()
        last: list[str] = ["no reading yet"]
        views: list[View] = []
        good = 0
        while True:
            got = await self.views(slots)
            views = [v for v in got if v is not None]
            if len(views) < len(got):
                last = [f"{len(got) - len(views)} replica(s) did not answer"]
                good = 0
            else:
                last = check(self.units, views)
                good = 0 if last else good + 1
                if good >= times:
                    return time.monotonic() - start, views
            if time.monotonic() - start > timeout:
                raise AssertionError(
                    f"units not divided among {[self.name(s) for s in slots]} after "
                    f"{timeout}s: {last}\n{describe(self.units, views)}\n{self.digests(slots)}"
                )
            await asyncio.sleep(every)

    async def metrics(self, slots: Sequence[SidecarSlot]) -> dict[str, float]:
        """Every metric summed over ``slots``."""
        total: dict[str, float] = {}
        for got in await asyncio.gather(*(scrape(self.http, s.base) for s in slots)):
            for name, value in got.items():
                total[name] = total.get(name, 0.0) + value
        return total

    def digests(self, slots: Sequence[SidecarSlot] | None = None) -> str:
        """Each replica's warnings and errors, for a failure message."""
        return "\n".join(
            f"--- {self.name(s)} ({s.log}):\n{s.digest(15)}"
            for s in (self.replicas if slots is None else slots)
        )

    def close(self) -> None:
        for slot in self.replicas:
            slot.close()


@contextlib.asynccontextmanager
async def open_cluster(
    broker: str, saga: Path, store_url: str, workdir: Path, replicas: int
) -> AsyncIterator[Cluster]:
    """``replicas`` replicas of a fresh group running ``saga``, each ready (``/readyz``
    200), logging to ``workdir``; stopped (kill -9: nothing of theirs is checked after)
    and cleaned up after."""
    async with contextlib.AsyncExitStack() as stack:
        http = await stack.enter_async_context(httpx.AsyncClient(timeout=5.0))
        client = await stack.enter_async_context(open_client(broker, saga))
        cluster = Cluster(client, saga, store_url, workdir, http, plan(saga, client.group))
        stack.callback(cluster.close)
        slots = [cluster.add() for _ in range(replicas)]
        await asyncio.gather(*(s.wait_ready(http) for s in slots))
        yield cluster


@contextlib.asynccontextmanager
async def open_orders(
    broker: str, store_url: str, workdir: Path, replicas: int, *, reply_delay: float = 0.0
) -> AsyncIterator[tuple[Cluster, Rig]]:
    """:func:`open_cluster` with the shipped order saga, and the participants answering
    (:class:`~tests.faults.participants.Services`). The :class:`~tests.faults.rig.Rig`
    is what :func:`~tests.faults.checks.check_orders` reads; its sidecar is the first
    replica (keep that one alive)."""
    async with open_cluster(broker, ORDER_SAGA, store_url, workdir, replicas) as cluster:
        client = cluster.client
        await client.start(WATCHED)
        services = Services(client, delay=reply_delay)
        services.start()
        try:
            yield (
                cluster,
                Rig(
                    broker=broker,
                    client=client,
                    services=services,
                    sidecar=cluster.replicas[0],
                    http=cluster.http,
                    store_url=store_url,
                ),
            )
        finally:
            await services.stop()
