"""The bench's CPU accounting: the whole machine's busy time from /proc/stat."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest

from orchestrator.tooling.bench_cpu import CpuClock, machine_busy_s


def test_busy_time_counts_user_system_and_interrupts_but_not_idle(tmp_path: Path) -> None:
    stat = tmp_path / "stat"
    #                user nice system idle  iowait irq softirq steal guest guest_nice
    stat.write_text("cpu  100 20 30 5000 400 5 6 7 50 0\ncpu0 1 2 3 4 5 6 7 8 9 10\n")
    tick = os.sysconf("SC_CLK_TCK")
    assert machine_busy_s(stat) == pytest.approx((100 + 20 + 30 + 5 + 6 + 7) / tick)


def test_busy_time_is_unknown_where_proc_stat_is_missing_or_odd(tmp_path: Path) -> None:
    assert machine_busy_s(tmp_path / "absent") is None
    odd = tmp_path / "stat"
    odd.write_text("cpu  1 2\n")
    assert machine_busy_s(odd) is None


@pytest.mark.skipif(sys.platform != "linux", reason="/proc/stat is Linux's")
def test_a_busy_loop_shows_in_this_process_and_in_the_machine() -> None:
    clock = CpuClock()
    end = time.process_time() + 0.2
    while time.process_time() < end:
        pass
    spent = clock.spent()
    assert spent.own_s >= 0.2
    assert spent.machine_s is not None
    # The machine's figure has a tick's resolution (10 ms) and includes this process.
    assert spent.machine_s >= spent.own_s - 0.05
