"""What must hold after a checkout run, checked against the audit's book and the
tracker's HTTP API.

Per order:

* exactly one outcome (one message id, however often a crash made it go out), the one
  its fate says, with the tracking id or the reason, its ``correlationid`` and, as
  ``causationid``, the event that ended the checkout;
* the tracker published nothing else but the compensations of the steps done: for a
  checkout that went well, nothing but ``checkout.completed``; each compensation once
  (one id, attempt 1), with the ids of the reply it undoes, in reverse order: the
  tracker's history sent them in that order and each names as its cause the reply to
  the one before (or the failure event, or the missed deadline's timer);
* ``GET /instances/checkout/<order>``: the final status, every step's status, the
  failure reason, and the deviations of its fate (by kind and message id), recorded in
  its history; and the tracker handled a copy of every event the services published
  for the order (each event id is in the history);
* a reordered checkout was published out of order and completed without deviation.

Across the run: each service's own consumer received every event and command on its
inputs (the tracker took none from them); each compensation was carried out once;
nothing was dead-lettered; ``/metrics`` counts the deviations the last life of the
tracker recorded (``sagawire_deviations_total``) and no dead letter.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter, defaultdict
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.choreography.fates import (
    COMMANDS,
    CONSUMED,
    FAILURE,
    INPUTS,
    ORDERS,
    OUTCOMES,
    SIDECAR,
    SUCCESS,
    UNDO,
    UNDONE,
    Fate,
    fate,
    order_id,
)
from tests.e2e.choreography.services import Book, Event

STEP_OF = {cmd: step for step, cmd in UNDO.items()}
SETTLE = 10.0
"""Seconds the instances get to show their final status and every deviation (the late
events follow the outcome)."""


async def check_run(
    http: httpx.AsyncClient,
    base: str,
    book: Book,
    *,
    deadline: float,
    since: float | None,
    broker: str,
) -> int:
    """Raise with every problem found; return the number of deviations recorded.
    ``since``: when the tracker's last life started (wall clock), if it was restarted."""
    instances = await _settled_instances(http, base)
    problems: list[str] = []
    for n in range(ORDERS):
        oid, f = order_id(n), fate(n)
        try:
            _check_order(book, oid, f, deadline, instances[oid])
        except AssertionError as exc:
            problems.append(f"{oid} ({f.name}): {exc}\n    {book.describe(oid)}")
    problems += check_services(book)
    if book.dead:
        problems.append(f"dead letters: {[(d.body[:100], d.headers) for d in book.dead[:5]]}")
    if book.strays:
        problems.append(f"messages without an order: {[s.body[:100] for s in book.strays[:5]]}")
    problems += await _check_metrics(http, base, instances, since)
    assert not problems, f"{broker}: {len(problems)} problem(s):\n" + "\n".join(problems[:15])
    return sum(len(_deviations(inst)) for inst in instances.values())


def _deviations(inst: dict[str, Any]) -> list[dict[str, Any]]:
    return list(inst.get("deviations") or [])


def _kind(deviation: dict[str, Any]) -> str:
    return str(deviation["note"]).removeprefix("deviation ").partition(":")[0]


async def _settled_instances(http: httpx.AsyncClient, base: str) -> dict[str, dict[str, Any]]:
    """Every order's instance once it is final and shows its fate's deviations (or as
    it is after :data:`SETTLE` seconds)."""
    give_up = time.monotonic() + SETTLE
    while True:
        found: dict[str, dict[str, Any]] = {}
        for n in range(ORDERS):
            r = await http.get(f"{base}/instances/checkout/{order_id(n)}")
            found[order_id(n)] = r.json() if r.status_code == 200 else {"http": r.status_code}
        settled = all(
            inst.get("status") in ("completed", "compensated")
            and len(_deviations(inst)) >= len(fate(n).deviations(order_id(n)))
            for n, inst in enumerate(found.values())
        )
        if settled or time.monotonic() > give_up:
            return found
        await asyncio.sleep(0.25)


def _one(events: list[Event], type_: str) -> Event:
    """The message of ``type_``: one id, however often it went out."""
    found = [e for e in events if e.type == type_]
    ids = {e.id for e in found}
    assert len(ids) == 1, f"{type_}: want one message id, got {sorted(ids)}"
    return found[0]


def _check_order(book: Book, oid: str, f: Fate, deadline: float, inst: dict[str, Any]) -> None:
    feed = book.feed.get(oid, [])
    mine = [e for e in feed if e.source == SIDECAR]
    theirs = [e for e in feed if e.source != SIDECAR]
    first_id: dict[str, str] = {}
    for e in theirs:
        first_id.setdefault(e.type, e.id)

    # What the tracker published: the compensations of the steps done, one outcome.
    assert {e.type for e in mine} == {*f.undo, f.outcome}, (
        f"the tracker published {sorted({e.type for e in mine})}, "
        f"want {sorted({*f.undo, f.outcome})}"
    )
    assert not [e for e in mine if e.type in OUTCOMES and e.type != f.outcome]
    assert all(e.correlation == oid for e in mine), "a message lost its correlationid"
    assert all(e.causation for e in mine), "a message has no causationid"
    out = _one(mine, f.outcome)
    if f.failing is None:
        assert out.data == {"order_id": oid, "tracking_id": f"trk-{oid}"}, out.data
        assert out.causation == first_id["shipping.scheduled"], out.causation
    else:
        assert out.data == {"order_id": oid, "reason": f.reason(deadline)}, out.data

    # The compensations, in reverse order: each caused by the reply to the one before.
    cause = _failure_cause(oid, f, first_id)
    for cmd_type in f.undo:
        cmd = _one(mine, cmd_type)
        _, field_, prefix = SUCCESS[STEP_OF[cmd_type]]
        assert cmd.data == {"order_id": oid, field_: f"{prefix}-{oid}"}, cmd.data
        assert {e.attempt for e in mine if e.type == cmd_type} == {1}, "a compensation re-sent"
        _check_cause(cmd, cause)
        reply = [e for e in theirs if e.type == UNDONE[cmd_type] and e.causation == cmd.id]
        assert reply, f"no {UNDONE[cmd_type]} answered {cmd_type}"
        assert reply[0].correlation == oid, reply[0].correlation
        cause = reply[0].id
    if f.failing is not None:
        _check_cause(out, cause)

    # The tracker's own record.
    want_status = "completed" if f.failing is None else "compensated"
    assert inst.get("status") == want_status, f"status {inst.get('status')}, want {want_status}"
    assert inst.get("steps") == f.steps, f"steps {inst.get('steps')}, want {f.steps}"
    assert inst.get("failure") == f.reason(deadline), inst.get("failure")
    history = inst.get("history") or []
    sent = [c.partition(":")[0] for h in history for c in h["commands"]]
    assert sent == [*f.undo, f.outcome], f"the history sent {sent}"
    handled = {h["message_id"] for h in history}
    published = {e.id for e in theirs if e.type in CONSUMED}
    assert published <= handled, f"events the tracker never handled: {published - handled}"
    recorded = {d["message_id"]: _kind(d) for d in _deviations(inst)}
    want = f.deviations(oid)
    assert len(recorded) == len(_deviations(inst)), "a message recorded twice as a deviation"
    assert recorded.keys() == want.keys() and all(recorded[i] in want[i] for i in want), (
        f"deviations {[d['note'] for d in _deviations(inst)]}, want {want}"
    )
    if f.reordered:
        order = [t for _, t, _ in sorted(book.sent[oid])]
        assert order.index("payment.charged") < order.index("inventory.reserved"), order


def _failure_cause(oid: str, f: Fate, first_id: dict[str, str]) -> str:
    """What the first compensation (or, with none, the outcome) names as its cause:
    the failure event, or the timer of the missed deadline (``timer:...``)."""
    if f.fails is not None:
        return first_id[FAILURE[f.fails][0]]
    if f.silent is not None:
        return f"timer:checkout:{oid}:{f.silent}.deadline:"
    return ""


def _check_cause(message: Event, cause: str) -> None:
    if cause.startswith("timer:"):
        assert (message.causation or "").startswith(cause), (message.type, message.causation)
    else:
        assert message.causation == cause, (message.type, message.causation, cause)


def check_services(book: Book) -> list[str]:
    """Each service's own consumer got everything on its inputs; compensations once."""
    problems = []
    everything = [e for events in book.feed.values() for e in events]
    for service, inputs in INPUTS.items():
        published = {(e.type, e.id) for e in everything if e.type in inputs}
        got = {(e.type, e.id) for e in book.received.get(service, [])}
        if published - got:
            missing = Counter(t for t, _ in published - got)
            problems.append(
                f"{service}'s own consumer missed {len(published - got)} of {len(published)} "
                f"messages on its inputs: {dict(missing)}"
            )
        if got - published:
            problems.append(
                f"{service} got messages the audit never saw: {sorted(got - published)[:5]}"
            )
    want = Counter({(order_id(n), c): 1 for n in range(ORDERS) for c in fate(n).undo})
    if book.acted != want:
        extra = {k: v for k, v in book.acted.items() if want.get(k) != v}
        lacking = {k for k in want if k not in book.acted}
        problems.append(f"compensations carried out: wrong {extra}, never {sorted(lacking)[:5]}")
    strays = [e for e in everything if e.source == SIDECAR and e.type not in (*COMMANDS, *OUTCOMES)]
    if strays:
        problems.append(f"the tracker published {[(e.type, e.order) for e in strays[:5]]}")
    return problems


async def _check_metrics(
    http: httpx.AsyncClient, base: str, instances: dict[str, dict[str, Any]], since: float | None
) -> list[str]:
    """``/metrics`` counts what the tracker's last life did (counters start at 0 with
    each process): its deviations by kind, and no dead letter."""
    r = await http.get(f"{base}/metrics")
    samples: dict[str, dict[str, float]] = defaultdict(dict)
    for family in text_string_to_metric_families(r.text):
        for s in family.samples:
            label = s.labels.get("kind") or s.labels.get("reason") or ""
            samples[s.name][label] = s.value
    problems = []
    if "sagawire_deviations_total" not in r.text:
        problems.append("/metrics has no sagawire_deviations_total")
    want = Counter(
        _kind(d)
        for inst in instances.values()
        for d in _deviations(inst)
        if since is None or d["at"] >= since
    )
    got = {k: int(v) for k, v in samples.get("sagawire_deviations_total", {}).items() if v}
    if got != dict(want):
        problems.append(f"sagawire_deviations_total by kind {got}, want {dict(want)}")
    dead = sum(samples.get("sagawire_dead_letters_total", {}).values())
    if dead:
        problems.append(f"sagawire_dead_letters_total {samples['sagawire_dead_letters_total']}")
    return problems
