"""A participant's reply lost on the wire, the command re-sent: one effect, not two.

Issue 14, part 3: a lost ``payment.charged`` made the step time out and re-send
``payment.charge`` with a *new* id, so a payment service de-duplicating on the id
charged twice. Here the sidecar runs the order saga with 2 s step timeouts
(:mod:`tests.faults.sagas_fast`, 3 attempts); the participants publish the first
reply to every other order's ``payment.charge`` through a proxy that drops it
(:mod:`tests.faults.lossy`). The step's retry must re-send the same command (same
CloudEvents ``id``, ``attempt`` 2); the participant, seeing an id it knows, answers
with its first reply again, so it charges once; every order completes.

Bounded: NATS; full: NATS and RabbitMQ (Kafka's producer re-sends a lost batch
itself, see :mod:`tests.faults.lossy`).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.faults.checks import check_orders, verdict
from tests.faults.mode import FULL
from tests.faults.participants import Message
from tests.faults.report import duration, report
from tests.faults.rig import Rig, open_rig, select_brokers
from tests.faults.sagas_fast import ATTEMPTS, STEP_TIMEOUT
from tests.faults.sidecar import FAST_SAGA
from tests.faults.traffic import Orders, gather_each

pytestmark = [
    pytest.mark.fault,
    pytest.mark.slow,
    pytest.mark.broker("nats"),
    pytest.mark.broker("rabbitmq"),
]

BROKERS = ("nats", "rabbitmq") if FULL else ("nats",)
ORDERS = 10
RATE = 5.0
LOST_COMMAND = "payment.charge"


def _loses_once() -> Callable[[Message, str], bool]:
    """The first reply to every other order's payment.charge goes astray (once per
    order: a network loses a message, not every answer to a re-sent command)."""
    lost: set[str] = set()

    def lose(msg: Message, oid: str) -> bool:
        if msg.type != LOST_COMMAND or int(oid.rsplit("-", 1)[1]) % 2 == 0 or oid in lost:
            return False
        lost.add(oid)
        return True

    return lose


def _resends(rig: Rig, oid: str) -> list[Message]:
    return [m for m in rig.record.messages.get(oid, []) if m.type == LOST_COMMAND]


async def _scenario(broker: str, workdir: Path) -> None:
    async with open_rig(
        broker, workdir, store="sqlite", sagas=FAST_SAGA, lose=_loses_once()
    ) as rig:
        orders = Orders(rig, prefix="lost", http_every=0)
        await orders.steady(RATE, ORDERS / RATE)
        problems: list[str] = []
        start = time.monotonic()
        try:
            await check_orders(
                rig,
                orders.ids,
                timeout=ATTEMPTS * (STEP_TIMEOUT + 2) * 3 + 10,
                what=f"lost reply on {broker}: ",
            )
        except AssertionError as exc:
            problems.append(str(exc))
        lost = sorted({oid for oid, _ in rig.record.lost})
        sends = {oid: _resends(rig, oid) for oid in lost}
        gaps = [s[1].at - s[0].at for s in sends.values() if len(s) > 1]
        assert rig.loser is not None
        report(
            f"lost reply on {broker}: {rig.loser.lost} {LOST_COMMAND} replies dropped by the "
            f"proxy for {len(lost)} orders; re-sent after {duration(min(gaps, default=None))}"
            f"-{duration(max(gaps, default=None))}; effects per order "
            f"{dict(Counter(rig.record.effects[o, LOST_COMMAND] for o in orders.ids))}; "
            f"all done in {time.monotonic() - start:.1f}s"
        )
        if len(lost) != ORDERS // 2:
            problems.append(f"{len(lost)} replies lost, want {ORDERS // 2}")
        for oid, got in sends.items():
            ids = {m.id for m in got}
            attempts = [m.attempt for m in got]
            if len(got) < 2:
                problems.append(f"{oid}: {LOST_COMMAND} never re-sent after its reply was lost")
            elif len(ids) != 1 or 2 not in attempts:
                problems.append(
                    f"{oid}: the re-sent {LOST_COMMAND} is not the same command: ids "
                    f"{sorted(i[:8] for i in ids)}, attempts {attempts} (want one id, attempt 2)"
                )
        verdict(f"lost reply on {broker}", problems, rig)


@pytest.mark.timeout(120)
async def test_a_lost_reply_and_a_resent_command_act_once(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    brokers, _ = select_brokers(request, BROKERS)
    await gather_each({b: _scenario(b, tmp_path / b) for b in brokers})
