"""What must hold after a fault, and failure messages that say what went wrong.

:func:`check_orders` is the common verdict: every order reached ``order.completed``
(one outcome id), each forward command had exactly one effect at the participants,
nothing was compensated, the admin API agrees (status ``completed``), and nothing
but the deliberately bad input was dead-lettered. A failure names how many orders
went which way (never existed, still running in state X, ...), shows the first few
in detail (what the participants saw, what ``GET /instances`` says), the dead
letters by reason, and the tail of the sidecar's log.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Collection, Iterable
from typing import Any

from tests.faults.participants import FORWARD, Record
from tests.faults.rig import Rig
from tests.faults.traffic import until

DETAILS = 8
"""Orders shown in full in a failure message."""


async def instance(rig: Rig, oid: str, saga: str = "order") -> dict[str, Any]:
    """What ``GET /instances/{saga}/{oid}`` says, reduced to what a message needs."""
    try:
        r = await rig.http.get(f"{rig.sidecar.base}/instances/{saga}/{oid}")
    except Exception as exc:
        return {"http": type(exc).__name__}
    if r.status_code != 200:
        return {"http": r.status_code, "error": r.text[:160]}
    body = r.json()
    return {k: body.get(k) for k in ("state", "status", "failure")}


async def statuses(rig: Rig, oids: Iterable[str]) -> dict[str, dict[str, Any]]:
    ids = list(oids)
    found: dict[str, dict[str, Any]] = {}
    for start in range(0, len(ids), 50):
        chunk = ids[start : start + 50]
        for oid, got in zip(
            chunk, await asyncio.gather(*(instance(rig, o) for o in chunk)), strict=True
        ):
            found[oid] = got
    return found


def dead_letter_reasons(record: Record) -> Counter[str]:
    return Counter((d.headers.get("sagawire-reason") or "(no reason)")[:160] for d in record.dead)


def _order_problems(record: Record, oid: str) -> list[str]:
    problems: list[str] = []
    outs = record.outcomes.get(oid, [])
    if not outs:
        problems.append("no outcome")
    else:
        kinds = {(o.type, o.id) for o in outs}
        if len(kinds) > 1:
            problems.append(f"several outcomes {sorted(kinds)}")
        if outs[0].type != "order.completed":
            problems.append(f"ended {outs[0].type} {outs[0].data}")
    for command in FORWARD:
        n = record.effects.get((oid, command), 0)
        if n != 1:
            problems.append(f"{command} acted {n} times")
    undo = [t for (o, t), n in record.effects.items() if o == oid and t not in FORWARD and n]
    if undo:
        problems.append(f"compensated: {undo}")
    return problems


async def check_orders(
    rig: Rig,
    oids: Collection[str],
    *,
    timeout: float,
    expected_dead: Collection[bytes] = (),
    what: str = "",
) -> None:
    """Wait up to ``timeout`` s for every order's outcome, then check them all."""
    record = rig.record
    await until(rig, lambda: all(record.finished(o) for o in oids), timeout)
    await asyncio.sleep(0.5)  # late duplicates and dead letters
    by_order = {oid: _order_problems(record, oid) for oid in oids}
    wrong = {oid: p for oid, p in by_order.items() if p}
    states = await statuses(rig, oids) if rig.sidecar.running else {}
    not_completed = {o: s for o, s in states.items() if s.get("status") != "completed"}
    allowed = set(expected_dead)
    extra_dead = [d for d in record.dead if d.body not in allowed]
    missing_dead = [b[:60] for b in allowed if b not in {d.body for d in record.dead}]
    if (
        not wrong
        and not not_completed
        and not extra_dead
        and not missing_dead
        and not record.strays
    ):
        return

    kinds: Counter[str] = Counter()
    for got in not_completed.values():
        if got.get("http") == 404:
            kinds["never existed (404)"] += 1
        elif "http" in got:
            kinds[f"HTTP {got['http']}"] += 1
        else:
            kinds[f"{got.get('status')} in state {got.get('state')}"] += 1
    symptoms: Counter[str] = Counter(
        p.split(" {")[0].split(" [")[0] for ps in wrong.values() for p in ps
    )
    lines = [
        f"{what}{len(set(wrong) | set(not_completed))} of {len(oids)} orders went wrong",
        f"  instances not completed: {dict(kinds) or 'none'}",
        f"  participants saw: {dict(symptoms) or 'nothing wrong'}",
        f"  dead letters: {len(record.dead)} ({len(extra_dead)} unexpected); by reason: "
        f"{dict(dead_letter_reasons(record).most_common(5))}",
    ]
    if missing_dead:
        lines.append(f"  expected dead letters missing: {missing_dead}")
    if record.strays:
        lines.append(
            f"  messages the participants could not read: {[s.body[:80] for s in record.strays[:3]]}"
        )
    for oid in sorted(set(wrong) | set(not_completed))[:DETAILS]:
        lines.append(
            f"  {oid}: {'; '.join(wrong.get(oid, [])) or 'ok at the participants'}; "
            f"instance {states.get(oid) or await instance(rig, oid)}\n    {record.describe(oid)}"
        )
    if not rig.sidecar.running:
        code = rig.sidecar.proc.returncode if rig.sidecar.proc else None
        lines.append(f"  the sidecar is not running (exit code {code})")
    lines.append(f"sidecar log ({rig.sidecar.log}), warnings and errors:\n{rig.sidecar.digest()}")
    raise AssertionError("\n".join(lines))


def verdict(label: str, problems: list[str], rig: Rig, *extra: str) -> None:
    """Fail with every problem of a scenario (if any), ``extra`` lines, and the sidecar's
    warnings and errors unless a problem already shows them."""
    if not problems:
        return
    lines = [f"{label}:", *problems, *extra]
    if not any("sidecar log (" in p for p in problems):
        if not rig.sidecar.running:
            code = rig.sidecar.proc.returncode if rig.sidecar.proc else None
            lines.append(f"the sidecar is not running (exit code {code})")
        lines.append(
            f"sidecar log ({rig.sidecar.log}), warnings and errors:\n{rig.sidecar.digest()}"
        )
    raise AssertionError("\n".join(lines))
