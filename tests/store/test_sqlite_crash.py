"""SQLite survives ``kill -9`` mid-commit, refuses newer schemas, and keeps state across restarts.

The crash test runs :mod:`tests.store._crash_child` in a subprocess, kills it
with SIGKILL while it commits batches as fast as it can, several times over on
the same file, and after each kill checks that every instance is exactly at a
committed state: nothing a unit wrote is there without the rest of that unit,
and nothing the child reported as committed is missing.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from orchestrator.store._schema import SCHEMA_VERSION
from orchestrator.store.sqlite import SqliteStore
from schemas.errors import SchemaVersionError
from tests.store._crash_child import SAGA
from tests.store.contract import out, step, timer

ROOT = Path(__file__).resolve().parents[2]
INSTANCES = 40
PER_BATCH = 24


def _parse(line: str, reported: dict[str, int]) -> None:
    for pair in line.split():
        cid, version = pair.split("=")
        reported[cid] = max(reported.get(cid, 0), int(version))


def _run_and_kill(path: Path, seed: int, lines_before_kill: int) -> dict[str, int]:
    """Start the child, let it report some commits, SIGKILL it; return what it reported."""
    args = [str(path), str(INSTANCES), str(PER_BATCH), str(seed)]
    reported: dict[str, int] = {}
    with (
        path.with_suffix(".stderr").open("wb") as stderr,
        subprocess.Popen(
            [sys.executable, "-m", "tests.store._crash_child", *args],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=stderr,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        ) as child,
    ):
        assert child.stdout is not None
        try:
            for n, line in enumerate(child.stdout):
                _parse(line.decode(), reported)
                if n + 1 >= lines_before_kill:
                    break
            time.sleep(random.uniform(0, 0.02))  # land somewhere inside a later commit
            child.send_signal(signal.SIGKILL)
            child.wait(timeout=10)
            # Whole lines the child wrote before it died are commits it saw return.
            for line in child.stdout.read().decode().splitlines(keepends=True):
                if line.endswith("\n"):
                    _parse(line, reported)
        finally:
            if child.poll() is None:
                child.kill()
    if child.returncode != -signal.SIGKILL:
        errors = path.with_suffix(".stderr").read_text()
        pytest.fail(f"child exited by itself ({child.returncode}): {errors}")
    return reported


async def _check_invariants(
    path: Path, reported: dict[str, int], before: dict[str, int]
) -> dict[str, int]:
    with contextlib.closing(sqlite3.connect(path)) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    store = SqliteStore(str(path))
    await store.open()
    try:
        keys = [(SAGA, f"i{n}") for n in range(INSTANCES)]
        loaded = await store.load(keys)
        pending = await store.pending_outbox(limit=1_000_000)
        timers = {t.correlation_id: t.due for t in await store.due_timers(1e12, limit=100_000)}
        now: dict[str, int] = {}
        for (_, cid), record in loaded.items():
            v = now[cid] = record.version
            assert record.data.startswith(b"%d|" % v)
            assert record.state == f"s{v}"
            assert [h.seq for h in await store.history((SAGA, cid))] == list(range(1, v + 1))
            mine = [o for o in pending if o.key == cid]
            assert [o.id for o in mine] == [f"{cid}-{n}" for n in range(1, v + 1)]
            assert all(o.body.startswith(b"%d|" % int(o.id.rsplit("-", 1)[1])) for o in mine)
            marks = [(SAGA, f"{cid}-{n}") for n in range(1, v + 2)]
            assert await store.seen(marks) == set(marks[:-1])
            assert timers[cid] == float(v)
        for cid, v in reported.items():
            # Everything reported as committed is there; at most one more (unreported) batch.
            assert v <= now.get(cid, 0) <= v + 1, (cid, v, now.get(cid))
        for cid, v in before.items():
            assert now[cid] >= v
        assert set(timers) == set(now)
        return now
    finally:
        await store.close()


@pytest.mark.slow
@pytest.mark.timeout(120)
async def test_kill_9_mid_commit_leaves_only_whole_units(tmp_path: Path) -> None:
    path = tmp_path / "crash.db"
    rnd = random.Random(20240601)
    state: dict[str, int] = {}
    for round_ in range(4):
        reported = _run_and_kill(path, seed=round_, lines_before_kill=rnd.randint(5, 60))
        state = await _check_invariants(path, reported, state)
    assert sum(state.values()) > 0


async def test_newer_schema_version_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    store = SqliteStore(str(path))
    await store.open()
    await store.close()
    with contextlib.closing(sqlite3.connect(path)) as conn, conn:
        conn.execute("UPDATE sagawire_meta SET value = '7' WHERE key = 'schema_version'")
    with pytest.raises(SchemaVersionError) as info:
        await store.open()
    assert "version 7" in str(info.value)
    assert f"supports up to version {SCHEMA_VERSION}" in str(info.value)
    assert str(path) in str(info.value)
    assert not info.value.retryable


async def test_restart_keeps_timers_due_and_outbox_pending_with_ids(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'r.db'}"
    store = SqliteStore.from_url(url)
    await store.open()
    first = step("a", 1)
    first.timers_set = (timer("a", "expiry", 50.0), timer("a", "reminder", 10.0))
    first.outbox = (out("cmd-1"), out("cmd-2"), out("cmd-3"))
    await store.commit([first])
    await store.commit([step("b", 1)], published=["cmd-2"])
    await store.close()

    again = SqliteStore.from_url(url)
    await again.open()
    try:
        assert [o.id for o in await again.pending_outbox()] == ["cmd-1", "cmd-3", "b-o1"]
        assert await again.next_timer_due() == 10.0
        assert [t.name for t in await again.due_timers(50.0)] == ["reminder", "expiry"]
        assert await again.due_timers(9.0) == []
    finally:
        await again.close()
