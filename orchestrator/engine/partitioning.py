"""Partitioned mode, the pure part: which units there are and who should hold them.

On Kafka the record key keeps each saga instance on one partition and so on one
replica. NATS JetStream and RabbitMQ carry each event under its type, with the
correlation id inside the body, so replicas consuming a type compete for its
messages and consecutive events of one instance land on different replicas: every
other commit then meets a version conflict. Partitioned mode gives those brokers
what Kafka's key gives, without touching how services publish:

* a **source unit** per consumed event type: one replica at a time reads the type
  and forwards each message, unchanged but for a header naming its type, to the
  **partition unit** of its correlation id (:mod:`orchestrator.engine.forwarding`);
* ``partitions`` partition units (destinations ``sagawire.part.<group>.<k>``), each
  consumed by one replica at a time, which is then the only one to move the
  instances whose correlation id hashes to ``k``.

One reader per source keeps the order in which a type's events were published, and
one reader per partition keeps it to the pipeline: events of one instance are applied
in the order they were published, per type, as on Kafka (where each type is a topic).

Who holds a unit is a lease in the store (:mod:`orchestrator.engine.ownership` runs
the rounds); :func:`balance` says, from one round's view, what a replica should take
and give up so that every live replica holds its fair share of each kind of unit,
moving as few units as it can when replicas come and go.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from adapters.base import Topology

__all__ = [
    "FORWARDED_FROM",
    "FORWARD_ID",
    "Unit",
    "balance",
    "partition_destination",
    "partition_of",
    "plan_units",
    "quota",
]

FORWARDED_FROM = "sagawire-forwarded-from"
"""Header of a forwarded message: the destination (event type) it was published to.
The partition's consumer gives the delivery that destination back, so the engine sees
the message as it was published (a plain JSON event is read by its type)."""


FORWARD_ID = "sagawire-forward-id"
"""Header of a forwarded copy: its own id, by which the forwarder learns that its
partition has read it (:class:`~orchestrator.engine.forwarding.LocalRoute`)."""


def partition_of(correlation_id: str, partitions: int) -> int:
    """The partition of an instance: CRC-32 of its correlation id, stable across
    processes and versions (Python's ``hash`` of a str is salted per process)."""
    return zlib.crc32(correlation_id.encode()) % partitions


def partition_destination(group: str, k: int) -> str:
    """Where the forwarders put partition ``k``'s messages."""
    return f"sagawire.part.{group}.{k}"


@dataclass(frozen=True, slots=True)
class Unit:
    """Something one replica at a time consumes: a type to forward or a partition."""

    name: str
    """Its lease's name: ``src:<type>`` or ``p<k>``."""
    kind: Literal["source", "partition"]
    topology: Topology
    partition: int = -1


def plan_units(topology: Topology, partitions: int) -> list[Unit]:
    """The units of ``topology`` split into ``partitions``, sources first.

    A source unit's consumer is named ``<group>__<type>``: on a NATS server older
    than 2.10 that is the durable consumer competing replicas already share for the
    type, so switching a running system to partitioned mode resumes where it was."""
    group = topology.group
    sources = [
        Unit(f"src:{t}", "source", Topology((t,), group=f"{group}__{t}", exclusive=True))
        for t in topology.consumes
    ]
    parts = [
        Unit(
            f"p{k}",
            "partition",
            Topology((partition_destination(group, k),), group=f"{group}-p{k}", exclusive=True),
            k,
        )
        for k in range(partitions)
    ]
    return sources + parts


def quota(units: int, members: Sequence[str], me: str) -> int:
    """``me``'s fair share of ``units`` among the sorted live ``members``: the first
    ``units % len(members)`` of them hold one more than the others."""
    ordered = sorted(members)
    if me not in ordered:
        return 0
    base, extra = divmod(units, len(ordered))
    return base + (1 if ordered.index(me) < extra else 0)


def balance(
    units: Sequence[Unit], owners: Mapping[str, str], members: Sequence[str], me: str
) -> tuple[list[str], list[str]]:
    """What ``me`` should claim and release after a lease round, per kind of unit.

    A replica over its share gives up its highest-numbered units; one under it claims
    units nobody live holds, in an order of its own (a hash of its name and the
    unit's), so that two hungry replicas rarely reach for the same unit first. Units
    held by a live replica are never claimed: that replica gives them up itself
    (after settling what it read of them), which is what keeps one reader per unit."""
    live = set(members)
    claim: list[str] = []
    release: list[str] = []
    for kind in ("source", "partition"):
        names = [u.name for u in units if u.kind == kind]
        share = quota(len(names), members, me)
        mine = [n for n in names if owners.get(n) == me]
        if len(mine) > share:
            release += mine[share:]
        elif len(mine) < share:
            free = [n for n in names if owners.get(n) not in live]
            free.sort(key=lambda n: zlib.crc32(f"{me}/{n}".encode()))
            claim += free[: share - len(mine)]
    return claim, release
