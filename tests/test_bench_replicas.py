"""``scripts/bench_replicas.py``, small: its arguments, its line, and one tiny run on NATS.

The figures are not checked (a shared machine makes them anything); what is checked is
that the scale-out bench *works*: N sidecar processes start, the closed loop of orders
runs through them, and each run prints the one line the docs' table is read from
(docs/performance.md, "Running several sidecars").
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from scripts.bench_replicas import Row, format_row, parse_args
from tests.support.services import require

ROOT = Path(__file__).resolve().parents[1]
BUDGET = 40.0  # seconds the tiny run may take, its two runs' start-up and clean-up included

LINE = re.compile(
    r"broker=(?P<broker>\w+) replicas=(?P<replicas>\d+) sagas_per_s=(?P<rate>\d+\.\d)"
    r" vs_1=(?P<vs>\d+\.\d\dx|-) p50_ms=(?P<p50>\d+) p99_ms=(?P<p99>\d+)"
    r" deliveries=(?P<deliveries>\d+) conflicts=(?P<conflicts>\d+)"
    r" conflicts_per_delivery=(?P<cpd>\d\.\d{4}) deliveries_per_commit=(?P<dpc>\d+\.\d)"
    r" replica_cores=(?P<cores>[-\d.,]+)"
    r" cpu_ms_per_saga=(?P<cpu>\d+\.\d\d|-)"
    r" throttled=(?P<throttled>[-\d%,]+) cancelled=(?P<cancelled>\d+)"
    r" machine_busy=(?P<busy>\d+\.\d\d|-) load=\d+\.\d\d"
)


def test_arguments_and_their_defaults() -> None:
    args = parse_args([])
    assert args.brokers == ["kafka", "nats", "rabbitmq"]
    assert args.replicas == [1, 2, 4]
    assert (args.quota, args.in_flight, args.seconds, args.partitions) == (0.25, 200, 30.0, 4)
    assert (args.own_partitions, args.cache_size) == (0, 20000)
    args = parse_args(["--broker", "nats", "--replicas", "1,2", "--quota", "0", "--seconds", "3"])
    assert (args.brokers, args.replicas, args.quota, args.seconds) == (["nats"], [1, 2], 0.0, 3.0)


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["--broker", "kafak"], "invalid choice: 'kafak'"),
        (["--replicas", "1,0"], "every count must be 1 or more"),
        (["--replicas", "two"], "expected counts like 1,2,4"),
        (["--quota", "-1"], "must be 0 or more than 0"),
        (["--quota", "64"], "more than the machine's"),
        (["--seconds", "0"], "must be more than 0"),
        (["--store", "sqlite:///x.db"], "a postgresql:// server URL is needed"),
    ],
)
def test_bad_arguments_say_what_is_wrong(
    argv: list[str], says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        parse_args(argv)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert says in err and "Traceback" not in err


def test_the_line_a_run_prints() -> None:
    one = Row("nats", 1, 300.0, 600.0, 1000.0, 24000, 0, [0.25], [0.9], load=0.5)
    two = Row("nats", 2, 150.0, 1500.0, 9000.0, 12000, 4000, [0.2, 0.21], [0.1, None])
    line = format_row(two, one)
    m = LINE.fullmatch(line)
    assert m, line
    assert m["vs"] == "0.50x" and m["cpd"] == "0.3333" and m["throttled"] == "10%,-"
    assert m["cpu"] == "2.73"  # (0.2 + 0.21) cores over 150 sagas/s
    assert LINE.fullmatch(format_row(one, None))["vs"] == "-"  # type: ignore[index]


@pytest.mark.timeout(BUDGET + 20)
def test_a_tiny_run_on_nats() -> None:
    """N=1 and N=2 sidecar processes, 3 s each, no quota: one line per run."""
    require("nats", "127.0.0.1", 4222)
    require("postgres", "127.0.0.1", 5432)
    argv = [sys.executable, str(ROOT / "scripts" / "bench_replicas.py"), "--broker", "nats"]
    argv += ["--replicas", "1,2", "--quota", "0", "--seconds", "3", "--warmup", "1"]
    argv += ["--in-flight", "50"]
    started = time.monotonic()
    # A session of its own: on a timeout the script and its sidecars go down together.
    proc = subprocess.Popen(
        argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True
    )
    try:
        out, err = proc.communicate(timeout=BUDGET)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGTERM)  # the script cleans up on SIGTERM
        try:
            out, err = proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, err = proc.communicate()
        pytest.fail(
            f"the tiny run took more than {BUDGET:g}s (load {os.getloadavg()[0]:.1f}):\n"
            + (out + err).decode(errors="replace")[-2000:]
        )
    text = out.decode()
    assert proc.returncode == 0, text + err.decode(errors="replace")
    lines = text.splitlines()
    assert lines[0].startswith("# cores="), text
    rows = [m for line in lines if (m := LINE.fullmatch(line))]
    assert [(m["broker"], m["replicas"]) for m in rows] == [("nats", "1"), ("nats", "2")], text
    for m in rows:
        assert float(m["rate"]) > 0 and int(m["deliveries"]) > 0, m.string
        assert m["cancelled"] == "0" and m["throttled"].strip("-,") == "", m.string
        assert float(m["cpu"]) > 0, m.string  # the replicas' CPU, read from /proc
    assert rows[0]["vs"] == "1.00x"
    assert time.monotonic() - started < BUDGET
