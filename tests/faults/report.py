"""The measured figures: printed as they come (``pytest -s``) and summed up at the end."""

from __future__ import annotations

import statistics
from collections.abc import Sequence

from tests.faults.mode import MODE

FIGURES: list[str] = []
"""Every line reported this session; the conftest prints them in the terminal summary."""


def report(line: str) -> None:
    line = f"[faults/{MODE}] {line}"
    FIGURES.append(line)
    print(line, flush=True)


def duration(value: float | None) -> str:
    return "never" if value is None else f"{value:.2f}s"


def spread(values: Sequence[float]) -> str:
    """p50/p95/max of latencies in seconds, for one line."""
    if not values:
        return "n=0"
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))]
    return (
        f"n={len(ordered)} p50={statistics.median(ordered):.3f}s "
        f"p95={p95:.3f}s max={ordered[-1]:.3f}s"
    )


def p95(values: Sequence[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))] if ordered else 0.0
