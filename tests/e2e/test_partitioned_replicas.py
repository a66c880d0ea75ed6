"""Partitioned mode end to end: several ``sagawire run`` replicas on NATS and RabbitMQ.

Each end-to-end test starts replicas of one consumer group (``--partitions 8
--lease-ttl 2``) on a PostgreSQL database of its own and a broker namespace of its own
(:mod:`tests.e2e._partitioned`), and checks what issue 19 promises:

1. the units (a source per consumed type, eight partitions) are each owned by exactly
   one replica, evenly, with two replicas and again after a third joins; orders with
   simulated participants (:mod:`tests.faults.participants`) all complete, with under
   1 % of deliveries meeting a version conflict;
2. the events of one instance are applied in the order they were published: 50
   instances of the ``tick`` saga (:mod:`tests.sagas.ticks`) each get ticks 1..20, all
   published at once (each instance's in order), with two replicas and with a second
   joining mid-stream, and each instance's state lists them in order; and a timer
   fires once, on the replica that owns its instance (the ``beat`` saga);
3. ``kill -9`` of one of three replicas under load loses nothing and applies nothing
   twice, its units are owned by the survivors within 5 s, and a replica started
   after takes its share without stalling the others (the longest gap between
   completions while it joins is printed and held under 3 s);
4. (no broker) the hand-over itself: a unit given up is not read again before its
   lease goes, however the settling and the lease round interleave.

The kill test is a fault test: bounded by default, longer under ``SAGAWIRE_FAULTS=full``
(:mod:`tests.faults.mode`). Figures print with ``pytest -s``.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from adapters.base import OutgoingMessage, Topology, close_stream
from adapters.memory import MemoryBroker, MemoryTransport
from orchestrator.engine.correlate import Router
from orchestrator.engine.intake import Intake
from orchestrator.engine.ownership import Ownership
from orchestrator.engine.partitioning import partition_destination, partition_of
from orchestrator.engine.settlewatch import SettleWatch
from orchestrator.engine.working import WorkingSet
from orchestrator.store.base import LeaseView
from orchestrator.store.memory import MemoryStore
from schemas.limits import DEFAULT_LIMITS
from tests.e2e._partitioned import (
    PARTITIONS,
    Cluster,
    count_instances,
    cover_problems,
    describe,
    instances,
    open_cluster,
    open_orders,
)
from tests.e2e.scenario import cloudevent
from tests.faults.checks import check_orders
from tests.faults.mode import FULL
from tests.faults.rig import Rig
from tests.faults.traffic import Orders
from tests.sagas import ticks as tick_saga

BROKERS = [
    pytest.param(b, marks=[pytest.mark.broker(b), pytest.mark.slow, pytest.mark.postgres])
    for b in ("nats", "rabbitmq")
]
"""Each broker, with the marks of a test that runs replicas on it and on PostgreSQL."""
DIVIDE = 15.0
"""Seconds replicas get to divide the units after a start or a stop (a lease round
every ttl/3; a unit is given up only once what was read of it is settled)."""
OUTCOMES = 30.0
"""Seconds the last order of a run gets to reach its outcome."""


async def _place(orders: Orders, n: int) -> None:
    for _ in range(n):
        await orders.place()


# -- 1. every unit owned once, evenly; orders complete; few conflicts ---------------------

ORDERS = 150
"""Orders placed with two replicas, and again with three."""
CONFLICTS = 0.01
"""Most version conflicts per delivery."""


@pytest.mark.parametrize("broker", BROKERS)
@pytest.mark.timeout(120)
async def test_units_divided_evenly_and_orders_complete_on_two_then_three(
    broker: str, database_url: str, tmp_path: Path
) -> None:
    async with open_orders(broker, database_url, tmp_path, 2) as (cluster, rig):
        orders = Orders(rig, http_every=0)
        took = [(await cluster.divided(cluster.live, DIVIDE))[0]]
        await _place(orders, ORDERS)
        await check_orders(rig, orders.ids, timeout=OUTCOMES, what=f"{broker}, 2 replicas: ")

        third = cluster.add()
        await third.wait_ready(cluster.http)
        took.append((await cluster.divided(cluster.live, DIVIDE))[0])
        await _place(orders, ORDERS)
        await check_orders(rig, orders.ids, timeout=OUTCOMES, what=f"{broker}, 3 replicas: ")
        _, views = await cluster.divided(cluster.live, DIVIDE)  # and still, after the run

        per = [await cluster.metrics([r]) for r in cluster.live]
        total = await cluster.metrics(cluster.live)
        deliveries, conflicts = (
            total["sagawire_deliveries_total"],
            total["sagawire_conflicts_total"],
        )
        print(
            f"\n{broker}: divided in {took[0]:.2f}s (2 replicas), {took[1]:.2f}s after the"
            f" third was ready; {len(orders.ids)} orders; deliveries per replica"
            f" {[int(m['sagawire_deliveries_total']) for m in per]}, forwarded"
            f" {[v.forwarded for v in views]}, conflicts {int(conflicts)}/{int(deliveries)}"
            f"\n  {describe(cluster.units, views)}"
        )
        assert total["sagawire_owned_units"] == len(cluster.units), (
            f"/metrics sagawire_owned_units sums to {total['sagawire_owned_units']},"
            f" not {len(cluster.units)}"
        )
        assert [m["sagawire_replicas"] for m in per] == [3, 3, 3]
        assert deliveries > 0
        assert conflicts < CONFLICTS * deliveries, (
            f"{int(conflicts)} version conflicts in {int(deliveries)} deliveries"
            f" (at most {CONFLICTS:.0%})\n{cluster.digests()}"
        )


# -- 2. one instance's events applied in the order they were published --------------------

INSTANCES = 50
TICKS = tick_saga.TICKS
PACE = 0.1
"""Seconds between rounds of ticks while a second replica joins."""


def _tick(iid: str, n: int) -> bytes:
    return cloudevent(tick_saga.TICK, {"id": iid, "n": n}, id_=f"{iid}-{n}")


async def _ticks(cluster: Cluster, iid: str) -> None:
    """Ticks 1..TICKS of ``iid``, each published once the broker confirmed the one before."""
    for n in range(1, TICKS + 1):
        await cluster.client.publish(tick_saga.TICK, _tick(iid, n), key=iid)


async def _ticks_while_joining(cluster: Cluster, ids: list[str]) -> None:
    """Ticks in rounds (round n: tick n of every instance, at once), :data:`PACE` apart;
    the second half only once a second replica is ready, so that units move from the
    first replica to it while ticks are on their way."""
    joining = cluster.add()
    for n in range(1, TICKS + 1):
        if n == TICKS // 2 + 1:
            await joining.wait_ready(cluster.http)
        await asyncio.gather(
            *(cluster.client.publish(tick_saga.TICK, _tick(iid, n), key=iid) for iid in ids)
        )
        await asyncio.sleep(PACE)


async def _until_counted(cluster: Cluster, saga: str, n: int, timeout: float, **where: str) -> int:
    """Poll until ``n`` instances of ``saga`` match ``where`` (``GET /sagas`` filters),
    or ``timeout``; how many did."""
    base, http = cluster.replicas[0].base, cluster.http
    deadline = time.monotonic() + timeout
    while (done := await count_instances(http, base, saga, **where)) < n:
        if time.monotonic() > deadline:
            break
        await asyncio.sleep(0.25)
    return done


@pytest.mark.parametrize("joining", [False, True], ids=["two", "second-joins"])
@pytest.mark.parametrize("broker", BROKERS)
@pytest.mark.timeout(90)
async def test_each_instance_applies_its_events_in_the_order_published(
    broker: str, joining: bool, database_url: str, tmp_path: Path
) -> None:
    saga = Path(tick_saga.__file__)
    async with open_cluster(broker, saga, database_url, tmp_path, 1 if joining else 2) as cluster:
        await cluster.divided(cluster.live, DIVIDE)
        await cluster.client.start(())  # RabbitMQ: declares the exchange to publish on
        ids = [f"tick-{i:03d}" for i in range(INSTANCES)]
        start = time.monotonic()
        if joining:
            await _ticks_while_joining(cluster, ids)
        else:
            await asyncio.gather(*(_ticks(cluster, iid) for iid in ids))  # interleaved
        published = time.monotonic() - start
        done = await _until_counted(cluster, "tick", INSTANCES, OUTCOMES, status="completed")
        applied = time.monotonic() - start
        got = await instances(cluster.http, cluster.replicas[0].base, "tick", ids)
        per = [await cluster.metrics([r]) for r in cluster.live]
        total = await cluster.metrics(cluster.live)
        print(
            f"\n{broker}{' (second replica joining)' if joining else ''}: {INSTANCES}x{TICKS}"
            f" ticks published in {published:.2f}s, all applied after {applied:.2f}s;"
            f" deliveries per replica {[int(m['sagawire_deliveries_total']) for m in per]},"
            f" forwarded {int(total['sagawire_forwarded_total'])},"
            f" conflicts {int(total['sagawire_conflicts_total'])}"
        )
        expected = list(range(1, TICKS + 1))
        wrong = {
            iid: (body.get("status"), body.get("data", {}).get("seen"), body.get("http"))
            for iid, body in got.items()
            if body.get("data", {}).get("seen") != expected
        }
        assert not wrong and done == INSTANCES, (
            f"{len(wrong)} of {INSTANCES} instances did not apply ticks 1..{TICKS} in order"
            f" ({done} completed); e.g. (status, seen):\n"
            + "\n".join(f"  {k}: {v}" for k, v in list(wrong.items())[:8])
            + f"\n{cluster.digests()}"
        )
        assert total.get("sagawire_dead_letters_total", 0) == 0, cluster.digests()
        if joining:  # the hand-over happened while ticks flowed, or this proved nothing
            await cluster.divided(cluster.live, DIVIDE)
            assert all(m["sagawire_deliveries_total"] > 0 for m in per), (
                "the second replica applied no tick: no unit moved while ticks flowed"
            )


# -- 2b. a timer fires on the replica that owns its instance, and there only ------------

BEATS = 40


@pytest.mark.parametrize("broker", BROKERS)
@pytest.mark.timeout(60)
async def test_timers_fire_only_on_the_replica_that_owns_the_instance(
    broker: str, database_url: str, tmp_path: Path
) -> None:
    """Two replicas, settled; 40 ``beat`` instances each wait 0.5 s on a timer, then
    take a second event. Only the owner of an instance's partition moves it, so each
    timer fires once, on its owner, and no commit meets a version conflict. A replica
    that fires every due timer of the store (``Store.due_timers`` takes no owner)
    decides instances it does not own, racing the other replica for the same timer
    and leaving the owner's cached copy stale: conflicts, and timers counted as fired
    more than once."""
    saga = Path(tick_saga.__file__)
    async with open_cluster(broker, saga, database_url, tmp_path, 2) as cluster:
        _, views = await cluster.divided(cluster.live, DIVIDE)
        await cluster.client.start(())
        ids = [f"beat-{i:03d}" for i in range(BEATS)]
        owner = {unit: v.name for v in views for unit in v.owns}
        owned = Counter(owner[f"p{partition_of(iid, PARTITIONS)}"] for iid in ids)
        expected = [owned[cluster.name(r)] for r in cluster.live]

        async def beat(iid: str, n: int) -> None:
            body = cloudevent(tick_saga.BEAT, {"id": iid}, id_=f"{iid}-{n}")
            await cluster.client.publish(tick_saga.BEAT, body, key=iid)

        await asyncio.gather(*(beat(iid, 1) for iid in ids))
        rung = await _until_counted(cluster, "beat", BEATS, OUTCOMES, state="rung")
        await asyncio.gather(*(beat(iid, 2) for iid in ids))
        done = await _until_counted(cluster, "beat", BEATS, OUTCOMES, status="completed")
        per = [await cluster.metrics([r]) for r in cluster.live]
        fired = [int(m["sagawire_timers_fired_total"]) for m in per]
        conflicts = [int(m["sagawire_conflicts_total"]) for m in per]
        print(
            f"\n{broker}: {BEATS} beats, {rung} rung, {done} done; timers fired per replica"
            f" {fired} (owned {expected}), conflicts per replica {conflicts}"
        )
        assert (rung, done) == (BEATS, BEATS), cluster.digests()
        got = await instances(cluster.http, cluster.replicas[0].base, "beat", ids)
        twice = {iid: b.get("data", {}).get("rung") for iid, b in got.items()}
        assert set(twice.values()) == {1}, f"timers applied other than once: {twice}"
        assert (fired, sum(conflicts)) == (expected, 0), (
            f"{BEATS} timers fell due, {expected} of them on instances each replica owns;"
            f" the replicas fired {fired} and met {conflicts} version conflicts: a replica"
            " fires the timers of instances it does not own"
        )


# -- 3. kill -9 one of three under load; a new replica joins ------------------------------

RATE = 40.0 if FULL else 25.0
"""Orders placed a second, from before the kill until after the new replica settled."""
REPLY_DELAY = 0.1
"""Seconds each participant takes to answer: a saga takes ~0.4 s, so a kill finds some
in flight."""
BEFORE_KILL = 6.0 if FULL else 2.0
BETWEEN = 4.0 if FULL else 1.0
"""Seconds of traffic on the two survivors before the new replica starts."""
AFTER_JOIN = 6.0 if FULL else 2.0
FAILOVER = 5.0
"""Seconds after the kill within which the survivors must own every unit."""
SHARE = 5.0
"""Seconds after its ``/readyz`` 200 within which the new replica must own a unit."""
JOIN_GAP = 3.0
"""Longest pause in completions while the new replica joins."""


async def _feed(orders: Orders, stop: asyncio.Event) -> None:
    """Place :data:`RATE` orders a second until ``stop``."""
    start, n = time.monotonic(), 0
    while not stop.is_set():
        await asyncio.sleep(max(0.0, start + n / RATE - time.monotonic()))
        await orders.place()
        n += 1


def _completions(rig: Rig) -> list[float]:
    return sorted(
        outs[0].at for outs in rig.record.outcomes.values() if outs[0].type == "order.completed"
    )


def _longest_gap(times: list[float], start: float, end: float) -> float:
    """The longest stretch of ``[start, end]`` without one of ``times``."""
    inside = [start, *(t for t in times if start < t < end), end]
    return max(b - a for a, b in zip(inside, inside[1:], strict=False))


APPLIED = ("order.placed", "inventory.reserved", "payment.charged", "shipping.scheduled")
"""The events a completed order's history shows applied, once each, in this order."""


def _applied(history: list[dict[str, Any]]) -> list[str]:
    """The types of the events applied to an instance, as its history lists them, with
    the id of any event applied more than once."""
    events = [h for h in history if h["kind"] == "event"]
    again = [i for i, n in Counter(h["message_id"] for h in events).items() if n > 1]
    return [h["message_type"] for h in events] + [f"twice: {i}" for i in again]


@pytest.mark.fault
@pytest.mark.parametrize("broker", BROKERS)
@pytest.mark.timeout(120 if FULL else 90)
async def test_kill_9_of_one_of_three_loses_nothing_and_a_new_replica_takes_a_share(
    broker: str, database_url: str, tmp_path: Path
) -> None:
    async with open_orders(broker, database_url, tmp_path, 3, reply_delay=REPLY_DELAY) as (
        cluster,
        rig,
    ):
        first, victim, third = cluster.replicas
        await cluster.divided(cluster.live, DIVIDE)
        orders = Orders(rig, http_every=0)
        stop = asyncio.Event()
        feeder = asyncio.create_task(_feed(orders, stop))
        try:
            await asyncio.sleep(BEFORE_KILL)
            held = await cluster.view(victim)
            in_flight = sum(1 for o in orders.ids if not rig.record.finished(o))
            killed = time.monotonic()
            await victim.kill()
            survivors = [first, third]
            await cluster.divided(
                survivors, FAILOVER + DIVIDE, check=cover_problems, times=1, every=0.05
            )
            covered = time.monotonic() - killed
            await cluster.divided(survivors, DIVIDE)
            balanced = time.monotonic() - killed
            await asyncio.sleep(BETWEEN)

            spawned = time.monotonic()
            newcomer = cluster.add()
            ready = await newcomer.wait_ready(cluster.http)
            ready_at = time.monotonic()
            while not ((view := await cluster.view(newcomer)) and view.owns):
                assert time.monotonic() - ready_at < SHARE + DIVIDE, (
                    f"the new replica owns nothing {SHARE + DIVIDE}s after ready"
                )
                await asyncio.sleep(0.05)
            share = time.monotonic() - ready_at
            settled, views = await cluster.divided(cluster.live, DIVIDE)
            settled_at = time.monotonic()
            await asyncio.sleep(AFTER_JOIN)
        finally:
            stop.set()
            await feeder
        gap = _longest_gap(_completions(rig), spawned, settled_at + 1.0)

        await check_orders(rig, orders.ids, timeout=OUTCOMES, what=f"{broker}, kill -9: ")
        got = await instances(cluster.http, first.base, "order", orders.ids)
        applied = {oid: _applied(body.get("history", [])) for oid, body in got.items()}
        wrong = {oid: seq for oid, seq in applied.items() if tuple(seq) != APPLIED}
        print(
            f"\n{broker}: {len(orders.ids)} orders, {in_flight} in flight at the kill"
            f" (victim held {sorted(held.owns) if held else '?'}); survivors owned every"
            f" unit {covered:.2f}s after the kill, evenly after {balanced:.2f}s; the new"
            f" replica was ready {ready:.2f}s after its start, owned a unit {share:.2f}s"
            f" after ready, all divided {settled:.2f}s after that; longest gap in"
            f" completions while it joined {gap:.2f}s"
            f"\n  {describe(cluster.units, views)}"
        )
        assert not wrong, (
            f"{len(wrong)} orders' histories are not {APPLIED} once each: "
            f"{dict(list(wrong.items())[:5])}"
        )
        assert covered <= FAILOVER, (
            f"the survivors owned every unit only {covered:.2f}s after the kill"
            f" (at most {FAILOVER}s)\n{cluster.digests()}"
        )
        assert share <= SHARE, f"the new replica owned nothing until {share:.2f}s after ready"
        assert gap < JOIN_GAP, (
            f"completions paused {gap:.2f}s while the new replica joined\n{cluster.digests()}"
        )


# -- 4. the hand-over itself, without a broker: a unit given up is not read again ---------


class _HeldStore(MemoryStore):
    """The memory store, whose next lease round, once armed, waits to be let go."""

    def __init__(self) -> None:
        super().__init__()
        self.armed: tuple[asyncio.Event, asyncio.Event] | None = None

    async def lease_round(self, group: str, member: str, **kw: Any) -> LeaseView:
        if self.armed is not None and member == "a":
            entered, go = self.armed
            self.armed = None
            entered.set()
            await go.wait()
        return await super().lease_round(group, member, **kw)


async def _yield(times: int = 10) -> None:
    for _ in range(times):
        await asyncio.sleep(0)


async def test_a_unit_given_up_while_a_lease_round_is_out_is_not_read_again() -> None:
    """Replica ``a`` holds every unit; ``b`` joins, so ``a`` gives ``p1`` up: it stops
    reading it and waits for a batch of ``p1`` still in its pipeline to settle, then the
    next round releases the lease. If the batch settles while that round is out at the
    store (the round named nothing to release yet; its view still says ``a`` holds
    ``p1``), ``a`` must not start reading ``p1`` again: the round after releases the
    lease, and ``b`` would read ``p1`` while ``a`` still has deliveries of it in flight
    (one reader at a time, and so per-instance order, broken)."""
    broker = MemoryBroker()
    transport = MemoryTransport(broker)
    await transport.start()
    store = _HeldStore()
    await store.open()
    own = Ownership(
        SettleWatch(transport),
        store,
        Topology((tick_saga.TICK,), group="g"),
        Intake(Router([tick_saga.ticks]), DEFAULT_LIMITS),
        WorkingSet(0),
        partitions=2,
        replica="a",
        ttl=60.0,
        max_batch=10,
    )
    try:
        await own.declare()
        for _ in range(3):
            await own._round(0.0)
        assert own.held() == [f"src:{tick_saga.TICK}", "p0", "p1"]
        await transport.publish(
            [OutgoingMessage(partition_destination("g", 1), b"{}", message_id="m1")]
        )
        pipeline = own.stream()
        batch = await asyncio.wait_for(anext(pipeline), 5.0)  # p1's, in the pipeline
        await store.lease_round("g", "b", ttl=60.0)  # b joins: a's share is one partition
        await own._round(0.0)  # a gives p1 up: stops reading it, waits for the batch
        await _yield()
        assert "p1" not in own.held() and own.watch.unsettled("p1") == len(batch)

        entered, go = asyncio.Event(), asyncio.Event()
        store.armed = (entered, go)
        out = asyncio.ensure_future(own._round(0.0))
        await entered.wait()  # the round is at the store...
        await own.watch.ack(batch)  # ...when the pipeline settles p1's batch
        await _yield()  # p1 given up: the next round releases its lease
        go.set()
        await out
        await close_stream(pipeline)
        assert "p1" not in own.held(), (
            "p1 was given up (its lease goes in the next round) but a reads it again"
        )
    finally:
        await own.close()
        await transport.close()
        await store.close()
