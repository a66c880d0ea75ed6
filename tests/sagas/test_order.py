"""The order saga through the harness: every path, bad input, duplicates, reordering."""

from __future__ import annotations

from typing import Any

import pytest

from orchestrator import Status
from orchestrator.testing import SagaHarness
from sagas.order import order

PLACED = {
    "order_id": "o-1",
    "customer_id": "c-1",
    "items": [{"sku": "A", "qty": 2}],
    "amount_cents": 1250,
}


def placed(order_id: str = "o-1") -> dict[str, Any]:
    return {**PLACED, "order_id": order_id}


@pytest.fixture
async def h() -> Any:
    async with SagaHarness(order) as harness:
        yield harness


async def test_happy_path(h: SagaHarness) -> None:
    start = await h.send("order.placed", placed(), correlation_id="o-1")
    (reserve,) = h.commands("inventory.reserve")
    assert reserve.data == {"order_id": "o-1", "items": [{"sku": "A", "qty": 2}]}
    assert reserve.correlationid == "o-1" and reserve.causationid == start.id
    assert reserve.attempt == 1
    await h.send(
        "inventory.reserved", {"order_id": "o-1", "reservation_id": "r-9"}, correlation_id="o-1"
    )
    assert h.commands("payment.charge")[0].data == {
        "order_id": "o-1",
        "customer_id": "c-1",
        "amount_cents": 1250,
    }
    await h.send("payment.charged", {"order_id": "o-1", "payment_id": "p-3"}, correlation_id="o-1")
    assert h.commands("shipping.schedule")[0].data == {"order_id": "o-1", "reservation_id": "r-9"}
    await h.send(
        "shipping.scheduled", {"order_id": "o-1", "tracking_id": "t-7"}, correlation_id="o-1"
    )
    inst = await h.instance("o-1")
    assert inst.status is Status.COMPLETED
    assert h.commands("order.completed")[0].data == {"order_id": "o-1", "tracking_id": "t-7"}
    history = await h.history("o-1")
    assert [r.to_state for r in history] == ["inventory", "payment", "shipping", "completed"]
    assert all(e.correlationid == "o-1" and e.causationid for e in h.sent())


async def test_correlation_falls_back_to_order_id(h: SagaHarness) -> None:
    await h.send("order.placed", placed("o-2"))  # no correlationid attribute
    await h.send("inventory.rejected", {"order_id": "o-2", "reason": "out of stock"})
    inst = await h.instance("o-2")
    assert inst.status is Status.COMPENSATED
    (cancelled,) = h.commands("order.cancelled")
    assert cancelled.data == {"order_id": "o-2", "reason": "out of stock"}
    assert cancelled.correlationid == "o-2"


async def test_payment_declined_releases_inventory(h: SagaHarness) -> None:
    await h.send("order.placed", placed())
    await h.send("inventory.reserved", {"order_id": "o-1", "reservation_id": "r-1"})
    await h.send("payment.declined", {"order_id": "o-1", "reason": "card expired"})
    assert h.commands("inventory.release")[0].data == {"order_id": "o-1", "reservation_id": "r-1"}
    assert (await h.instance("o-1")).state == "compensating:inventory"
    await h.send("inventory.released", {"order_id": "o-1"})
    assert (await h.instance("o-1")).status is Status.COMPENSATED
    assert h.commands("order.cancelled")[0].data["reason"] == "card expired"


async def test_shipping_failure_compensates_in_reverse_order(h: SagaHarness) -> None:
    await h.send("order.placed", placed())
    await h.send("inventory.reserved", {"order_id": "o-1", "reservation_id": "r-1"})
    await h.send("payment.charged", {"order_id": "o-1", "payment_id": "p-1"})
    await h.send("shipping.failed", {"order_id": "o-1", "reason": "no courier"})
    await h.send("payment.refunded", {"order_id": "o-1"})
    await h.send("inventory.released", {"order_id": "o-1"})
    types = [e.type for e in h.sent()]
    assert types[-3:] == ["payment.refund", "inventory.release", "order.cancelled"]
    assert (await h.instance("o-1")).status is Status.COMPENSATED


async def test_timeout_retries_then_compensates(h: SagaHarness) -> None:
    await h.send("order.placed", placed())
    await h.send("inventory.reserved", {"order_id": "o-1", "reservation_id": "r-1"})
    await h.advance(30)
    assert len(h.commands("payment.charge")) == 1  # waiting out the backoff
    await h.advance(1)
    first, second = h.commands("payment.charge")
    assert (first.attempt, second.attempt) == (1, 2)
    # the same command again: same id and data, the next attempt (tests/test_resend.py)
    assert first.id == second.id and first.data == second.data
    await h.advance(31)
    assert h.commands("inventory.release")
    await h.send("inventory.released", {"order_id": "o-1"})
    inst = await h.instance("o-1")
    assert inst.status is Status.COMPENSATED
    assert h.commands("order.cancelled")[0].data["reason"] == (
        "step 'payment' timed out after 2 attempt(s)"
    )


async def test_a_reply_during_backoff_is_still_accepted(h: SagaHarness) -> None:
    await h.send("order.placed", placed())
    await h.advance(30.5)
    await h.send("inventory.reserved", {"order_id": "o-1", "reservation_id": "r-1"})
    await h.advance(5)
    assert len(h.commands("inventory.reserve")) == 1, "retry fired after the reply"
    assert (await h.instance("o-1")).state == "payment"


async def test_compensation_that_never_answers_ends_compensation_failed(h: SagaHarness) -> None:
    await h.send("order.placed", placed())
    await h.send("inventory.reserved", {"order_id": "o-1", "reservation_id": "r-1"})
    await h.send("payment.declined", {"order_id": "o-1", "reason": "nope"})
    await h.advance(120)
    inst = await h.instance("o-1")
    assert inst.status is Status.COMPENSATION_FAILED
    assert len(h.commands("inventory.release")) == 2


async def test_duplicates_are_no_ops(h: SagaHarness) -> None:
    start = h.event("order.placed", placed(), correlation_id="o-1")
    await h.deliver(start, start)
    await h.deliver(start)
    reply = h.event(
        "inventory.reserved", {"order_id": "o-1", "reservation_id": "r"}, correlation_id="o-1"
    )
    await h.deliver(reply, reply)
    assert len(h.commands("inventory.reserve")) == 1
    assert len(h.commands("payment.charge")) == 1
    assert (await h.instance("o-1")).version == 2
    assert h.dead_letters() == []


async def test_reply_before_start_is_parked_then_applied(h: SagaHarness) -> None:
    await h.send("inventory.reserved", {"order_id": "o-1", "reservation_id": "r-1"})
    assert h.dead_letters() == []
    await h.send("order.placed", placed())
    inst = await h.instance("o-1")
    assert inst.state == "payment", "the parked reply was applied once the instance appeared"


async def test_reply_before_start_in_the_same_batch(h: SagaHarness) -> None:
    early = h.event("inventory.reserved", {"order_id": "o-1", "reservation_id": "r-1"})
    start = h.event("order.placed", placed())
    await h.deliver(early, start)
    assert (await h.instance("o-1")).state == "payment"


async def test_unmatched_event_is_dead_lettered_after_parking(h: SagaHarness) -> None:
    await h.send("payment.charged", {"order_id": "ghost", "payment_id": "p"})
    await h.advance(59)
    assert h.dead_letters() == []
    await h.advance(2)
    (dl,) = h.dead_letters()
    assert "ghost" in dl.reason and dl.origin == "payment.charged"


async def test_event_for_a_finished_instance_is_dead_lettered(h: SagaHarness) -> None:
    await h.send("order.placed", placed())
    await h.send("inventory.rejected", {"order_id": "o-1", "reason": "none left"})
    await h.send("inventory.reserved", {"order_id": "o-1", "reservation_id": "late"})
    (dl,) = h.dead_letters()
    assert "already compensated" in dl.reason


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"\x00\xffnot json", "body is not JSON"),
        (b'{"specversion": "1.0", "type": "order.placed"}', "attribute 'id'"),
        (b'["a"]', "JSON object"),
    ],
)
async def test_malformed_bytes_are_dead_lettered_untouched(
    h: SagaHarness, body: bytes, reason: str
) -> None:
    await h.send_raw("order.placed", body)
    (dl,) = h.dead_letters()
    assert dl.body == body and reason in dl.reason and dl.origin == "order.placed"


async def test_wrong_schema_is_dead_lettered_and_nothing_half_applied(h: SagaHarness) -> None:
    await h.send("order.placed", {**PLACED, "amount_cents": "lots"})
    (dl,) = h.dead_letters()
    assert "data 'amount_cents'" in dl.reason
    await h.send("order.placed", placed("o-9"))
    await h.send("inventory.reserved", {"order_id": "o-9"})  # reservation_id missing
    assert "data 'reservation_id'" in h.dead_letters()[1].reason
    assert (await h.instance("o-9")).state == "inventory"


async def test_unknown_event_type_is_dead_lettered(h: SagaHarness) -> None:
    # subscribe the engine's group to a type no saga consumes, as a router might
    h.broker.bind(h.topology.group, ["order.shredded"])
    await h.send("order.shredded", {"order_id": "o-1"})
    (dl,) = h.dead_letters()
    assert "unknown event type 'order.shredded'" in dl.reason


async def test_duplicate_start_with_a_new_id_is_dead_lettered(h: SagaHarness) -> None:
    await h.send("order.placed", placed())
    await h.send("order.placed", placed())
    (dl,) = h.dead_letters()
    assert "duplicate start" in dl.reason
    assert len(h.commands("inventory.reserve")) == 1


async def test_emitted_ids_are_deterministic() -> None:
    async def run() -> list[str]:
        async with SagaHarness(order) as h:
            await h.send("order.placed", placed(), id="fixed-1")
            await h.send(
                "inventory.reserved", {"order_id": "o-1", "reservation_id": "r"}, id="fixed-2"
            )
            return [e.id for e in h.sent()]

    assert await run() == await run()


async def test_an_operator_can_abort_a_running_instance(h: SagaHarness) -> None:
    await h.send("order.placed", placed())
    inst = await h.engine.abort("order", "o-1", "customer called")
    assert inst is not None and inst.status is Status.ABORTED
    assert inst.meta.failure == "customer called"
    await h.advance(100)  # its timers were cancelled: nothing more is sent
    assert [e.type for e in h.sent()] == ["inventory.reserve"]
    assert (await h.history("o-1"))[-1].to_state == "aborted"
    assert await h.engine.abort("order", "nope") is None
