"""What must hold after a run, checked against the participants' ledger."""

from __future__ import annotations

from collections import Counter, defaultdict

import httpx

from tests.e2e.participants import Ledger
from tests.e2e.scenario import (
    COMPLETES,
    DECLINED,
    NO_COURIER,
    NO_STOCK,
    ORDERS,
    Fate,
    fate,
    malformed,
    order_id,
)
from tests.e2e.sidecar import Sidecar


def check_outcomes(ledger: Ledger, *, crash: bool) -> None:
    problems: list[str] = []
    for n in range(ORDERS):
        oid, f = order_id(n), fate(n)
        try:
            _check_order(ledger, n, oid, f, crash)
        except AssertionError as exc:
            problems.append(f"{oid} ({f.name}): {exc}\n    {ledger.describe(oid)}")
    stray = [s.body[:120] for s in ledger.strays]
    assert not problems and not stray, (
        f"{len(problems)} order(s) went wrong:\n"
        + "\n".join(problems[:15])
        + f"\nmessages participants could not read: {stray}"
    )


def _check_order(ledger: Ledger, n: int, oid: str, f: Fate, crash: bool) -> None:
    outcomes = ledger.outcomes.get(oid, [])
    assert {o.id for o in outcomes} and len({o.id for o in outcomes}) == 1, (
        f"want one outcome message id, got {[(o.type, o.id) for o in outcomes]}"
    )
    out = outcomes[0]
    assert out.type == f.outcome, f"ended with {out.type} {out.data}, want {f.outcome}"
    if f.outcome == "order.completed":
        assert out.data == {"order_id": oid, "tracking_id": f"trk-{oid}"}, out.data
    else:
        assert out.data == {"order_id": oid, "reason": f.reason}, out.data
    assert out.correlation == oid, out.correlation

    cmds = ledger.commands.get(oid, [])
    # One id per (order, command type), re-sends included: a re-send is the same command
    # (same id), told apart by its ``attempt``, and the participants acted on it once.
    ids: dict[str, set[str]] = defaultdict(set)
    attempts: dict[str, set[int | None]] = defaultdict(set)
    for c in cmds:
        ids[c.type].add(c.id)
        attempts[c.id].add(c.attempt)
    multi = {t: sorted(s) for t, s in ids.items() if len(s) != 1}
    assert not multi, f"a command type was sent with several message ids: {multi}"
    gaps = {i: a for i, a in attempts.items() if a != set(range(1, len(a) + 1))}
    assert not gaps, f"commands without attempt 1, 2, ... in turn: {gaps}"
    deliveries = Counter((c.id, c.attempt) for c in [*cmds, *outcomes])
    if not crash:
        again = {i: k for i, k in deliveries.items() if k > 1}
        assert not again, f"messages delivered more than once without a crash: {again}"
    acted = Counter(t for t, _ in {(t, i) for t, i, _ in ledger.replies.get(oid, [])})
    twice = {t: k for t, k in acted.items() if k > 1}
    assert not twice, f"participants acted more than once on one command: {twice}"
    first_seen = list(dict.fromkeys(c.type for c in cmds))
    assert tuple(first_seen) == f.commands, f"commands {first_seen}, want {list(f.commands)}"
    assert all(c.correlation == oid for c in cmds), "a command lost its correlationid"

    # Payloads carry what the earlier replies said, and causation names the cause (of the
    # first attempt; a re-send names the retry timer that sent it).
    by_type = {c.type: c for c in reversed(cmds) if c.attempt == 1}
    sent = {t: i for t, i, _ in ledger.replies.get(oid, [])}
    placed_id = f"placed-{oid}"
    reserve = by_type["inventory.reserve"]
    assert reserve.causation == placed_id, reserve.causation
    assert reserve.data["items"] == [{"sku": f"sku-{n % 5}", "qty": 1 + n % 3}], reserve.data
    if "payment.charge" in by_type:
        charge = by_type["payment.charge"]
        assert charge.data == {
            "order_id": oid,
            "customer_id": f"cust-{n % 13}",
            "amount_cents": 1000 + n,
        }, charge.data
        assert charge.causation == sent["inventory.reserved"]
    if "shipping.schedule" in by_type:
        ship = by_type["shipping.schedule"]
        assert ship.data == {"order_id": oid, "reservation_id": f"res-{oid}"}, ship.data
        assert ship.causation == sent["payment.charged"]
    if "payment.refund" in by_type:
        refund = by_type["payment.refund"]
        assert refund.data == {"order_id": oid, "payment_id": f"pay-{oid}"}, refund.data
        assert refund.causation == sent["shipping.failed"]
    if "inventory.release" in by_type:
        release = by_type["inventory.release"]
        assert release.data == {"order_id": oid, "reservation_id": f"res-{oid}"}, release.data
        cause = "payment.refunded" if "payment.refund" in by_type else "payment.declined"
        assert release.causation == sent[cause]
    last_reply = {
        NO_STOCK: "inventory.rejected",
        DECLINED: "inventory.released",
        NO_COURIER: "inventory.released",
        COMPLETES: "shipping.scheduled",
    }[f]
    assert out.causation == sent[last_reply], (out.causation, last_reply)


def check_dead_letters(ledger: Ledger, *, crash: bool) -> None:
    bad = malformed()
    by_body = Counter(d.body for d in ledger.dead)
    missing = [(dest, junk[:60]) for dest, junk in bad if junk not in by_body]
    extra = [d.body[:200] for d in ledger.dead if d.body not in {j for _, j in bad}]
    reasons = {d.body[:60]: d.headers.get("sagawire-reason") for d in ledger.dead}
    assert not missing and not extra, (
        f"dead letters: missing {missing}; unexpected {extra}; reasons {reasons}"
    )
    if not crash:  # after a kill -9 a dead letter may be published again before its ack
        twice = {b[:60]: k for b, k in by_body.items() if k > 1}
        assert not twice, f"dead letters published more than once: {twice}"
    for dest, junk in bad:
        d = next(x for x in ledger.dead if x.body == junk)
        assert d.headers.get("sagawire-reason"), f"no reason header on {junk[:40]!r}: {d.headers}"
        assert d.headers.get("sagawire-original-destination") == dest, d.headers


async def check_instances(http: httpx.AsyncClient, sidecar: Sidecar) -> None:
    """The admin API agrees with the outcomes: status of every instance."""
    wrong = []
    for n in range(ORDERS):
        oid = order_id(n)
        r = await http.get(f"{sidecar.base}/instances/order/{oid}")
        want = "completed" if fate(n) is COMPLETES else "compensated"
        status = r.json().get("status") if r.status_code == 200 else r.status_code
        if status != want:
            wrong.append((oid, status, want))
    assert not wrong, f"instances in the wrong status (id, got, want): {wrong[:10]}"
