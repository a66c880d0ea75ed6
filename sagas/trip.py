"""The trip saga: book a flight, a hotel and a car *in parallel*; all three or none.

This needs the state-machine form: three replies may arrive in any order, a
failure of one leg must cancel the legs already booked (and any booked later,
by a late reply), and the saga is done cancelling only when every leg is either
failed or cancelled. Each leg's progress lives in the saga state.

    trip.requested -> flight.book + hotel.book + car.book           (booking)
    all three booked                      -> trip.confirmed         (confirmed: completed)
    a leg failed, or 2 min without all    -> cancel the booked legs (cancelling)
    every leg failed or cancelled         -> trip.cancelled         (cancelled: compensated)
    cancellations unanswered for 2 min    -> trip.stuck             (stuck: compensation_failed)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

from pydantic import BaseModel, Field

from orchestrator import Event, StateMachine, Timeout, When

LEGS = ("flight", "hotel", "car")
BOOKING_TIMEOUT = 120.0
CANCEL_TIMEOUT = 120.0

Leg = Literal["pending", "booked", "failed", "cancelling", "cancelled"]


class TripRequested(BaseModel):
    trip_id: str = Field(min_length=1)
    customer_id: str = Field(min_length=1)
    destination: str = Field(min_length=1)
    nights: int = Field(gt=0)


class FlightBooked(BaseModel):
    trip_id: str
    flight_ref: str


class HotelBooked(BaseModel):
    trip_id: str
    hotel_ref: str


class CarBooked(BaseModel):
    trip_id: str
    car_ref: str


class LegFailed(BaseModel):
    trip_id: str
    reason: str


class LegCancelled(BaseModel):
    trip_id: str


class BookFlight(BaseModel):
    trip_id: str
    destination: str


class BookHotel(BaseModel):
    trip_id: str
    destination: str
    nights: int


class BookCar(BaseModel):
    trip_id: str
    destination: str


class CancelLeg(BaseModel):
    trip_id: str
    ref: str | None = None  # None when the leg never answered: cancel whatever exists


class TripConfirmed(BaseModel):
    trip_id: str
    flight_ref: str
    hotel_ref: str
    car_ref: str


class TripCancelled(BaseModel):
    trip_id: str
    reason: str


class TripState(BaseModel):
    trip_id: str
    customer_id: str
    destination: str
    nights: int
    flight: Leg = "pending"
    hotel: Leg = "pending"
    car: Leg = "pending"
    flight_ref: str | None = None
    hotel_ref: str | None = None
    car_ref: str | None = None


BOOKED: dict[str, type[BaseModel]] = {
    "flight": FlightBooked,
    "hotel": HotelBooked,
    "car": CarBooked,
}
BOOK: dict[str, type[BaseModel]] = {"flight": BookFlight, "hotel": BookHotel, "car": BookCar}


def set_leg(leg: str, value: Leg) -> Callable[[TripState, Any], dict[str, Any]]:
    return lambda s, e: {leg: value}


def fail_leg(leg: str) -> Callable[[TripState, Any], dict[str, Any]]:
    """This leg failed: cancel the ones already booked; pending ones are awaited."""

    def update(s: TripState, e: Any) -> dict[str, Any]:
        out: dict[str, Any] = {leg: "failed"}
        out.update({o: "cancelling" for o in LEGS if o != leg and getattr(s, o) == "booked"})
        return out

    return update


def give_up(s: TripState, e: Any) -> dict[str, Any]:
    """Booking took too long: cancel every leg that did not fail (booked or silent)."""
    return {leg: "cancelling" for leg in LEGS if getattr(s, leg) in ("pending", "booked")}


def all_booked(s: TripState, e: Any) -> bool:
    return all(getattr(s, leg) == "booked" for leg in LEGS)


def all_settled(s: TripState, e: Any) -> bool:
    return all(getattr(s, leg) in ("failed", "cancelled") for leg in LEGS)


def cancel_leg(leg: str) -> Callable[[TripState], dict[str, Any]]:
    return lambda s: {"trip_id": s.trip_id, "ref": getattr(s, f"{leg}_ref")}


def leg_failure(leg: str) -> Callable[[TripState, LegFailed], str]:
    return lambda s, e: f"{leg}: {e.reason}"


def cancelling(leg: str) -> Callable[[TripState], bool]:
    return lambda s: getattr(s, leg) == "cancelling"


def send_cancels(row: When) -> When:
    for leg in LEGS:
        row.send(f"{leg}.cancel", CancelLeg, build=cancel_leg(leg), when=cancelling(leg))
    return row


rows: list[When] = [
    # in state    on event
    When("initial", "trip.requested")
    .send("flight.book", BookFlight)
    .send("hotel.book", BookHotel)
    .send("car.book", BookCar)
    .timer("booking", BOOKING_TIMEOUT)
    .to("booking"),
    send_cancels(When("booking", Timeout("booking")).update(give_up).fail("booking timed out"))
    .timer("cancelling", CANCEL_TIMEOUT)
    .to("cancelling"),
    When("cancelling", Timeout("cancelling")).send("trip.stuck", TripCancelled).to("stuck"),
]
for leg in LEGS:
    rows += [
        When("booking", f"{leg}.booked", guard=all_booked)
        .update(set_leg(leg, "booked"))
        .send("trip.confirmed", TripConfirmed)
        .cancel("booking")
        .to("confirmed"),
        When("booking", f"{leg}.booked").update(set_leg(leg, "booked")).to("booking"),
        send_cancels(When("booking", f"{leg}.failed").update(fail_leg(leg)).fail(leg_failure(leg)))
        .cancel("booking")
        .timer("cancelling", CANCEL_TIMEOUT)
        .to("cancelling"),
        # late replies while cancelling: cancel what got booked, count what failed
        When("cancelling", f"{leg}.booked")
        .update(set_leg(leg, "cancelling"))
        .send(f"{leg}.cancel", CancelLeg, build=cancel_leg(leg))
        .to("cancelling"),
        When("cancelling", f"{leg}.failed", guard=all_settled)
        .update(set_leg(leg, "failed"))
        .send("trip.cancelled", TripCancelled)
        .cancel("cancelling")
        .to("cancelled"),
        When("cancelling", f"{leg}.failed").update(set_leg(leg, "failed")).to("cancelling"),
        When("cancelling", f"{leg}.cancelled", guard=all_settled)
        .update(set_leg(leg, "cancelled"))
        .send("trip.cancelled", TripCancelled)
        .cancel("cancelling")
        .to("cancelled"),
        When("cancelling", f"{leg}.cancelled").update(set_leg(leg, "cancelled")).to("cancelling"),
    ]

trip = StateMachine(
    "trip",
    state=TripState,
    correlate="trip_id",
    start="trip.requested",
    events=[
        Event("trip.requested", TripRequested),
        *(Event(f"{leg}.booked", BOOKED[leg]) for leg in LEGS),
        *(Event(f"{leg}.failed", LegFailed, merge=False) for leg in LEGS),
        *(Event(f"{leg}.cancelled", LegCancelled) for leg in LEGS),
    ],
    final={"confirmed": "completed", "cancelled": "compensated", "stuck": "compensation_failed"},
    transitions=rows,
)
