"""The checkout choreography (sagas/checkout.py) and the flow form under the harness:
observed steps and their deadlines, compensation in reverse order, reordering within
the grace period, deviations recorded (and, under the ``fail`` policy, failing the
flow), parallel branches and a hybrid of commanded and observed steps."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel

from orchestrator import Event, Retry, Send, Status, Step, StepSaga
from orchestrator.testing import SagaHarness
from sagas.checkout import DEADLINE, GRACE, checkout
from schemas.errors import DefinitionError

OID = "o-1"


def placed(oid: str = OID) -> dict[str, Any]:
    return {
        "order_id": oid,
        "customer_id": "c-1",
        "items": [{"sku": "s-1", "qty": 2}],
        "amount_cents": 1500,
    }


async def reserve(h: SagaHarness, oid: str = OID, **kw: Any) -> None:
    await h.send("inventory.reserved", {"order_id": oid, "reservation_id": "r-1"}, **kw)


async def charge(h: SagaHarness, oid: str = OID, **kw: Any) -> None:
    await h.send("payment.charged", {"order_id": oid, "payment_id": "p-1"}, **kw)


async def test_a_checkout_that_goes_well_sends_nothing_but_its_outcome() -> None:
    async with SagaHarness(checkout) as h:
        start = await h.send("order.placed", placed())
        assert h.sent() == []
        assert (await h.instance(OID)).state == "inventory"
        await reserve(h)
        await charge(h)
        last = await h.send("shipping.scheduled", {"order_id": OID, "tracking_id": "t-9"})
        inst = await h.instance(OID)
        assert inst.status is Status.COMPLETED
        (done,) = h.sent()
        assert done.type == "checkout.completed"
        assert done.data == {"order_id": OID, "tracking_id": "t-9"}
        assert done.correlationid == OID
        assert done.causationid == last.id
        assert start.id != last.id
        assert await h.deviations(OID) == []


async def test_a_failed_step_compensates_what_was_done_in_reverse_order() -> None:
    async with SagaHarness(checkout) as h:
        await h.send("order.placed", placed())
        await reserve(h)
        await charge(h)
        await h.send("shipping.failed", {"order_id": OID, "reason": "no carrier"})
        (refund,) = h.sent()
        assert (refund.type, refund.data) == (
            "payment.refund",
            {"order_id": OID, "payment_id": "p-1"},
        )
        assert refund.attempt == 1
        assert (await h.instance(OID)).state == "compensating:payment"
        await h.send("payment.refunded", {"order_id": OID})
        release = h.sent()[-1]
        assert (release.type, release.data) == (
            "inventory.release",
            {"order_id": OID, "reservation_id": "r-1"},
        )
        await h.send("inventory.released", {"order_id": OID})
        inst = await h.instance(OID)
        assert inst.status is Status.COMPENSATED
        cancelled = h.sent()[-1]
        assert cancelled.type == "checkout.cancelled"
        assert cancelled.data == {"order_id": OID, "reason": "no carrier"}


async def test_a_missed_deadline_fails_the_flow() -> None:
    async with SagaHarness(checkout) as h:
        await h.send("order.placed", placed())
        await reserve(h)
        await h.advance(DEADLINE + 1)  # payment never came
        (release,) = h.sent()
        assert release.type == "inventory.release"
        inst = await h.instance(OID)
        assert inst.meta.failure == f"step 'payment' missed its deadline of {DEADLINE:g}s"
        await h.send("inventory.released", {"order_id": OID})
        assert h.sent()[-1].data["reason"] == inst.meta.failure


async def test_a_failure_of_the_first_step_has_nothing_to_undo() -> None:
    async with SagaHarness(checkout) as h:
        await h.send("order.placed", placed())
        await h.send("inventory.rejected", {"order_id": OID, "reason": "out of stock"})
        assert (await h.instance(OID)).status is Status.COMPENSATED
        assert [m.type for m in h.sent()] == ["checkout.cancelled"]


async def test_events_reordered_by_the_broker_are_applied_in_their_order() -> None:
    async with SagaHarness(checkout) as h:
        await h.send("order.placed", placed())
        await charge(h)  # payment's event first: parked for its step
        assert (await h.instance(OID)).state == "inventory"
        await reserve(h)
        inst = await h.instance(OID)
        assert inst.state == "shipping"
        assert inst.data.payment_id == "p-1"  # type: ignore[attr-defined]
        assert await h.deviations(OID) == []
        assert h.dead_letters() == []


async def test_an_event_still_early_after_the_grace_period_is_a_deviation() -> None:
    async with SagaHarness(checkout) as h:
        await h.send("order.placed", placed())
        await charge(h, id="charge-1")
        await h.advance(GRACE + 1)
        (dev,) = await h.deviations(OID)
        assert dev.startswith("early: payment.charged charge-1")
        assert h.engine.stats.deviations == {("checkout", "early"): 1}
        assert h.dead_letters() == []  # a deviation is not a bad message
        assert (await h.instance(OID)).state == "inventory"  # recorded only: the flow goes on


async def test_a_second_different_event_for_a_step_done_is_a_deviation() -> None:
    async with SagaHarness(checkout) as h:
        await h.send("order.placed", placed())
        await reserve(h, id="r-a")
        await reserve(h, id="r-b")  # another reservation for the same step
        await h.send("inventory.rejected", {"order_id": OID, "reason": "oops"}, id="rej-1")
        assert await h.deviations(OID) == [
            "repeated: inventory.reserved r-b for step 'inventory' again",
            "contradicting: inventory.rejected rej-1 for step 'inventory' after the step was done",
        ]
        assert (await h.instance(OID)).state == "payment"
        assert h.sent() == []


async def test_under_the_fail_policy_a_deviation_fails_the_flow() -> None:
    strict = _checkout(deviations="fail")
    async with SagaHarness(strict) as h:
        await h.send("order.placed", placed())
        await reserve(h)
        await h.send("inventory.rejected", {"order_id": OID, "reason": "oops"}, id="rej-1")
        assert (await h.instance(OID)).state == "compensating"  # payment may still come
        await h.advance(DEADLINE + 1)
        (release,) = h.sent()
        assert release.type == "inventory.release"
        inst = await h.instance(OID)
        assert inst.meta.failure is not None and "deviation (contradicting)" in inst.meta.failure
        assert len(await h.deviations(OID)) == 1


async def test_events_after_the_end_are_recorded_not_dead_lettered() -> None:
    async with SagaHarness(checkout) as h:
        await h.send("order.placed", placed())
        await h.send("inventory.rejected", {"order_id": OID, "reason": "out of stock"})
        await reserve(h, id="late-1")
        assert await h.deviations(OID) == [
            "late: inventory.reserved late-1 arrived after the saga ended (compensated)"
        ]
        assert h.dead_letters() == []


async def test_an_unanswered_compensation_ends_in_compensation_failed() -> None:
    async with SagaHarness(checkout) as h:
        await h.send("order.placed", placed())
        await reserve(h)
        await h.send("payment.declined", {"order_id": OID, "reason": "card declined"})
        await h.advance(DEADLINE + 1)
        assert (await h.instance(OID)).status is Status.COMPENSATION_FAILED


# -- the flow form beyond the shipped example -----------------------------------------


class Job(BaseModel):
    job_id: str
    a_id: str | None = None
    b_id: str | None = None
    c_id: str | None = None


class Done(BaseModel):
    job_id: str


class Undo(BaseModel):
    job_id: str


def _step(name: str, after: list[str] | None = None, **kw: Any) -> Step:
    return Step(
        name,
        success=Event(f"{name}.done", Done),
        failure=Event(f"{name}.failed", Done),
        compensate=Send(f"{name}.undo", Undo),
        compensated_by=Event(f"{name}.undone", Done),
        timeout=5,
        after=after,
        **kw,
    )


def _fork(**kw: Any) -> Any:
    """a, then b and c side by side, then d after both."""
    return StepSaga(
        "fork",
        state=Job,
        start=Event("job.started", Job),
        correlate="job_id",
        steps=[_step("a"), _step("b", ["a"]), _step("c", ["a"]), _step("d", ["b", "c"])],
        on_completed=Send("job.finished", Done),
        **kw,
    )


async def test_parallel_branches_join_before_the_step_after_both() -> None:
    async with SagaHarness(_fork()) as h:
        await h.send("job.started", {"job_id": "j"})
        await h.send("a.done", {"job_id": "j"})
        assert (await h.instance("j")).state == "b+c"
        await h.send("c.done", {"job_id": "j"})
        assert (await h.instance("j")).state == "b"
        await h.send("b.done", {"job_id": "j"})
        assert (await h.instance("j")).state == "d"
        await h.send("d.done", {"job_id": "j"})
        assert (await h.instance("j")).status is Status.COMPLETED
        assert [m.type for m in h.sent()] == ["job.finished"]


async def test_a_branch_failing_waits_for_its_sibling_then_undoes_in_reverse_order() -> None:
    async with SagaHarness(_fork()) as h:
        await h.send("job.started", {"job_id": "j"})
        await h.send("a.done", {"job_id": "j"})
        await h.send("c.failed", {"job_id": "j"})
        assert (await h.instance("j")).state == "compensating"  # b is still out
        assert h.sent() == []
        await h.send("b.done", {"job_id": "j"})  # done after all: undone first
        assert [m.type for m in h.sent()] == ["b.undo"]
        await h.send("b.undone", {"job_id": "j"})
        assert [m.type for m in h.sent()] == ["b.undo", "a.undo"]
        await h.send("a.undone", {"job_id": "j"})
        assert (await h.instance("j")).status is Status.COMPENSATED
        assert await h.deviations("j") == []


async def test_a_sibling_out_of_time_after_a_failure_has_nothing_to_undo() -> None:
    async with SagaHarness(_fork()) as h:
        await h.send("job.started", {"job_id": "j"})
        await h.send("a.done", {"job_id": "j"})
        await h.send("c.failed", {"job_id": "j"})
        await h.advance(6)  # b's deadline passes
        assert [m.type for m in h.sent()] == ["a.undo"]


class Reserve(BaseModel):
    job_id: str


async def test_a_hybrid_commands_one_step_and_observes_the_next() -> None:
    hybrid = StepSaga(
        "hybrid",
        state=Job,
        start=Event("job.started", Job),
        correlate="job_id",
        steps=[
            Step(
                "a",
                send=Send("a.do", Reserve),
                success=Event("a.done", Done),
                failure=Event("a.failed", Done),
                compensate=Send("a.undo", Undo),
                compensated_by=Event("a.undone", Done),
                timeout=5,
                retry=Retry(attempts=2, backoff=1.0),
            ),
            _step("b"),  # nobody commands b: another service reacts to a.done
        ],
    )
    async with SagaHarness(hybrid) as h:
        await h.send("job.started", {"job_id": "j"})
        (first,) = h.sent()
        assert (first.type, first.attempt) == ("a.do", 1)
        await h.advance(6.5)  # no reply in 5 s, then 1 s of backoff: re-sent, same id
        again = h.sent()[-1]
        assert (again.id, again.attempt) == (first.id, 2)
        await h.send("a.done", {"job_id": "j"})
        await h.send("b.failed", {"job_id": "j"})
        assert h.sent()[-1].type == "a.undo"


@pytest.mark.parametrize(
    ("steps", "problem"),
    [
        ([Step("a", success=Event("a.done"))], "waits with no deadline"),
        (
            [Step("a", success=Event("a.done"), timeout=5, retry=Retry(attempts=2))],
            "nothing to re-send",
        ),
        ([Step("a", success=Event("a.done"), timeout=5, after=["z"])], "'z', which is not a step"),
        (
            [
                Step("a", success=Event("a.done"), timeout=5, after=["b"]),
                Step("b", success=Event("b.done"), timeout=5, after=["a"]),
            ],
            "in a circle (",
        ),
    ],
)
def test_a_flow_that_cannot_run_fails_at_load(steps: list[Step], problem: str) -> None:
    with pytest.raises(DefinitionError, match=problem.replace("(", r"\(")):
        StepSaga("bad", state=Job, start=Event("job.started", Job), correlate="job_id", steps=steps)


def test_the_checkout_graph_shows_its_steps() -> None:
    graph = checkout.to_mermaid()
    assert graph.startswith("flowchart LR")
    assert "step_inventory --> step_payment" in graph
    assert "inventory.release" in graph


def _checkout(**kw: Any) -> Any:
    """The shipped checkout with other settings (same steps and events)."""
    from sagas import checkout as module

    return StepSaga(
        "checkout",
        state=module.Checkout,
        start=Event("order.placed", module.OrderPlaced),
        correlate="order_id",
        steps=[
            Step(
                "inventory",
                success=Event("inventory.reserved", module.InventoryReserved),
                failure=Event("inventory.rejected", module.InventoryRejected),
                compensate=Send("inventory.release", module.ReleaseInventory),
                compensated_by=Event("inventory.released", module.InventoryReleased),
                timeout=DEADLINE,
            ),
            Step(
                "payment",
                success=Event("payment.charged", module.PaymentCharged),
                failure=Event("payment.declined", module.PaymentDeclined),
                timeout=DEADLINE,
            ),
        ],
        on_compensated=Send("checkout.cancelled", module.CheckoutCancelled),
        park_for=GRACE,
        **kw,
    )


async def test_a_flow_reloaded_from_the_store_goes_on_where_it_was() -> None:
    """Each step's status and the done order live in the stored instance, not only in
    the engine's memory: after the cache is dropped (a restart) the flow goes on."""
    async with SagaHarness(checkout) as h:
        await h.send("order.placed", placed())
        await reserve(h)
        await charge(h)
        h.engine.working.distrust()  # as after a restart: the next event reads the store
        inst = await h.instance(OID)
        assert inst.meta.steps == {"inventory": "done", "payment": "done", "shipping": "active"}
        assert inst.meta.done == ("inventory", "payment")
        await h.send("shipping.failed", {"order_id": OID, "reason": "no carrier"})
        assert [m.type for m in h.sent()] == ["payment.refund"]


async def test_an_operator_abort_stops_a_flow_where_it_is() -> None:
    async with SagaHarness(checkout) as h:
        await h.send("order.placed", placed())
        await reserve(h)
        inst = await h.engine.abort("checkout", OID, "fraud")
        assert inst is not None and inst.status is Status.ABORTED
        assert inst.meta.steps == {"inventory": "done", "payment": "active"}
        assert h.sent() == []
        await h.advance(DEADLINE + 1)  # its timers went with it
        assert h.sent() == []
