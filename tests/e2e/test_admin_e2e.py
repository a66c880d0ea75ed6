"""The admin API's bulk and redrive paths end to end, on each real broker (issue 17).

A real ``sagawire run`` (:mod:`tests.e2e.admin_rig`) with ``SAGAWIRE_ADMIN_TOKEN``
set, raw participants on the same broker, and an operator's HTTP client:

* **bulk abort**: thirty orders wait on a payment service that never answers. A dry
  run counts them, the real run aborts them in the background; every one is then
  compensated through the broker (``inventory.release`` sent, ``inventory.released``
  acknowledged by the service, ``order.cancelled`` sent once), and its history names
  the bulk job and the operator's token. The orders that completed are left alone,
  and a bulk abort of them is refused instance by instance.
* **redrive**: replies that came before their order existed wait their park (one
  second), then are dead-lettered (``expired``); late replies to finished orders are
  dead-lettered (``rejected``). ``GET /deadletters`` lists them with kind and reason.
  Once the orders exist, one is redriven alone and the others by a filter: the copies
  come back through the broker and the orders complete with them. A second redrive is
  409. On NATS the early replies were published with ``Nats-Msg-Id`` set, and the
  copies still arrive within JetStream's two-minute de-duplication window: a redrive
  publishes under a broker id of its own. Redriving the late replies brings each back
  as a new dead letter: the copies were consumed, and refused again.

SIGTERM under load is not here: ``test_sigterm_under_load_exits_0_and_loses_nothing``
in ``test_e2e_nats.py``, ``test_e2e_rabbitmq.py`` and ``test_e2e_kafka.py`` stops a
real sidecar with 100 orders in flight, restarts it, and checks every order's
outcome, that no message went out twice, and that nothing but the malformed input was
dead-lettered.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.e2e.admin_rig import OPERATOR, Rig, admin_rig
from tests.e2e.clients import RawClient
from tests.e2e.scenario import cloudevent, order_id, placed
from tests.faults.participants import Message

pytestmark = [pytest.mark.slow, pytest.mark.timeout(60)]

BROKERS = [
    pytest.param(name, marks=pytest.mark.broker(name), id=name)
    for name in ("nats", "rabbitmq", "kafka")
]
FIXTURE = {"nats": "nats_client", "rabbitmq": "rabbit_client", "kafka": "kafka_client"}


@pytest.fixture(params=BROKERS)
def client(request: pytest.FixtureRequest) -> RawClient:
    """The raw participant client of each broker in turn (its names deleted after)."""
    found: RawClient = request.getfixturevalue(FIXTURE[request.param])
    return found


# -- bulk abort ------------------------------------------------------------------------------

STUCK = range(30)
"""Orders whose payment is never answered: they wait in ``payment``."""
PAID = range(100, 104)
"""Orders answered in full: they complete, and no bulk action may touch them."""
REASON = "payment provider down (INC-42)"


def _payment_unanswered(cmd: Message, oid: str) -> bool:
    return cmd.type == "payment.charge" and int(oid.removeprefix("ord-")) in STUCK


@pytest.mark.postgres
async def test_bulk_abort_compensates_every_stuck_order_through_the_broker(
    client: RawClient, tmp_path: Path, database_url: str
) -> None:
    async with admin_rig(client, tmp_path, database_url, silent=_payment_unanswered) as rig:
        for n in (*STUCK, *PAID):
            await rig.publish("order.placed", placed(n), key=order_id(n))
        await rig.until(
            lambda: _counts(rig, {"payment": len(STUCK), "completed": len(PAID)}),
            "30 orders waiting in payment and 4 completed",
        )
        assert len(rig.silence.withheld) == len(STUCK)

        # Tokens: no token reads nothing; the viewer reads, and may not start a bulk action.
        anonymous = await rig.http.post("/bulk/abort", json={}, headers={"authorization": ""})
        assert anonymous.status_code == 401, anonymous.text
        assert (await rig.http.get("/sagas", headers={"authorization": ""})).status_code == 401
        viewer = rig.bearer("viewer")
        assert (await rig.http.get("/sagas", headers=viewer)).status_code == 200
        refused = await rig.http.post("/bulk/abort", json={}, headers=viewer)
        assert refused.status_code == 403, refused.text

        where = {"saga": "order", "state": "payment"}
        dry = await rig.bulk("abort", {**where, "reason": REASON}, dry_run=True)
        assert (dry["state"], dry["matched"], dry["done"]) == ("dry_run", len(STUCK), 0), dry
        assert len(await rig.instances(state="payment")) == len(STUCK), "a dry run acted"

        job = await rig.bulk("abort", {**where, "reason": REASON})
        assert (job["state"], job["by"], job["reason"]) == ("running", OPERATOR, REASON), job
        done = await rig.job_done(job["id"])
        assert done["state"] == "done", done
        assert (done["matched"], done["done"], done["refused"]) == (len(STUCK), len(STUCK), 0)
        assert done["errors"] == [] and done["filters"] == {**where, "compensate": True}, done

        stuck = [order_id(n) for n in STUCK]
        rec = rig.services.record
        await rig.until(
            lambda: all(rec.finished(oid) for oid in stuck),
            "order.cancelled for every aborted order",
        )
        await rig.until(
            lambda: _counts(rig, {"compensated": len(STUCK), "completed": len(PAID)}),
            "every aborted order compensated",
        )
        tag = f"bulk {job['id']}: {REASON}"
        for oid in stuck:
            detail = await rig.instance(oid)
            _check_aborted(rec, detail, oid, tag)
        assert not rec.dead and not rec.strays, (rec.dead, rec.strays)

        # What the filter matches now: none in payment. The completed ones, aborted by
        # another operator, are refused one by one (counted, not an error), and their
        # histories stay as they were.
        again = await rig.bulk("abort", where, dry_run=True)
        assert again["matched"] == 0, again
        r = await rig.http.post(
            "/bulk/abort",
            json={"saga": "order", "status": "completed"},
            headers=rig.bearer("ops-bob"),
        )
        assert r.status_code == 202, r.text
        finished = await rig.job_done(r.json()["id"])
        assert (finished["state"], finished["by"], finished["done"], finished["refused"]) == (
            "done",
            "ops-bob",
            0,
            len(PAID),
        ), finished
        for n in PAID:
            detail = await rig.instance(order_id(n))
            assert detail["status"] == "completed", detail
            assert not [h for h in detail["history"] if h["kind"] == "operator"], detail
        cancel = await rig.http.post(f"/bulk/{job['id']}/cancel")
        assert cancel.status_code == 409, cancel.text
        await rig.stop()


def _check_aborted(rec: Any, detail: dict[str, Any], oid: str, tag: str) -> None:
    """Compensated through the broker, once, and the history says who and which job."""
    assert (detail["state"], detail["status"]) == ("compensated", "compensated"), detail
    history = detail["history"]
    ops = [h for h in history if h["kind"] == "operator"]
    assert len(ops) == 1, history
    op = ops[0]
    assert op["message_type"] == "sagawire.abort", op
    assert op["note"] == f"operator abort by {OPERATOR}: {tag}", op
    assert (op["from_state"], op["to_state"]) == ("payment", "compensating:inventory"), op
    acked = [h for h in history if h["message_type"] == "inventory.released"]
    assert len(acked) == 1 and acked[0]["seq"] > op["seq"], history
    assert (acked[0]["from_state"], acked[0]["to_state"]) == (
        "compensating:inventory",
        "compensated",
    ), acked
    effects = {t: k for (o, t), k in rec.effects.items() if o == oid}
    assert effects == {"inventory.reserve": 1, "payment.charge": 1, "inventory.release": 1}, (
        rec.describe(oid)
    )
    sent = Counter((m.type, m.id, m.attempt) for m in rec.messages[oid])
    assert all(k == 1 for k in sent.values()), f"delivered more than once: {rec.describe(oid)}"
    outcome = rec.outcomes[oid]
    assert [(m.type, m.data) for m in outcome] == [
        ("order.cancelled", {"order_id": oid, "reason": tag})
    ], outcome


async def _counts(rig: Rig, want: dict[str, int]) -> bool:
    """Whether ``GET /sagas`` counts ``want`` instances in each state."""
    rows = await rig.instances()
    have = Counter(r["state"] for r in rows)
    return all(have[s] == k for s, k in want.items())


# -- redrive ----------------------------------------------------------------------------------

EARLY_ONE = 200
"""Its ``inventory.reserved`` comes before the order: redriven alone."""
EARLY_MANY = range(201, 204)
"""Theirs too: redriven by a filter."""
LATE = range(210, 212)
"""Completed orders to which a payment refusal comes after the end."""


def _early(n: int) -> bool:
    return n == EARLY_ONE or n in EARLY_MANY


def _reserve_unanswered(cmd: Message, oid: str) -> bool:
    """The early orders' reservations are answered only by their early replies."""
    return cmd.type == "inventory.reserve" and _early(int(oid.removeprefix("ord-")))


def _early_reply(n: int) -> bytes:
    oid = order_id(n)
    return cloudevent(
        "inventory.reserved",
        {"order_id": oid, "reservation_id": f"res-{oid}"},
        id_=f"early-{oid}",
        correlation=oid,
    )


def _late_reply(n: int) -> bytes:
    oid = order_id(n)
    return cloudevent(
        "payment.declined",
        {"order_id": oid, "reason": "second thoughts"},
        id_=f"late-{oid}",
        correlation=oid,
    )


async def test_dead_letters_are_listed_and_redriven_through_the_broker(
    client: RawClient, tmp_path: Path
) -> None:
    store = f"sqlite:///{tmp_path / 'admin.db'}"
    early = [EARLY_ONE, *EARLY_MANY]
    async with admin_rig(
        client, tmp_path, store, silent=_reserve_unanswered, watch=("inventory.reserved",)
    ) as rig:
        rec = rig.services.record
        for n in early:
            # On NATS with the Nats-Msg-Id sagawire's own transport (and so a participant
            # on its client library) gives it: a copy under the same id would be dropped.
            broker_id = f"inventory.reserved/early-{order_id(n)}"
            await rig.publish(
                "inventory.reserved", _early_reply(n), key=order_id(n), broker_id=broker_id
            )
        for n in LATE:
            await rig.publish("order.placed", placed(n), key=order_id(n))
        await rig.until(
            lambda: all(rec.finished(order_id(n)) for n in LATE), "the late orders done"
        )
        for n in LATE:
            await rig.publish("payment.declined", _late_reply(n), key=order_id(n))

        async def listed() -> bool:
            rows = await rig.dead_letters()
            return len(rows) == len(early) + len(LATE)

        await rig.until(listed, "every early and late reply dead-lettered")
        expired = await rig.dead_letters(kind="expired")
        rejected = await rig.dead_letters(kind="rejected")
        assert sorted(d["correlation_id"] for d in expired) == [order_id(n) for n in early]
        assert sorted(d["correlation_id"] for d in rejected) == [order_id(n) for n in LATE]
        by_order = {d["correlation_id"]: d for d in [*expired, *rejected]}
        for n in early:
            d = by_order[order_id(n)]
            assert (d["type"], d["saga"], d["destination"]) == (
                "inventory.reserved",
                "order",
                "inventory.reserved",
            ), d
            assert d["message_id"] == f"early-{order_id(n)}", d
            assert d["body"].encode() == _early_reply(n), d
            assert "still not applicable after 1s" in d["reason"], d
            assert d["redriven_at"] is None, d
        for n in LATE:
            d = by_order[order_id(n)]
            assert (d["type"], d["destination"], d["message_id"]) == (
                "payment.declined",
                "payment.declined",
                f"late-{order_id(n)}",
            ), d
            assert "is already completed" in d["reason"], d
            assert d["body"].encode() == _late_reply(n), d
        assert await rig.dead_letters(kind="expired", reason="still not applicable") == expired
        await rig.until(
            lambda: len(rec.dead) == len(early) + len(LATE),
            "every dead letter on sagawire.deadletter",
        )

        # The orders come: each waits for the reservation its early reply carried.
        for n in early:
            await rig.publish("order.placed", placed(n), key=order_id(n))
        await rig.until(
            lambda: _counts(rig, {"inventory": len(early), "completed": len(LATE)}),
            "the early orders waiting in inventory",
        )

        one = by_order[order_id(EARLY_ONE)]
        r = await rig.http.post(f"/deadletters/{one['id']}/redrive")
        assert r.status_code == 200, r.text
        assert r.json() == {
            "id": one["id"],
            "destination": "inventory.reserved",
            "message_id": f"early-{order_id(EARLY_ONE)}",
            "redriven_by": OPERATOR,
        }
        await rig.until(
            lambda: rec.finished(order_id(EARLY_ONE)), "the order redriven alone completes"
        )
        again = await rig.http.post(f"/deadletters/{one['id']}/redrive")
        assert again.status_code == 409, again.text
        assert "was redriven at" in again.json()["error"], again.text

        where = {"kind": "expired", "type": "inventory.reserved"}
        dry = await rig.bulk("redrive", where, dry_run=True)
        assert dry["matched"] == len(EARLY_MANY), dry
        job = await rig.job_done((await rig.bulk("redrive", where))["id"])
        assert (job["state"], job["done"], job["refused"]) == ("done", len(EARLY_MANY), 0), job
        await rig.until(
            lambda: all(rec.finished(order_id(n)) for n in early),
            "the orders redriven by a filter complete",
        )
        assert (await rig.bulk("redrive", where, dry_run=True))["matched"] == 0

        for n in early:
            await _check_redriven(rig, n, alone=n == EARLY_ONE, job=job["id"])

        # Late replies redriven: consumed from the broker, refused again, a new dead
        # letter each (the first ones stay, marked redriven).
        late_job = await rig.bulk("redrive", {"kind": "rejected", "type": "payment.declined"})
        late_job = await rig.job_done(late_job["id"])
        assert (late_job["done"], late_job["refused"]) == (len(LATE), 0), late_job

        async def late_again() -> bool:
            return len(await rig.dead_letters(kind="rejected", redriven="false")) == len(LATE)

        await rig.until(late_again, "the redriven late replies dead-lettered again")
        fresh = await rig.dead_letters(kind="rejected", redriven="false")
        assert {d["message_id"] for d in fresh} == {f"late-{order_id(n)}" for n in LATE}
        assert min(d["id"] for d in fresh) > max(d["id"] for d in rejected), (fresh, rejected)
        assert {d["body"] for d in fresh} == {d["body"] for d in rejected}
        for n in LATE:
            detail = await rig.instance(order_id(n))
            assert detail["status"] == "completed", detail
        await rig.until(
            lambda: len(rec.dead) == len(early) + 2 * len(LATE),
            "the new dead letters on sagawire.deadletter",
        )
        copies = Counter(s.body for s in rec.strays if s.destination == "inventory.reserved")
        for n in early:  # the original and the redriven copy, both on the broker
            assert copies[_early_reply(n)] == 2, copies
        for n in early:
            effects = {t: k for (o, t), k in rec.effects.items() if o == order_id(n)}
            assert effects == {
                "inventory.reserve": 1,
                "payment.charge": 1,
                "shipping.schedule": 1,
            }, rec.describe(order_id(n))
        await rig.stop()


async def _check_redriven(rig: Rig, n: int, *, alone: bool, job: str) -> None:
    oid = order_id(n)
    detail = await rig.instance(oid)
    assert detail["status"] == "completed", detail
    assert detail["data"]["reservation_id"] == f"res-{oid}", detail
    took = [h for h in detail["history"] if h["message_type"] == "inventory.reserved"]
    assert [(h["message_id"], h["from_state"], h["to_state"]) for h in took] == [
        (f"early-{oid}", "inventory", "payment")
    ], detail["history"]
    [d] = [d for d in await rig.dead_letters(kind="expired") if d["correlation_id"] == oid]
    who = OPERATOR if alone else f"{OPERATOR} (bulk {job})"
    assert d["redriven_at"] is not None and d["redriven_by"] == who, d
    outcome = rig.services.record.outcomes[oid]
    assert [(m.type, m.data) for m in outcome] == [
        ("order.completed", {"order_id": oid, "tracking_id": f"trk-{oid}"})
    ], outcome
    assert orjson.loads(d["body"])["id"] == f"early-{oid}"
