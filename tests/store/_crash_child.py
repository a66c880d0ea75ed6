"""Child process of the crash test: commit batches to SQLite until killed.

Every unit moves one instance from version v to v+1 and writes, together with it,
inbox mark ``<cid>-<v+1>``, history seq v+1, outbox row ``<cid>-<v+1>`` and moves
its timer to due v+1; so after any crash each instance must satisfy
"history, outbox and inbox each hold exactly ``version`` rows". After each commit
returns, the child prints the versions it committed, one line per batch.

Usage: ``python -m tests.store._crash_child PATH INSTANCES PER_BATCH SEED``
"""

from __future__ import annotations

import asyncio
import random
import sys

from orchestrator.store.base import (
    HistoryRecord,
    InstanceRecord,
    OutboxRecord,
    Outcome,
    TimerRecord,
    UnitOfWork,
)
from orchestrator.store.sqlite import SqliteStore

SAGA = "crash"
PAD = bytes(range(256)) * 8  # 2 KiB of binary per row: commits span several pages


def unit(cid: str, version: int) -> UnitOfWork:
    at = float(version)
    return UnitOfWork(
        instance=InstanceRecord(
            SAGA, cid, f"s{version}", "running", version, b"%d|" % version + PAD, b"{}", 0.0, at
        ),
        expected_version=version - 1,
        inbox=(SAGA, f"{cid}-{version}"),
        history=(HistoryRecord(SAGA, cid, version, f"{cid}-{version}", "Bump", "a", "b", (), at),),
        outbox=(OutboxRecord(f"{cid}-{version}", "out", cid, b"%d|" % version + PAD),),
        timers_set=(TimerRecord(SAGA, cid, "t", at),),
    )


async def main(path: str, instances: int, per_batch: int, seed: int) -> None:
    store = SqliteStore(path)
    await store.open()
    keys = [(SAGA, f"i{n}") for n in range(instances)]
    loaded = await store.load(keys)
    versions = {k: loaded[k].version if k in loaded else 0 for k in keys}
    rnd = random.Random(seed)
    while True:
        chosen = rnd.sample(keys, per_batch)
        outcomes = await store.commit([unit(k[1], versions[k] + 1) for k in chosen])
        if outcomes != [Outcome.COMMITTED] * per_batch:
            sys.exit(f"unexpected outcomes {outcomes}")
        for k in chosen:
            versions[k] += 1
        sys.stdout.write(" ".join(f"{k[1]}={versions[k]}" for k in chosen) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    path, instances, per_batch, seed = sys.argv[1:5]
    asyncio.run(main(path, int(instances), int(per_batch), int(seed)))
