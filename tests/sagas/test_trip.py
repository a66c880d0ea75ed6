"""The trip saga (state-machine form): parallel legs, any reply order, late replies."""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from orchestrator import Status
from orchestrator.testing import SagaHarness
from sagas.trip import LEGS, trip

REQUEST = {"trip_id": "t-1", "customer_id": "c", "destination": "Oslo", "nights": 3}


def booked(leg: str) -> tuple[str, dict[str, Any]]:
    return f"{leg}.booked", {"trip_id": "t-1", f"{leg}_ref": leg.upper()}


@pytest.fixture
async def h() -> Any:
    async with SagaHarness(trip) as harness:
        yield harness


async def test_requests_all_three_legs_at_once(h: SagaHarness) -> None:
    await h.send("trip.requested", REQUEST)
    assert [e.type for e in h.sent()] == ["flight.book", "hotel.book", "car.book"]
    assert h.commands("hotel.book")[0].data == {
        "trip_id": "t-1",
        "destination": "Oslo",
        "nights": 3,
    }


@pytest.mark.parametrize("order", list(itertools.permutations(LEGS)))
async def test_confirms_whatever_order_the_legs_answer_in(
    h: SagaHarness, order: tuple[str, ...]
) -> None:
    await h.send("trip.requested", REQUEST)
    for leg in order:
        await h.send(*booked(leg))
    inst = await h.instance("t-1")
    assert (inst.state, inst.status) == ("confirmed", Status.COMPLETED)
    (confirmed,) = h.commands("trip.confirmed")
    assert confirmed.data == {
        "trip_id": "t-1",
        "flight_ref": "FLIGHT",
        "hotel_ref": "HOTEL",
        "car_ref": "CAR",
    }


async def test_a_failed_leg_cancels_booked_ones_and_late_ones(h: SagaHarness) -> None:
    await h.send("trip.requested", REQUEST)
    await h.send(*booked("hotel"))
    await h.send("flight.failed", {"trip_id": "t-1", "reason": "sold out"})
    assert [e.data["ref"] for e in h.commands("hotel.cancel")] == ["HOTEL"]
    assert not h.commands("car.cancel")
    await h.send(*booked("car"))  # a late reply: book -> cancel at once
    assert [e.data["ref"] for e in h.commands("car.cancel")] == ["CAR"]
    await h.send("hotel.cancelled", {"trip_id": "t-1"})
    assert (await h.instance("t-1")).state == "cancelling"
    await h.send("car.cancelled", {"trip_id": "t-1"})
    inst = await h.instance("t-1")
    assert inst.status is Status.COMPENSATED
    assert h.commands("trip.cancelled")[0].data == {"trip_id": "t-1", "reason": "flight: sold out"}


async def test_booking_timeout_cancels_everything_not_failed(h: SagaHarness) -> None:
    await h.send("trip.requested", REQUEST)
    await h.send(*booked("flight"))
    await h.send("car.failed", {"trip_id": "t-1", "reason": "none"})
    assert h.commands("flight.cancel")
    await h.advance(200)
    inst = await h.instance("t-1")
    assert inst.status is Status.COMPENSATION_FAILED
    assert h.commands("trip.stuck")


async def test_silence_times_out_into_cancelling(h: SagaHarness) -> None:
    await h.send("trip.requested", REQUEST)
    await h.send(*booked("flight"))
    await h.advance(121)
    assert {e.type for e in h.sent()} >= {"flight.cancel", "hotel.cancel", "car.cancel"}
    for leg in LEGS:
        await h.send(f"{leg}.cancelled", {"trip_id": "t-1"})
    inst = await h.instance("t-1")
    assert inst.status is Status.COMPENSATED
    assert h.commands("trip.cancelled")[0].data["reason"] == "booking timed out"


def test_the_definition_is_introspectable() -> None:
    assert trip.kind == "machine"
    assert set(trip.final) == {"confirmed", "cancelled", "stuck"}
    assert "flight.book" in trip.produces()
    assert "booking --> cancelling" in trip.to_mermaid()
