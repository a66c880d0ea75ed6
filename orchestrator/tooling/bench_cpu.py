"""Where a bench run's CPU goes: this process, and the whole machine beside it.

Why: the broker and the simulated services share the machine with the engine, so a
ratio to the relay says how much of the relay's rate the engine keeps but not why.
Per message the relay's process pays one consume and one publish; per transition the
engine's run also pays the services' consume and publish and the broker's work for
twice the hops. The whole machine's busy time over the same window (Linux
``/proc/stat``) shows which side ran out of cores (docs/performance.md).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

__all__ = ["CpuClock", "CpuSpent", "machine_busy_s"]

_BUSY_FIELDS = (1, 2, 3, 6, 7, 8)  # user nice system (idle iowait) irq softirq steal


def machine_busy_s(stat: Path = Path("/proc/stat")) -> float | None:
    """Busy CPU seconds of the whole machine since boot, summed over its cores, or
    None where ``/proc/stat`` cannot be read (not Linux). Guest time is already in
    ``user``, so it is not added again."""
    try:
        fields = stat.read_text().split("\n", 1)[0].split()
        ticks = sum(int(fields[i]) for i in _BUSY_FIELDS)
        return ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


@dataclass(frozen=True, slots=True)
class CpuSpent:
    """CPU seconds over one timed window: this process's, and the whole machine's
    (None when unknown), which includes this process's."""

    own_s: float
    machine_s: float | None


class CpuClock:
    """Started at the beginning of a timed lot, read at its end."""

    def __init__(self) -> None:
        self._own = time.process_time()
        self._machine = machine_busy_s()

    def spent(self) -> CpuSpent:
        machine = machine_busy_s()
        began = self._machine
        return CpuSpent(
            time.process_time() - self._own,
            None if machine is None or began is None else max(0.0, machine - began),
        )
