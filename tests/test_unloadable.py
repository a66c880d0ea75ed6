"""An instance whose stored state no longer loads, and a transition whose records cannot
be written, cost their own messages a dead letter, never the engine its life.

The first happens in production when a state model changes incompatibly between two
deployments (a new required field, a narrower type) while instances are running: each
message for such an instance is dead-lettered, with why, and its timers wait; every
other instance goes on. The second when user code puts a value with no JSON form in the
state: that event is rejected and the instance stays as it was."""

from __future__ import annotations

import dataclasses
from typing import Any

from pydantic import BaseModel

from orchestrator import Event, StateMachine, Status, Timeout, When
from orchestrator.engine.deciding import UNLOADABLE_TIMER_RETRY
from orchestrator.testing import SagaHarness
from sagas.order import order

PLACED = {"customer_id": "c", "items": [{"sku": "s", "qty": 1}], "amount_cents": 100}


def spoil(h: SagaHarness, order_id: str) -> None:
    """Make the stored state of ``order_id`` invalid for the model, as a changed model
    would find it, and drop the engine's copy (as after a restart)."""
    key = ("order", order_id)
    record = h.store._instances[key]
    h.store._instances[key] = dataclasses.replace(record, data=b'{"order_id": "o-1"}')
    h.engine.working.distrust()


async def test_messages_for_an_unloadable_instance_are_dead_lettered_with_why() -> None:
    async with SagaHarness(order) as h:
        await h.send("order.placed", {"order_id": "o-1", **PLACED})
        await h.send("order.placed", {"order_id": "o-2", **PLACED})
        spoil(h, "o-1")
        await h.send("inventory.reserved", {"order_id": "o-1", "reservation_id": "r-1"})
        await h.send("inventory.reserved", {"order_id": "o-2", "reservation_id": "r-2"})

        (dead,) = h.dead_letters()
        assert "instance 'o-1'" in dead.reason
        assert "does not load as OrderState" in dead.reason
        assert "customer_id" in dead.reason  # the field at fault
        assert h.engine.stats.transitions == 3  # two starts and o-2's reply
        assert [c.correlationid for c in h.commands("payment.charge")] == ["o-2"]


async def test_a_timer_of_an_unloadable_instance_waits_instead_of_firing() -> None:
    async with SagaHarness(order) as h:
        await h.send("order.placed", {"order_id": "o-1", **PLACED})
        spoil(h, "o-1")
        await h.advance(31)  # the inventory step's timeout is due
        (timer,) = h.store._timers.values()
        assert timer.due == h.clock.now() - 1 + UNLOADABLE_TIMER_RETRY
        assert not h.dead_letters()
        assert len(h.commands("inventory.reserve")) == 1  # no retry was sent


async def test_a_duplicate_for_an_unloadable_instance_is_still_a_duplicate() -> None:
    async with SagaHarness(order) as h:
        await h.send("order.placed", {"order_id": "o-1", **PLACED})
        reply = h.event("inventory.reserved", {"order_id": "o-1", "reservation_id": "r"})
        await h.deliver(reply)
        spoil(h, "o-1")
        await h.deliver(reply)
        assert not h.dead_letters()


class Opaque(BaseModel):
    job_id: str
    thing: Any = None


class Started(BaseModel):
    job_id: str


def keep_object(state: Any, event: Any) -> dict[str, Any]:
    return {"thing": object()}  # valid for ``Any``, but has no JSON form


machine = StateMachine(
    "opaque",
    state=Opaque,
    events=[
        Event("job.started", Started, correlate="job_id"),
        Event("job.poked", correlate="job_id"),
    ],
    start="job.started",
    final={"done": "completed", "gave_up": "aborted"},
    transitions=[
        When("initial", "job.started").timer("wait", 30).to("waiting"),
        When("waiting", "job.poked").update(keep_object).to("done"),
        When("waiting", Timeout("wait")).to("gave_up"),
    ],
)


async def test_a_state_with_no_json_form_rejects_the_event_and_keeps_the_instance() -> None:
    async with SagaHarness(machine) as h:
        await h.send("job.started", {"job_id": "j"})
        await h.send("job.poked", {"job_id": "j"})
        (dead,) = h.dead_letters()
        assert "cannot be written" in dead.reason
        inst = await h.instance("j")
        assert (inst.state, inst.status) == ("waiting", Status.RUNNING)
