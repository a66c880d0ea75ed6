"""One checkout run on one broker: the tracker, the services, the orders, a kill -9.

``sagawire run --sagas <checkout module>`` (a subprocess, SQLite store, the group of
the test's client) tracks the checkout while the services of
:mod:`tests.e2e.choreography.services` play it among themselves, each with a
consumer of its own. The shop places :data:`~tests.e2e.choreography.fates.ORDERS`
orders at :data:`RATE` a second on the broker, and the tracker is killed with -9 and
started again on the same store and group at once, while the services carry on (the
tracker's consumer is down, theirs are not), in one of two moments (:class:`Kill`).
Then the run waits for every outcome and hands everything to
:mod:`tests.e2e.choreography.checks`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

import httpx

from tests.e2e.choreography.checks import check_run, check_services
from tests.e2e.choreography.fates import EVERY, ORDERS, fate, order_id, placed
from tests.e2e.choreography.services import Services
from tests.e2e.clients import ServiceClient
from tests.e2e.sidecar import LOG_LEVEL_ENV
from tests.faults.sidecar import SidecarSlot

RATE = 10.0
"""Orders placed per second: a run places orders for ~4 s."""
KILL_AFTER = 8
"""Outcomes seen before a :attr:`Kill.IN_FLIGHT` kill: early, so that most orders
arrive while the tracker is down or starting again."""
FIRST_LOT = 12
"""Orders placed before a :attr:`Kill.CAUGHT_UP` kill: the silent ones and one of
every other fate."""
OUTCOME_TIMEOUT = 60.0
QUIET = 1.0
"""Seconds of listening after the last expected message, to catch extra ones."""
LOG_LEVEL = os.environ.get(LOG_LEVEL_ENV, "warning")
"""The tracker's, as for the order saga's end-to-end sidecar (``SAGAWIRE_E2E_LOG_LEVEL``
raises it)."""


class Kill(Enum):
    """When the tracker is killed with -9."""

    IN_FLIGHT = "in flight"
    """After :data:`KILL_AFTER` outcomes, orders still coming: checkouts are under
    way, with events parked in the store and events the dead tracker held unacked,
    which the broker gives to its successor (RabbitMQ when the connection drops,
    NATS after ``ack_wait``)."""
    CAUGHT_UP = "caught up"
    """Once every checkout of the first :data:`FIRST_LOT` orders that can end has
    ended: only the silent ones are under way (their deadlines fire in the next
    life), and the other orders arrive while the tracker is down or starting again.
    For Kafka on Tansu, where a restarted tracker reads nothing for ~6 s (Tansu holds
    a static member's rejoin 3 s twice): longer than the checkout's 5 s grace
    period, so an event parked before the kill would become an ``early`` deviation
    before the event it follows is read, and that checkout be cancelled."""


@dataclass
class Figures:
    """How the run went, for the test's output."""

    broker: str
    kill: Kill = Kill.IN_FLIGHT
    ready: list[float] = field(default_factory=list)  # seconds to /readyz, per life
    killed_at: int = 0  # outcomes seen at the kill
    in_flight: int = 0  # checkouts placed and without an outcome at the kill
    while_down: int = 0  # events the services published from the kill to /readyz 200
    back: float = 0.0  # seconds from the kill to the first outcome after it
    outcomes: float = 0.0  # seconds from the first order to the last outcome
    total: float = 0.0
    messages: int = 0  # messages the audit read
    deviations: int = 0

    def line(self) -> str:
        ready = ", ".join(f"{r:.1f}s" for r in self.ready)
        return (
            f"{self.broker}: ready {ready}; kill -9 {self.kill.value} with {self.in_flight} "
            f"checkouts under way, {self.while_down} events published while it was down, "
            f"outcomes again {self.back:.1f}s after; {ORDERS} outcomes in "
            f"{self.outcomes:.1f}s; {self.messages} messages, {self.deviations} deviations; "
            f"total {self.total:.1f}s"
        )


async def until(services: Services, done: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    book = services.book
    while not done():
        if services.failure is not None:
            raise AssertionError(f"a service failed: {services.failure!r}")
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(what)
        book.changed.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(book.changed.wait(), min(left, 0.5))


async def _place_orders(client: ServiceClient, numbers: range) -> None:
    """Place orders ``numbers`` at :data:`RATE`."""
    start = time.monotonic()
    for k, n in enumerate(numbers):
        await asyncio.sleep(max(0.0, start + k / RATE - time.monotonic()))
        for _ in range(2 if fate(n).twice else 1):
            await client.publish("order.placed", placed(n), key=order_id(n))


async def _outcomes(services: Services, numbers: Iterable[int], timeout: float, when: str) -> None:
    """Wait until orders ``numbers`` have their outcome; fail naming those without."""
    oids = [order_id(n) for n in numbers]
    book = services.book
    try:
        await until(services, lambda: all(map(book.outcomes, oids)), timeout, "outcomes")
    except TimeoutError:
        missing = [oid for oid in oids if not book.outcomes(oid)]
        raise AssertionError(
            f"{services.client.broker}: {len(missing)} of {len(oids)} checkouts have no outcome"
            f"{when} after {timeout:g}s:\n"
            + "\n".join([*map(book.describe, missing[:8]), *check_services(book)])
        ) from None


def _make_dir(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True)


async def run_checkouts(
    client: ServiceClient,
    workdir: Path,
    saga: Path,
    *,
    deadline: float,
    kill: Kill,
    env: dict[str, str] | None = None,
) -> Figures:
    """Run the scenario on ``client``'s broker with the checkout saga of ``saga``
    (whose steps have ``deadline`` seconds); raise on any violation."""
    t0 = time.monotonic()
    figures = Figures(client.broker, kill)
    _make_dir(workdir)
    slot = SidecarSlot(
        sagas=saga,
        broker_url=client.broker_url,
        store_url=f"sqlite:///{workdir / 'tracker.db'}",
        group=client.group,
        log=workdir / "tracker.log",
        env={"SAGAWIRE_LOG_LEVEL": LOG_LEVEL, **(env or {})},
    )
    services = Services(client)
    book = services.book
    async with httpx.AsyncClient(timeout=5.0) as http:
        try:
            slot.start()
            figures.ready.append(await slot.wait_ready(http))
            await services.start(EVERY)
            began = time.monotonic()
            if kill is Kill.IN_FLIGHT:
                placing = asyncio.create_task(_place_orders(client, range(ORDERS)))
                await until(services, lambda: book.finished() >= KILL_AFTER, 30.0, "outcomes")
            else:
                await _place_orders(client, range(FIRST_LOT))
                lot = [n for n in range(FIRST_LOT) if not fate(n).silent]
                await _outcomes(services, lot, 30.0, " before the kill")
                placing = asyncio.create_task(_place_orders(client, range(FIRST_LOT, ORDERS)))
            figures.killed_at = book.finished()
            figures.in_flight = sum(1 for oid in book.feed if not book.outcomes(oid))
            killed = time.monotonic()
            await slot.kill()
            assert slot.proc is not None and slot.proc.returncode == -signal.SIGKILL
            restarted_wall = time.time()
            slot.start()
            figures.ready.append(await slot.wait_ready(http))
            up = time.monotonic()
            figures.while_down = sum(
                1 for sent in book.sent.values() for at, _, _ in sent if killed <= at < up
            )
            assert figures.while_down, "the services published nothing while the tracker was down"
            await until(
                services,
                lambda: book.finished() > figures.killed_at,
                OUTCOME_TIMEOUT,
                "an outcome after the restart",
            )
            figures.back = time.monotonic() - killed
            await placing
            await _outcomes(services, range(ORDERS), OUTCOME_TIMEOUT, "")
            figures.outcomes = time.monotonic() - began
            await asyncio.sleep(QUIET)
            found = await check_run(
                http, slot.base, book, deadline=deadline, since=restarted_wall, broker=client.broker
            )
            figures.deviations = found
            figures.messages = sum(len(es) for es in book.feed.values())
            code = await slot.terminate()
            assert code == 0, f"the tracker exited {code} on SIGTERM:\n{slot.tail()}"
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n-- tracker log --\n{slot.digest()}") from None
        finally:
            await services.stop()
            slot.close()
    figures.total = time.monotonic() - t0
    return figures
