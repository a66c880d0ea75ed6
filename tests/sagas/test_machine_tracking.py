"""The state-machine form as a tracker: rows that observe and send nothing forward, a
deadline as a timer, and deviations recorded or, under ``fail``, handled by rows."""

from __future__ import annotations

from pydantic import BaseModel

from orchestrator import Deviation, Event, StateMachine, Status, Timeout, When
from orchestrator.testing import SagaHarness
from schemas.errors import DefinitionError


class Ticket(BaseModel):
    ticket_id: str


class Escalate(BaseModel):
    ticket_id: str


def tracker(deviations: str | None, with_rows: bool = True) -> object:
    rows = [
        When("initial", "ticket.opened").timer("answer", 60).to("open"),
        When("open", "ticket.answered").cancel("answer").timer("close", 600).to("answered"),
        When("answered", "ticket.closed").cancel("close").to("closed"),
        When("answered", Timeout("close")).to("closed"),
        When("open", Timeout("answer")).send("ticket.escalate", Escalate).to("escalated"),
    ]
    if with_rows:
        rows.append(
            When("open", Deviation()).cancel("answer").send("ticket.escalate", Escalate)
            .to("escalated")
        )  # fmt: skip
    return StateMachine(
        "tickets",
        state=Ticket,
        events=[
            Event("ticket.opened", Ticket),
            Event("ticket.answered", Ticket),
            Event("ticket.closed", Ticket),
        ],
        start="ticket.opened",
        final={"closed": Status.COMPLETED, "escalated": Status.COMPENSATED},
        transitions=rows,
        correlate="ticket_id",
        park_for=5,
        deviations=deviations,
    )


T = {"ticket_id": "t-1"}


async def test_an_event_its_state_never_takes_is_recorded() -> None:
    async with SagaHarness(tracker("record", with_rows=False)) as h:  # type: ignore[arg-type]
        await h.send("ticket.opened", T)
        await h.send("ticket.closed", T, id="close-1")  # closed before it was answered
        await h.advance(6)
        (dev,) = await h.deviations("t-1")
        assert dev.startswith("unexpected: ticket.closed close-1 not accepted in state 'open'")
        assert h.dead_letters() == []
        assert (await h.instance("t-1")).state == "open"


async def test_under_fail_the_deviation_rows_run() -> None:
    async with SagaHarness(tracker("fail")) as h:  # type: ignore[arg-type]
        await h.send("ticket.opened", T)
        await h.send("ticket.closed", T)
        await h.advance(6)
        inst = await h.instance("t-1")
        assert (inst.state, inst.status) == ("escalated", Status.COMPENSATED)
        assert [m.type for m in h.sent()] == ["ticket.escalate"]
        assert len(await h.deviations("t-1")) == 1


async def test_without_a_policy_it_is_dead_lettered_as_before() -> None:
    async with SagaHarness(tracker(None, with_rows=False)) as h:  # type: ignore[arg-type]
        await h.send("ticket.opened", T)
        await h.send("ticket.closed", T)
        await h.advance(61)  # parked 60 s, then dead-lettered; the deadline fired meanwhile
        assert len(h.dead_letters()) == 1


def test_deviation_rows_need_the_fail_policy() -> None:
    import pytest

    with pytest.raises(DefinitionError, match="runs only under deviations='fail'"):
        tracker("record")
    with pytest.raises(DefinitionError, match="deviations='sometimes' is not one of"):
        tracker("sometimes", with_rows=False)
