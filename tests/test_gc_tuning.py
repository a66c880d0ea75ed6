"""The collector settings the sidecar and the bench apply at start-up."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from orchestrator.gc_tuning import DEFAULT_THRESHOLDS, tune_gc
from schemas.errors import ConfigError


@pytest.fixture(autouse=True)
def restore_gc() -> Iterator[None]:
    before = gc.get_threshold()
    yield
    gc.set_threshold(*before)
    gc.unfreeze()


def test_defaults_freeze_and_raise_thresholds(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SAGAWIRE_GC", raising=False)
    assert tune_gc() == DEFAULT_THRESHOLDS
    assert gc.get_threshold() == DEFAULT_THRESHOLDS
    assert gc.get_freeze_count() > 0


def test_env_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SAGAWIRE_GC", "2000, 20, 30")
    assert tune_gc() == (2000, 20, 30)
    assert gc.get_threshold() == (2000, 20, 30)


def test_off_leaves_the_collector_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    gc.set_threshold(700, 10, 10)
    monkeypatch.setenv("SAGAWIRE_GC", "off")
    assert tune_gc() is None
    assert gc.get_threshold() == (700, 10, 10)


@pytest.mark.parametrize("spec", ["fast", "1,2", "1,2,3,4", "-1,10,10"])
def test_bad_spec_is_a_config_error(spec: str) -> None:
    with pytest.raises(ConfigError, match="SAGAWIRE_GC"):
        tune_gc(spec)
