"""The collector settings the sidecar and the bench apply at start-up."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from orchestrator.sidecar import gc_tuning
from orchestrator.sidecar.gc_tuning import DEFAULT_THRESHOLDS, gc_settings, tune_gc
from schemas.errors import ConfigError


@pytest.fixture(autouse=True)
def restore_gc(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    before = gc.get_threshold()
    monkeypatch.setattr(gc_tuning, "_tuned", False)
    yield
    gc.set_threshold(*before)
    gc.unfreeze()


def test_default_and_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SAGAWIRE_GC", raising=False)
    assert gc_settings() == DEFAULT_THRESHOLDS
    monkeypatch.setenv("SAGAWIRE_GC", "2000, 20, 30")
    assert gc_settings() == (2000, 20, 30)
    monkeypatch.setenv("SAGAWIRE_GC", "off")
    assert gc_settings() is None


def test_tune_freezes_and_sets_thresholds_once() -> None:
    assert tune_gc((2000, 20, 30)) is True
    assert gc.get_threshold() == (2000, 20, 30)
    assert gc.get_freeze_count() > 0
    assert tune_gc((5000, 10, 10)) is False  # process-wide: the first call wins
    assert gc.get_threshold() == (2000, 20, 30)


def test_none_leaves_the_collector_alone() -> None:
    gc.set_threshold(700, 10, 10)
    assert tune_gc(None) is False
    assert gc.get_threshold() == (700, 10, 10)


@pytest.mark.parametrize("spec", ["fast", "1,2", "1,2,3,4", "-1,10,10", "0,10,10"])
def test_bad_spec_is_a_config_error(spec: str) -> None:
    with pytest.raises(ConfigError, match="SAGAWIRE_GC"):
        gc_settings(spec)
