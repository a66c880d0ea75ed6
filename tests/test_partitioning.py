"""Partitioned mode's pure part: units, partitions, and who should hold what."""

from __future__ import annotations

import random

import pytest

from adapters.base import Topology
from orchestrator.engine.partitioning import (
    balance,
    partition_destination,
    partition_of,
    plan_units,
    quota,
)

TOPOLOGY = Topology(("order.placed", "stock.reserved", "payment.charged"), group="g")


def test_units_are_a_source_per_type_then_the_partitions() -> None:
    units = plan_units(TOPOLOGY, 4)
    assert [u.name for u in units] == [
        "src:order.placed", "src:stock.reserved", "src:payment.charged",
        "p0", "p1", "p2", "p3",
    ]  # fmt: skip
    assert all(u.topology.exclusive for u in units)
    source = units[0].topology
    # the per-subject consumer name a NATS 2.9 group already uses for the type
    assert source.group == "g__order.placed" and source.consumes == ("order.placed",)
    assert units[3].topology.consumes == (partition_destination("g", 0),)
    assert len({u.topology.group for u in units}) == len(units)


def test_partition_is_stable_and_spreads() -> None:
    assert partition_of("order-42", 8) == partition_of("order-42", 8)
    # crc32, not Python's per-process salted hash: the same in every replica
    counts = [0] * 8
    for i in range(8000):
        counts[partition_of(f"order-{i}", 8)] += 1
    assert min(counts) > 800 and max(counts) < 1200


@pytest.mark.parametrize(("units", "members"), [(8, 1), (8, 3), (3, 2), (12, 5), (2, 4)])
def test_quotas_add_up_and_differ_by_one_at_most(units: int, members: int) -> None:
    names = [f"r{i}" for i in range(members)]
    shares = [quota(units, names, m) for m in names]
    assert sum(shares) == units
    assert max(shares) - min(shares) <= 1
    assert quota(units, names, "stranger") == 0


def _converge(units: int, members: list[str], owners: dict[str, str], seed: int = 0) -> int:
    """Run rounds (each member in a random order, claims won first-come) until stable."""
    plan = plan_units(TOPOLOGY, units)
    rng = random.Random(seed)
    for rounds in range(1, 50):
        moved = False
        order = list(members)
        rng.shuffle(order)
        for me in order:
            claim, release = balance(plan, owners, members, me)
            for name in release:
                del owners[name]
                moved = True
            for name in claim:
                if owners.get(name) not in members:
                    owners[name] = me
                    moved = True
        if not moved:
            return rounds
    raise AssertionError("did not settle")


def test_rounds_settle_to_one_owner_per_unit_balanced_per_kind() -> None:
    members = ["a", "b", "c"]
    owners: dict[str, str] = {}
    _converge(8, members, owners)
    plan = plan_units(TOPOLOGY, 8)
    assert set(owners) == {u.name for u in plan}
    for kind in ("source", "partition"):
        held = [sum(1 for u in plan if u.kind == kind and owners[u.name] == m) for m in members]
        assert max(held) - min(held) <= 1, (kind, held)


def test_a_replica_joining_moves_only_its_share() -> None:
    owners: dict[str, str] = {}
    _converge(12, ["a", "b"], owners)
    before = dict(owners)
    _converge(12, ["a", "b", "c"], owners, seed=1)
    moved = [n for n in before if before[n] != owners[n]]
    # c takes 4 of 12 partitions and 1 of 3 sources; nothing else changes hands
    assert len(moved) == 5
    assert all(owners[n] == "c" for n in moved)


def test_a_dead_replicas_units_go_to_the_living() -> None:
    owners: dict[str, str] = {}
    _converge(8, ["a", "b", "c"], owners)
    gone = {n for n, o in owners.items() if o == "b"}
    _converge(8, ["a", "c"], owners)  # b's leases lapsed: b is no longer a member
    assert all(owners[n] in ("a", "c") for n in gone)
    assert set(owners.values()) == {"a", "c"}


def test_a_unit_held_by_a_live_replica_is_never_claimed() -> None:
    plan = plan_units(TOPOLOGY, 4)
    owners = {u.name: "a" for u in plan}  # a holds everything, b just joined
    claim, release = balance(plan, owners, ["a", "b"], "b")
    assert claim == [] and release == []
    claim, release = balance(plan, owners, ["a", "b"], "a")
    assert claim == [] and release == ["src:payment.charged", "p2", "p3"]
