"""The end-to-end scenario every broker runs, and what it asserts.

``sagawire run`` (a real subprocess, SQLite store) orchestrates the order saga of
``sagas/order.py`` while raw participants (:mod:`tests.e2e.clients`) play
inventory, payment and shipping. Every order's fate is a pure function of its
number: some are out of stock, some have their card declined, some find no
courier, the rest complete. On top of that the participants misbehave the way
real ones do: they deliver some replies twice (same id), repeat a reply after the
saga finished, place some orders twice, and put bytes that are not JSON, JSON
that is not a CloudEvent, an unknown type and an order with a bad payload on the
destinations the sidecar consumes.

A run may stop the sidecar half way (:class:`Restart`): ``kill -9``, or SIGTERM
under load (which must exit 0 after finishing its batch), then start it again on
the same SQLite file and consumer group. What must hold in every run:

* every order ends as its fate says (``order.completed`` with the tracking id, or
  ``order.cancelled`` with the participant's reason), exactly once;
* per order, the commands came in the saga's order, compensations in reverse, each
  with the right payload, ``correlationid`` and ``causationid``;
* per (order, command type) there is exactly one message id (a re-send after a
  timeout keeps it, with the next ``attempt``); one send (id and attempt) is seen more
  than once only after a kill -9 (the outbox re-published it): a graceful stop records
  what it published, so nothing goes out twice;
* every malformed message is in ``sagawire.deadletter`` with its original bytes, a
  reason and its original destination; nothing else is;
* SIGTERM ends the sidecar with exit code 0.

The pieces, in the order a run uses them: :mod:`tests.e2e.clients` (one raw client
per broker), :mod:`tests.e2e.sidecar` (the process), :mod:`tests.e2e.scenario`
(orders, fates, bytes), :mod:`tests.e2e.participants` (the services and their
ledger), :mod:`tests.e2e.checks` (the assertions); this module runs them.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

import httpx

from tests.e2e.checks import check_dead_letters, check_instances, check_outcomes
from tests.e2e.clients import CONTENT_TYPE, RawClient
from tests.e2e.participants import Ledger, Participants
from tests.e2e.scenario import (
    ORDERS,
    WATCHED,
    malformed,
    order_id,
    placed,
    placed_over_http,
    placed_twice,
)
from tests.e2e.sidecar import Sidecar

STOP_AFTER = 120
"""A run with a :class:`Restart` stops the sidecar once the participants have seen
this many distinct commands (of the 280 a run sends): about half way, on every broker."""
OUTCOME_TIMEOUT = 60.0
QUIET = 1.0
"""Seconds of listening after the last expected message, to catch extra ones."""


class Restart(Enum):
    """How the sidecar is stopped half way through a run, before it is started again."""

    KILL = "kill -9"
    TERM = "SIGTERM"


@dataclass
class Timings:
    """How long the phases took, and how much went twice (for the test's output)."""

    ready: list[float] = field(default_factory=list)
    stopped_at: int | None = None  # outcomes seen when the sidecar was stopped half way
    outcomes: float = 0.0
    total: float = 0.0
    commands: int = 0
    redelivered: int = 0  # command/outcome ids the participants saw more than once
    dead_letters: int = 0


async def _until(
    ledger: Ledger, participants: Participants, done: Callable[[], bool], timeout: float, what: str
) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        if participants.error is not None:
            raise AssertionError(f"participants failed: {participants.error!r}")
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(what)
        ledger.changed.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(ledger.changed.wait(), min(left, 0.5))


async def run_scenario(
    client: RawClient, tmp_path: Path, restart: Restart | None = None, store: str | None = None
) -> Timings:
    """Run the whole scenario against ``client``'s broker (and ``store``, SQLite by
    default); raise on any violation."""
    crash = restart is Restart.KILL
    t0 = time.monotonic()
    timings = Timings()
    store = store or f"sqlite:///{tmp_path / 'e2e.db'}"
    sidecars: list[Sidecar] = []

    def start_sidecar() -> Sidecar:
        s = Sidecar(
            client.broker_url, store, client.group, tmp_path / f"sidecar-{len(sidecars)}.log"
        )
        sidecars.append(s)
        return s

    participants = Participants(client)
    ledger = participants.ledger
    async with httpx.AsyncClient(timeout=5.0) as http:
        try:
            sidecar = start_sidecar()
            timings.ready.append(await sidecar.wait_ready(http))
            await client.start(WATCHED)
            participants.start()

            bad = malformed()
            for n in range(ORDERS):
                body = placed(n)
                if placed_over_http(n):
                    r = await http.post(
                        f"{sidecar.base}/events",
                        content=body,
                        headers={"content-type": CONTENT_TYPE},
                    )
                    assert r.status_code == 202, (r.status_code, r.text)
                else:
                    await client.publish("order.placed", body, key=order_id(n))
                if placed_twice(n):
                    await client.publish("order.placed", body, key=order_id(n))
                if n % 20 == 10 and bad:
                    destination, junk = bad.pop()
                    await client.publish(destination, junk)
            for destination, junk in bad:
                await client.publish(destination, junk)

            if restart is not None:
                await _until(
                    ledger,
                    participants,
                    lambda: ledger.distinct_commands() >= STOP_AFTER,
                    OUTCOME_TIMEOUT,
                    f"{STOP_AFTER} commands before the {restart.value}",
                )
                assert ledger.finished() < ORDERS, (
                    f"every order finished before the {restart.value}"
                )
                timings.stopped_at = ledger.finished()
                if restart is Restart.KILL:
                    assert await sidecar.kill() == -signal.SIGKILL
                else:
                    code = await sidecar.terminate()
                    assert code == 0, f"exit {code} on SIGTERM under load:\n{sidecar.tail()}"
                sidecar = start_sidecar()
                timings.ready.append(await sidecar.wait_ready(http))

            try:
                await _until(
                    ledger,
                    participants,
                    lambda: ledger.finished() >= ORDERS,
                    OUTCOME_TIMEOUT,
                    "outcomes",
                )
            except TimeoutError:
                missing = [order_id(n) for n in range(ORDERS) if order_id(n) not in ledger.outcomes]
                details = "\n".join(ledger.describe(oid) for oid in missing[:10])
                states = [await _instance(http, sidecar, oid) for oid in missing[:5]]
                raise AssertionError(
                    f"{len(missing)} of {ORDERS} orders have no outcome after "
                    f"{OUTCOME_TIMEOUT}s:\n{details}\ninstances: {states}\n"
                    f"sidecar log:\n{sidecar.tail()}"
                ) from None
            timings.outcomes = time.monotonic() - t0
            expected_dead = {junk for _, junk in malformed()}
            with contextlib.suppress(TimeoutError):
                await _until(
                    ledger,
                    participants,
                    lambda: expected_dead <= {d.body for d in ledger.dead},
                    10.0,
                    "dead letters",
                )
            await asyncio.sleep(QUIET)

            check_outcomes(ledger, crash=crash)
            check_dead_letters(ledger, crash=crash)
            await check_instances(http, sidecar)

            code = await sidecar.terminate()
            assert code == 0, f"sidecar exited {code} on SIGTERM:\n{sidecar.tail()}"
            seen = Counter(
                m.id for ms in (*ledger.commands.values(), *ledger.outcomes.values()) for m in ms
            )
            timings.commands = sum(len(c) for c in ledger.commands.values())
            timings.redelivered = sum(1 for k in seen.values() if k > 1)
            timings.dead_letters = len(ledger.dead)
        finally:
            await participants.stop()
            for s in sidecars:
                s.close()
    timings.total = time.monotonic() - t0
    return timings


async def _instance(http: httpx.AsyncClient, sidecar: Sidecar, oid: str) -> Any:
    with contextlib.suppress(Exception):
        r = await http.get(f"{sidecar.base}/instances/order/{oid}")
        body = r.json()
        return {k: body.get(k) for k in ("state", "status", "failure", "error")}
    return None
