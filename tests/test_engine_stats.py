"""What the engine counts for ``/metrics`` (:mod:`orchestrator.engine.stats`), driven by
the harness on virtual time, so every duration is exact."""

from __future__ import annotations

import orjson
import pytest

from orchestrator.engine.stats import COMMIT_BUCKETS, Histogram, rollback_states
from orchestrator.testing import SagaHarness
from sagas.checkout import checkout
from sagas.order import STEP_TIMEOUT, order
from sagas.trip import trip

OID = "o-1"
PLACED = {
    "order_id": OID,
    "customer_id": "c-1",
    "items": [{"sku": "A", "qty": 2}],
    "amount_cents": 1200,
}


def test_histogram_buckets_hold_values_up_to_their_bound() -> None:
    h = Histogram((0.1, 1.0))
    for v in (0.05, 0.1, 0.5, 1.0, 7.0):
        h.observe(v)
    assert list(h.cumulative()) == [(0.1, 2), (1.0, 4), (float("inf"), 5)]
    assert h.count == 5
    assert h.sum == pytest.approx(8.65)
    assert list(Histogram(COMMIT_BUCKETS).cumulative())[-1] == (float("inf"), 0)


def test_rollback_states_of_each_kind_of_saga() -> None:
    undo = {"compensated", "compensation_failed"}
    assert rollback_states(order) == {"compensating:inventory", "compensating:payment"} | undo
    assert (
        rollback_states(checkout)
        == {
            "compensating",
            "compensating:inventory",
            "compensating:payment",
        }
        | undo
    )
    assert rollback_states(trip) == {"cancelling", "cancelled", "stuck"}  # read off its rows


async def test_a_compensated_order_is_counted_and_timed() -> None:
    async with SagaHarness(order) as h:
        stats = h.engine.stats
        await h.send("order.placed", PLACED, id="placed")
        await h.deliver(h.event("order.placed", PLACED, id="placed"))  # redelivered
        await h.advance(2.0)
        await h.send("inventory.reserved", {"order_id": OID, "reservation_id": "r-1"})
        await h.advance(3.0)
        await h.send("payment.declined", {"order_id": OID, "reason": "no"})
        await h.advance(1.5)
        await h.send("inventory.released", {"order_id": OID})

        assert stats.moves == {
            ("order", "initial", "inventory"): 1,
            ("order", "inventory", "payment"): 1,
            ("order", "payment", "compensating:inventory"): 1,
            ("order", "compensating:inventory", "compensated"): 1,
        }
        assert stats.sent == {
            ("order", "inventory.reserve"): 1,
            ("order", "payment.charge"): 1,
            ("order", "inventory.release"): 1,
            ("order", "order.cancelled"): 1,
        }
        assert stats.outcomes[("order", "order.placed", "applied")] == 1
        assert stats.outcomes[("order", "order.placed", "duplicate")] == 1
        assert stats.outcomes[("order", "inventory.released", "applied")] == 1
        assert stats.compensations == {"order": 1}
        assert stats.compensations_failed == {}
        spent = {key: (hist.count, hist.sum) for key, hist in stats.state_seconds.items()}
        assert spent == {
            ("order", "inventory"): (1, 2.0),
            ("order", "payment"): (1, 3.0),
            ("order", "compensating:inventory"): (1, 1.5),
        }
        whole = stats.saga_seconds[("order", "compensated")]
        assert (whole.count, whole.sum) == (1, 6.5)
        assert stats.commit_seconds.count >= 4
        orjson.dumps(stats.summary())  # the stop line can write it


async def test_time_in_a_state_adds_up_over_its_retries() -> None:
    """A step's timeout and retry move the instance within its state: each span is
    observed, and together they are the whole time spent there."""
    async with SagaHarness(order) as h:
        await h.send("order.placed", PLACED)
        await h.advance(STEP_TIMEOUT + 1.0 + 2.0)  # timed out, waited the backoff, re-sent
        assert len(h.commands("inventory.reserve")) == 2
        await h.send("inventory.reserved", {"order_id": OID, "reservation_id": "r-1"})
        hist = h.engine.stats.state_seconds[("order", "inventory")]
        assert hist.count == 3  # the timeout, the retry, the reply
        assert hist.sum == pytest.approx(STEP_TIMEOUT + 3.0)


async def test_an_abort_is_a_finish_and_no_compensation() -> None:
    async with SagaHarness(order) as h:
        await h.send("order.placed", PLACED)
        await h.advance(4.0)
        await h.engine.abort("order", OID, "by hand")
        stats = h.engine.stats
        whole = stats.saga_seconds[("order", "aborted")]
        assert (whole.count, whole.sum) == (1, 4.0)
        assert stats.moves[("order", "inventory", "aborted")] == 1
        assert stats.compensations == {}
