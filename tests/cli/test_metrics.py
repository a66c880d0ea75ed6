"""``/metrics`` after a run: every family the issue asks for is there with its labels,
and the counters, histograms and gauges moved as the run says they should.

The run (:mod:`tests.support.sidecar_run`): a real sidecar in this process, the order
saga on SQLite, the simulated services refusing a quarter of the commands.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.sidecar_run import FAMILIES, Run, families, run_orders, value

NO_SAMPLES_YET = {"sagawire_deviations"}  # the order saga tracks no deviations


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    import asyncio  # noqa: PLC0415 - a module-scoped run, outside the tests' loops

    path: Path = tmp_path_factory.mktemp("metrics")
    return asyncio.run(run_orders(path))


def test_every_family_is_there_with_its_labels(run: Run) -> None:
    got = families(run.after)
    for name, (kind, labels) in FAMILIES.items():
        assert name in got, f"{name} missing from /metrics"
        family = got[name]
        assert family.type == kind, (name, family.type)
        if name in NO_SAMPLES_YET:
            continue
        assert family.samples, f"{name} has no samples after the run"
        for s in family.samples:
            assert set(s.labels) - {"le"} == labels, (name, s.labels)


def _sum(text: str, sample: str, **labels: str) -> float:
    """The sum of ``sample`` over the samples whose labels include ``labels``."""
    return sum(
        s.value
        for f in families(text).values()
        for s in f.samples
        if s.name == sample and labels.items() <= s.labels.items()
    )


@pytest.mark.parametrize(
    "sample",
    [
        "sagawire_deliveries_total",
        "sagawire_transitions_total",
        "sagawire_delivery_outcomes_total",
        "sagawire_state_transitions_total",
        "sagawire_commands_total",
        "sagawire_compensations_started_total",
        "sagawire_dead_letters_total",
        "sagawire_saga_duration_seconds_count",
        "sagawire_state_duration_seconds_count",
        "sagawire_commit_duration_seconds_count",
    ],
)
def test_counters_moved(run: Run, sample: str) -> None:
    assert _sum(run.before, sample) == 0
    assert _sum(run.after, sample) > 0


def test_the_counts_agree_with_the_run(run: Run) -> None:
    after, n = run.after, run.orders
    placed = {"saga": "order", "type": "order.placed"}
    assert value(after, "sagawire_delivery_outcomes_total", **placed, outcome="applied") == n + 1
    assert value(after, "sagawire_delivery_outcomes_total", **placed, outcome="duplicate") == 1
    assert _sum(after, "sagawire_delivery_outcomes_total") == value(
        after, "sagawire_deliveries_total"
    ) - value(after, "sagawire_dead_letters_total", reason="decode")
    transitions = value(after, "sagawire_transitions_total")
    assert _sum(after, "sagawire_state_transitions_total") == transitions
    started = {"saga": "order", "from_state": "initial", "to_state": "inventory"}
    assert value(after, "sagawire_state_transitions_total", **started) == n + 1
    assert value(after, "sagawire_commands_total", saga="order", type="inventory.reserve") == n + 1
    completed = value(after, "sagawire_instances", status="completed")
    compensated = value(after, "sagawire_instances", status="compensated")
    failed = value(after, "sagawire_instances", status="compensation_failed")
    assert completed and compensated, "the run should both complete and compensate orders"
    assert completed + compensated + failed == n
    assert (
        value(after, "sagawire_compensations_started_total", saga="order") == compensated + failed
    )
    assert value(after, "sagawire_compensations_failed_total", saga="order") == failed
    for status, count in (("completed", completed), ("compensated", compensated)):
        labels = {"saga": "order", "status": status}
        assert value(after, "sagawire_saga_duration_seconds_count", **labels) == count
        assert value(after, "sagawire_saga_instances", **labels, state="") == count  # finished
    # each transition but a creation left a state, and was timed in it
    assert _sum(after, "sagawire_state_duration_seconds_count") == transitions - (n + 1)


def test_the_gauges_describe_the_store(run: Run) -> None:
    after = run.after
    held = {"saga": "order", "state": "inventory"}
    assert value(after, "sagawire_saga_instances", **held, status="running") == 1
    assert value(after, "sagawire_instances", status="running") == 1
    assert value(after, "sagawire_stuck_instances", **held) == 1  # past stuck_after (0.5 s)
    assert value(after, "sagawire_timers_pending") >= 1  # the held order's step timeout
    assert value(after, "sagawire_timers_due") == 0
    assert value(after, "sagawire_parked_messages") == 0
    backlog = value(after, "sagawire_outbox_backlog")
    age = value(after, "sagawire_outbox_oldest_age_seconds")
    assert backlog >= 0 and age >= 0 and (age == 0) == (backlog == 0)
    assert value(after, "sagawire_dead_letters_total", reason="decode") == 1


def test_histograms_are_cumulative(run: Run) -> None:
    for family in families(run.after).values():
        if family.type != "histogram":
            continue
        series: dict[tuple[tuple[str, str], ...], list[float]] = {}
        counts: dict[tuple[tuple[str, str], ...], float] = {}
        for s in family.samples:
            key = tuple(sorted((k, v) for k, v in s.labels.items() if k != "le"))
            if s.name.endswith("_bucket"):
                series.setdefault(key, []).append(s.value)
            elif s.name.endswith("_count"):
                counts[key] = s.value
        assert series, family.name
        for key, buckets in series.items():
            assert buckets == sorted(buckets), (family.name, key)
            assert buckets[-1] == counts[key], (family.name, key)
