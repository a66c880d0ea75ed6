"""Every dead letter is named by its CloudEvents id, on the broker and in the store.

Found end to end (tests/e2e/test_admin_e2e.py):

* on NATS, a parked message dead-lettered without its delivery (its park expired, or
  it was refused once its instance moved on) went out with no headers at all, so with
  no message id; JetStream de-duplicates such dead letters by
  ``sagawire.deadletter/<destination>/<message id>``, so within its two-minute window
  only the first of a destination reached ``sagawire.deadletter``;
* on RabbitMQ, a dead letter kept in the store was named by the AMQP message id, which
  aiormq makes up for a publisher that sets none, not by the CloudEvents id the inbox
  (and so a redrive) and the operator know.
"""

from __future__ import annotations

import orjson

from adapters.base import DEADLETTER, HEADER_CONTENT_TYPE, HEADER_MESSAGE_ID, Delivery
from orchestrator.engine.deadletters import dead_letter_record
from orchestrator.testing import SagaHarness
from sagas.order import order
from schemas.envelope import CONTENT_TYPE
from tests.sagas.test_order import placed


async def test_each_expired_message_is_dead_lettered_with_its_own_id() -> None:
    async with SagaHarness(order) as h:
        for oid in ("o-1", "o-2"):  # replies before their orders: parked
            data = {"order_id": oid, "reservation_id": f"r-{oid}"}
            await h.send("inventory.reserved", data, correlation_id=oid, id=f"early-{oid}")
        assert h.dead_letters() == []
        await h.advance(order.park_for + 1)
        dead = h.broker.published(DEADLETTER)
        assert [m.message_id for m in dead] == ["early-o-1", "early-o-2"]
        for m in dead:
            assert m.headers[HEADER_MESSAGE_ID] == m.message_id
            assert m.headers[HEADER_CONTENT_TYPE] == CONTENT_TYPE
        assert [d.origin for d in h.dead_letters()] == ["inventory.reserved"] * 2
        assert all("still not applicable" in d.reason for d in h.dead_letters())


async def test_a_parked_message_refused_once_its_instance_ended_keeps_its_id() -> None:
    async with SagaHarness(order) as h:
        charged = {"order_id": "o-1", "payment_id": "p-1"}
        await h.send("payment.charged", charged, correlation_id="o-1", id="early-charge")
        await h.send("order.placed", placed())  # in inventory: the charge stays parked
        assert h.dead_letters() == []
        await h.send("inventory.rejected", {"order_id": "o-1", "reason": "none left"})
        [dead] = h.broker.published(DEADLETTER)
        assert dead.message_id == "early-charge" == dead.headers[HEADER_MESSAGE_ID]
        assert "already compensated" in h.dead_letters()[0].reason


def test_the_record_names_the_cloudevent_not_the_broker_message() -> None:
    event = {"specversion": "1.0", "id": "ce-1", "source": "s", "type": "payment.declined"}
    structured = Delivery(
        "payment.declined", orjson.dumps(event), {HEADER_MESSAGE_ID: "amqp-made-up"}
    )
    binary = Delivery(
        "payment.declined", b"{}", {HEADER_MESSAGE_ID: "amqp-made-up", "ce_id": "ce-2"}
    )
    junk = Delivery("payment.declined", b"\x00not json", {HEADER_MESSAGE_ID: "amqp-9"})
    ids = [
        dead_letter_record(d, "r", "rejected", 0.0, {}).message_id
        for d in (structured, binary, junk)
    ]
    assert ids == ["ce-1", "ce-2", "amqp-9"]


async def test_a_dead_letter_names_the_saga_that_refused_it_when_two_take_its_type() -> None:
    """order and checkout both take inventory.reserved: the late one rejected by the
    finished order instance is the order saga's, not the first saga that takes the type."""
    from orchestrator.store.base import DeadLetterQuery
    from orchestrator.testing import SagaHarness
    from sagas.checkout import checkout
    from sagas.order import order
    from tests.sagas.test_order import placed

    async with SagaHarness(checkout, order) as h:
        await h.send("order.placed", placed(), correlation_id="o-1")
        await h.send("inventory.rejected", {"order_id": "o-1", "reason": "x"}, correlation_id="o-1")
        await h.send(
            "inventory.reserved", {"order_id": "o-1", "reservation_id": "r"}, correlation_id="o-1"
        )
        kept = await h.store.dead_letters(DeadLetterQuery(saga="order"))
        assert kept and all(d.saga == "order" and d.correlation_id == "o-1" for d in kept)
