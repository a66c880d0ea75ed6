"""Garbage-collector settings for a long-running engine process.

Why: every transition allocates a few dozen short-lived containers (envelopes,
pydantic models, records, dicts). With CPython's default thresholds (700, 10, 10)
that triggers a young collection every few transitions and, every hundred, a
middle one that walks everything still alive: the instance cache, the batches
in flight, the loaded modules. Measured on ``sagawire bench --store sqlite``:
about 10% of the process's CPU went to the collector, and
``(10_000, 50, 100)`` with the start-up objects frozen gave ~15% more
transitions per second. A young collection at 10,000 still cost ~4 ms (what the
in-flight work keeps alive is walked, then promoted) and took 16% of the decide ->
commit path (``gc.callbacks`` timing, no broker); at 50,000 the path ran ~17% faster
and the in-memory bench 5-10% (10,000 sagas, both stores; RSS unchanged), while
200,000 was no better than 50,000 (a collection that large leaves the CPU caches
cold). The middle threshold went from 50 to 20 so that a middle collection still
comes every ~1M net allocations (50,000 x 20; it was 10,000 x 50 = 500k), not every
2.5M. The engine's decide -> commit path creates no reference cycles (checked with
``gc.DEBUG_SAVEALL``), so collecting later costs nothing that matters.

``SAGAWIRE_GC`` overrides the thresholds (``"50000,20,100"``), ``off`` leaves
Python's defaults alone. It is read (and a bad value refused) at start-up, and
applied once per process: the settings are process-wide, and a second freeze would
pin whatever a previous run in the same process left behind (tests, repeated
benches).
"""

from __future__ import annotations

import gc
import os

from schemas.errors import ConfigError

__all__ = ["DEFAULT_THRESHOLDS", "gc_settings", "tune_gc"]

DEFAULT_THRESHOLDS = (50_000, 20, 100)

_tuned = False


def gc_settings(spec: str | None = None) -> tuple[int, int, int] | None:
    """The thresholds ``spec`` (default ``$SAGAWIRE_GC``) asks for; None for ``off``.
    Raises ConfigError for anything else than three integers (the first > 0) or ``off``."""
    return _thresholds(os.environ.get("SAGAWIRE_GC") if spec is None else spec)


def _thresholds(spec: str | None) -> tuple[int, int, int] | None:
    if spec is None or not spec.strip():
        return DEFAULT_THRESHOLDS
    if spec.strip().lower() == "off":
        return None
    try:
        parts = tuple(int(p) for p in spec.split(","))
    except ValueError:
        parts = ()
    if len(parts) != 3 or parts[0] <= 0 or any(p < 0 for p in parts):
        raise ConfigError(
            f"SAGAWIRE_GC={spec!r}: expected three integers such as '50000,20,100' (the first"
            " above 0: 0 would turn collection off), or 'off'"
        )
    return parts[0], parts[1], parts[2]


def tune_gc(thresholds: tuple[int, int, int] | None) -> bool:
    """Freeze what start-up allocated and set ``thresholds`` (from :func:`gc_settings`),
    once per process. Returns whether it did so (not for None, nor a second time).

    Call once the sagas are loaded and the store and broker are open: what exists
    then lives as long as the process, so later full collections need not walk it."""
    global _tuned
    if _tuned or thresholds is None:
        return False
    _tuned = True
    gc.collect()
    gc.freeze()
    gc.set_threshold(*thresholds)
    return True
