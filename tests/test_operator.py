"""An operator's actions on one instance (abort with compensation, retry, resume), on a
step saga, a flow and a hand-written state machine, through the harness's engine."""

from __future__ import annotations

from pydantic import BaseModel

from orchestrator import Event, StateMachine, Status, Timeout, When
from orchestrator.language.names import ABORT_EVENT
from orchestrator.testing import SagaHarness
from sagas.checkout import checkout
from sagas.order import order
from tests.sagas.test_checkout import OID, reserve
from tests.sagas.test_checkout import placed as checkout_placed
from tests.sagas.test_order import placed


async def test_abort_with_compensation_undoes_the_steps_done_in_reverse_order() -> None:
    async with SagaHarness(order) as h:
        await h.send("order.placed", placed())
        await h.send("inventory.reserved", {"order_id": "o-1", "reservation_id": "r-1"})
        await h.send("payment.charged", {"order_id": "o-1", "payment_id": "p-1"})
        result = await h.engine.operator.act("order", "o-1", "abort", reason="fraud", by="ops")
        assert result.refused is None and result.instance is not None
        assert result.instance.state == "compensating:payment"
        assert result.instance.meta.failure == "fraud"
        assert [c.type for c in h.sent()][-1] == "payment.refund"
        await h.send("payment.refunded", {"order_id": "o-1"})
        await h.send("inventory.released", {"order_id": "o-1"})
        assert (await h.instance("o-1")).status is Status.COMPENSATED
        entry = next(e for e in await h.history("o-1") if e.message_type == ABORT_EVENT)
        assert entry.note == "operator abort by ops: fraud"
        assert entry.from_state == "shipping"


async def test_actions_that_do_not_apply_are_refused_with_the_reason() -> None:
    async with SagaHarness(order) as h:
        await h.send("order.placed", placed())
        await h.send("inventory.rejected", {"order_id": "o-1", "reason": "none left"})
        done = await h.instance("o-1")
        assert done.status is Status.COMPENSATED
        for action in ("abort", "retry"):
            result = await h.engine.operator.act("order", "o-1", action)
            assert result.refused == "'order' instance 'o-1' is already compensated"
        resume = await h.engine.operator.act("order", "o-1", "resume")
        assert resume.refused is not None and "only a compensation_failed" in resume.refused
        assert (await h.instance("o-1")).version == done.version  # nothing written
        assert (await h.engine.operator.act("order", "nope", "abort")).instance is None


async def test_retry_sends_the_current_command_again_as_its_next_attempt() -> None:
    async with SagaHarness(order) as h:
        await h.send("order.placed", placed())
        result = await h.engine.operator.act("order", "o-1", "retry", reason="inventory is back")
        assert result.refused is None
        first, again = h.commands("inventory.reserve")
        assert again.id == first.id and (first.attempt, again.attempt) == (1, 2)
        await h.send("inventory.reserved", {"order_id": "o-1", "reservation_id": "r-1"})
        assert (await h.instance("o-1")).state == "payment"


async def test_resume_retries_the_failed_compensation_and_finishes_compensating() -> None:
    async with SagaHarness(order) as h:
        await h.send("order.placed", placed())
        await h.send("inventory.reserved", {"order_id": "o-1", "reservation_id": "r-1"})
        await h.send("payment.declined", {"order_id": "o-1", "reason": "nope"})
        await h.advance(120)  # the release is never acknowledged
        assert (await h.instance("o-1")).status is Status.COMPENSATION_FAILED
        retry = await h.engine.operator.act("order", "o-1", "retry")
        assert retry.refused == "'order' instance 'o-1' is already compensation_failed (resume it)"
        result = await h.engine.operator.act("order", "o-1", "resume", reason="fixed", by="ops")
        assert result.refused is None and result.instance is not None
        assert result.instance.status is Status.RUNNING
        assert result.instance.state == "compensating:inventory"
        releases = h.commands("inventory.release")
        assert [r.attempt for r in releases] == [1, 2, 1]  # counted afresh
        await h.send("inventory.released", {"order_id": "o-1"})
        assert (await h.instance("o-1")).status is Status.COMPENSATED


async def test_a_flow_abort_compensates_and_a_flow_resume_goes_on() -> None:
    async with SagaHarness(checkout) as h:
        await h.send("order.placed", checkout_placed())
        await reserve(h)
        result = await h.engine.operator.act("checkout", OID, "abort", reason="fraud")
        assert result.refused is None and result.instance is not None
        assert result.instance.meta.steps == {"inventory": "undoing", "payment": "abandoned"}
        assert [m.type for m in h.sent()] == ["inventory.release"]
        await h.advance(3600)  # the release is never acknowledged
        assert (await h.instance(OID)).status is Status.COMPENSATION_FAILED
        result = await h.engine.operator.act("checkout", OID, "resume", reason="fixed")
        assert result.refused is None and result.instance is not None
        assert result.instance.meta.steps["inventory"] == "undoing"
        await h.send("inventory.released", {"order_id": OID})
        assert (await h.instance(OID)).status is Status.COMPENSATED


class Ticket(BaseModel):
    ticket_id: str


machine = StateMachine(
    "ticket",
    state=Ticket,
    events=[Event("ticket.opened", Ticket)],
    start="ticket.opened",
    correlate="ticket_id",
    final={"cancelled": Status.COMPENSATED},
    transitions=[
        When("initial", "ticket.opened").send("ticket.ack", Ticket).timer("t", 60).to("open"),
        When("open", ABORT_EVENT).to("cancelled"),
        When("open", Timeout("t")).to("cancelled"),
    ],
)


async def test_a_state_machine_aborts_through_its_own_rows_or_refuses() -> None:
    async with SagaHarness(machine) as h:
        await h.send("ticket.opened", {"ticket_id": "t-1"})
        retry = await h.engine.operator.act("ticket", "t-1", "retry")
        assert retry.refused == "'ticket' instance 't-1': state 'open' sends no command to retry"
        result = await h.engine.operator.act("ticket", "t-1", "abort", reason="dup")
        assert result.instance is not None and result.instance.state == "cancelled"
