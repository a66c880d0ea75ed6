"""The Grafana dashboard (``deploy/grafana/sagawire.json``) reads only what the sidecar
exports: every metric each query names is checked against a real sidecar's ``/metrics``
after a run (:mod:`tests.support.sidecar_run`), so a renamed or dropped family fails
here, not on an operator's screen. And every family issue 17 asks for has a panel.

A query's metric names are what is left of its PromQL once strings, label matchers,
ranges, durations, ``by (...)`` lists and the label of Grafana's ``label_values``
are taken out: every identifier that is not a function
(followed by ``(``) or a keyword. Histogram series (``_bucket``, ``_sum``, ``_count``)
count as their family, as do a counter's ``_total`` samples.
"""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any

import pytest

from tests.support.sidecar_run import FAMILIES, families, run_orders

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "sagawire.json"

_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and",
             "or", "unless", "offset", "inf", "nan"}  # fmt: skip
_STRIP = (
    re.compile(r'"(?:[^"\\]|\\.)*"'),  # strings: label values, label_values() arguments
    re.compile(r"\{[^}]*\}"),  # label matchers
    re.compile(r"\[[^\]]*\]"),  # ranges
    re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)"),
    re.compile(r"\b(?:\d+(?:ms|[smhdwy]))+\b"),  # durations (offset 5m)
)
_LABEL_VALUES = re.compile(r"\blabel_values\(\s*([^,()]+?)\s*,\s*\w+\s*\)")
"""Grafana's ``label_values(metric, label)``: the metric is read, the label is not."""
_IDENT = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*(?=\s*(\(?))")


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads (see the module docstring)."""
    expr = _LABEL_VALUES.sub(r"(\1)", expr)
    for pattern in _STRIP:
        expr = pattern.sub(" ", expr)
    expr = re.sub(r"\$\w+", " ", expr)  # Grafana variables left outside matchers
    names = set()
    for m in _IDENT.finditer(expr):
        if m.group(1) or m.group(0).lower() in _KEYWORDS:
            continue  # a function call, or a keyword
        if re.fullmatch(r"\d.*|e\d+", m.group(0)):
            continue
        names.add(m.group(0))
    return names


def exported(text: str) -> set[str]:
    """Every series name an exposition has, and those its families stand for."""
    names: set[str] = set()
    for family in families(text).values():
        names.update(s.name for s in family.samples)
        if family.type == "counter":
            names.add(family.name + "_total")
        elif family.type == "histogram":
            names.update(family.name + suffix for suffix in ("_bucket", "_sum", "_count"))
        else:
            names.add(family.name)
    return names


def _family(name: str) -> str:
    for suffix in ("_bucket", "_sum", "_count", "_total"):
        if name.endswith(suffix) and name[: -len(suffix)] in FAMILIES:
            return name[: -len(suffix)]
    return name


def queries(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """``(where, PromQL)`` of every panel target and every templating query."""
    out = []
    for panel in dashboard["panels"]:
        for target in panel.get("targets", ()):
            out.append((f"panel {panel['title']!r} {target['refId']}", target["expr"]))
    for var in dashboard["templating"]["list"]:
        query = var.get("query")
        if isinstance(query, dict):
            out.append((f"variable {var['name']!r}", query["query"]))
    return out


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return data


@pytest.fixture(scope="module")
def scraped(tmp_path_factory: pytest.TempPathFactory) -> str:
    return asyncio.run(run_orders(tmp_path_factory.mktemp("dashboard"))).after


def test_metric_names_are_read_off_promql() -> None:
    expr = (
        'histogram_quantile(0.95, sum by (le, saga) (rate(sagawire_x_bucket{saga=~"$saga",'
        ' status="completed"}[$__rate_interval]))) / on (saga) group_left sum(up offset 5m)'
        " > bool 1e3 and label_values(sagawire_y, saga)"
    )
    assert metric_names(expr) == {"sagawire_x_bucket", "up", "sagawire_y"}


def test_every_query_names_only_exported_metrics(dashboard: dict[str, Any], scraped: str) -> None:
    have = exported(scraped)
    problems = []
    found = queries(dashboard)
    assert len(found) > 20
    for where, expr in found:
        names = metric_names(expr)
        if not names:
            problems.append(f"{where}: names no metric: {expr}")
        problems += [f"{where}: {n} is not exported" for n in sorted(names - have)]
    assert not problems, "\n".join(problems)


def test_every_required_family_has_a_panel(dashboard: dict[str, Any]) -> None:
    shown = {_family(n) for _, expr in queries(dashboard) for n in metric_names(expr)}
    assert set(FAMILIES) - shown == set()


def test_the_layout_is_well_formed(dashboard: dict[str, Any]) -> None:
    assert dashboard["uid"] == "sagawire"
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    cells: set[tuple[int, int]] = set()
    for panel in dashboard["panels"]:
        pos = panel["gridPos"]
        assert pos["x"] + pos["w"] <= 24, panel["title"]
        mine = {(x, y) for x in range(pos["x"], pos["x"] + pos["w"])
                for y in range(pos["y"], pos["y"] + pos["h"])}  # fmt: skip
        assert not cells & mine, f"panel {panel['title']!r} overlaps another"
        cells |= mine
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
            assert panel["description"], panel["title"]
            assert all(t["expr"] for t in panel["targets"]), panel["title"]
