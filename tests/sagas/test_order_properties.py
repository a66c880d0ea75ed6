"""Property tests of the engine through the harness.

For random participant behaviour (success, business failure, silence), random
interleavings of replies across orders, duplicated deliveries and delays, every
order saga must end in the status its script implies, send each command once
per attempt (every attempt under the command's one id), and run compensations in
reverse order.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orchestrator import Status
from orchestrator.testing import SagaHarness
from sagas.order import order
from schemas.envelope import Envelope

OUTCOMES = {
    "inventory.reserve": ("ok", "fail", "silent"),
    "payment.charge": ("ok", "fail", "silent"),
    "shipping.schedule": ("ok", "fail", "silent"),
}
REPLIES = {
    "inventory.reserve": ("inventory.reserved", {"reservation_id": "r"}, "inventory.rejected"),
    "payment.charge": ("payment.charged", {"payment_id": "p"}, "payment.declined"),
    "shipping.schedule": ("shipping.scheduled", {"tracking_id": "t"}, "shipping.failed"),
    "inventory.release": ("inventory.released", {}, None),
    "payment.refund": ("payment.refunded", {}, None),
}
STEPS = ["inventory.reserve", "payment.charge", "shipping.schedule"]
COMPENSATION = {"inventory.reserve": "inventory.release", "payment.charge": "payment.refund"}


@dataclass
class Script:
    order_id: str
    fates: dict[str, str]

    def expected(self) -> tuple[Status, dict[str, int], list[str]]:
        """Final status, command counts, and the compensations in the order due."""
        counts: dict[str, int] = {}
        done: list[str] = []
        for cmd in STEPS:
            fate = self.fates[cmd]
            counts[cmd] = 2 if fate == "silent" else 1
            if fate != "ok":
                undo = [COMPENSATION[c] for c in reversed(done) if c in COMPENSATION]
                for u in undo:
                    counts[u] = 1
                counts["order.cancelled"] = 1
                return Status.COMPENSATED, counts, undo
            done.append(cmd)
        counts["order.completed"] = 1
        return Status.COMPLETED, counts, []


scripts = st.lists(
    st.fixed_dictionaries({cmd: st.sampled_from(OUTCOMES[cmd]) for cmd in STEPS}),
    min_size=1,
    max_size=4,
).map(lambda fates: [Script(f"o{i}", f) for i, f in enumerate(fates)])


def reply_for(cmd: Envelope, script: Script) -> Envelope | None:
    ok_type, extra, fail_type = REPLIES[cmd.type]
    fate = script.fates.get(cmd.type, "ok")
    data = {"order_id": script.order_id, **extra}
    if fate == "silent":
        return None
    if fate == "fail":
        assert fail_type is not None
        return Envelope.new(
            fail_type,
            {"order_id": script.order_id, "reason": "no"},
            id=f"re-{cmd.id}",
            source="test",
            correlationid=cmd.correlationid,
        )
    return Envelope.new(
        ok_type, data, id=f"re-{cmd.id}", source="test", correlationid=cmd.correlationid
    )


async def play(h: SagaHarness, plan: list[Script], data: st.DataObject) -> None:
    """Act out the participants' scripts; delays stay under the 30 s step timeout in total
    so that the only timeouts are the scripted silences."""
    delay_budget = 20.0
    by_id = {s.order_id: s for s in plan}
    starts = [
        Envelope.new(
            "order.placed",
            {
                "order_id": s.order_id,
                "customer_id": "c",
                "items": [{"sku": "x", "qty": 1}],
                "amount_cents": 5,
            },
            id=f"start-{s.order_id}",
            source="test",
        )
        for s in plan
    ]
    pool: list[Envelope] = list(starts)
    pool += [e for e in starts if data.draw(st.booleans(), label="duplicate start")]
    answered: set[tuple[str, int | None]] = set()  # a re-send keeps its id: (id, attempt)
    for _ in range(500):
        for cmd in h.sent():
            if (cmd.id, cmd.attempt) in answered or cmd.type not in REPLIES:
                continue
            answered.add((cmd.id, cmd.attempt))
            assert cmd.correlationid is not None
            reply = reply_for(cmd, by_id[cmd.correlationid])
            if reply is not None:
                pool.append(reply)
                if data.draw(st.booleans(), label="duplicate"):
                    pool.append(reply)
        if pool:
            env = pool.pop(data.draw(st.integers(0, len(pool) - 1), label="pick"))
            if delay_budget > 0 and data.draw(st.booleans(), label="delay"):
                seconds = data.draw(st.floats(0, 2), label="seconds")
                delay_budget -= seconds
                await h.advance(seconds)
            await h.deliver(env)
            continue
        states = [await h.instance(s.order_id) for s in plan]
        if all(i.status.final for i in states):
            return
        await h.advance(31)
    raise AssertionError("sagas did not finish")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(plan=scripts, data=st.data())
def test_every_order_ends_right(plan: list[Script], data: st.DataObject) -> None:
    async def check() -> None:
        async with SagaHarness(order) as h:
            await play(h, plan, data)
            for s in plan:
                status, counts, undo = s.expected()
                inst = await h.engine.instance("order", s.order_id)
                assert inst is not None and inst.status is status, (s, inst)
                mine = h.commands(correlation_id=s.order_id)
                seen: dict[str, int] = {}
                for e in mine:
                    seen[e.type] = seen.get(e.type, 0) + 1
                assert seen == counts, (s.fates, seen, counts)
                for kind in seen:  # one command per type: every attempt under one id
                    sends = [e for e in mine if e.type == kind]
                    assert len({e.id for e in sends}) == 1, (kind, sends)
                    if kind in REPLIES:
                        assert [e.attempt for e in sends] == list(range(1, len(sends) + 1))
                compensations = [
                    e.type for e in mine if e.type in ("inventory.release", "payment.refund")
                ]
                assert compensations == undo
            assert h.dead_letters() == []

    asyncio.run(check())
