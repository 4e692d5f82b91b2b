"""The Grafana dashboard is valid dashboard JSON over the metrics the runbook documents."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

import pytest
from helm_support import CHART, PRODUCTION_VALUES, Rendered, render
from prometheus_client import CollectorRegistry

from fedrelay.adapters.devnet.toolchain import REPO_ROOT
from fedrelay.coordinator.metrics import CoordinatorMetrics
from fedrelay.relayer.stage import StageMetrics
from fedrelay.worker.proposal_watch import WatchMetrics

DASHBOARD = CHART / "dashboards" / "fedrelay.json"
RUNBOOK = REPO_ROOT / "docs" / "operations.md"
METRIC = re.compile(r"\bfedrelay_[a-z0-9_]+\b")
SERIES_SUFFIXES = ("_bucket", "_sum", "_count")


def _dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def _queried_metrics() -> set[str]:
    names: set[str] = set()
    for panel in _dashboard()["panels"]:
        for target in panel.get("targets", []):
            names |= set(METRIC.findall(target["expr"]))
    return names


def _documented_metrics() -> set[str]:
    """Metric names in the runbook's metrics table (rows starting with a `fedrelay_` name)."""
    rows = re.findall(r"^\| `(fedrelay_[a-z0-9_]+)`", RUNBOOK.read_text(), flags=re.MULTILINE)
    return set(rows)


def _family(series: str) -> str:
    for suffix in SERIES_SUFFIXES:
        if series.endswith(suffix):
            return series.removesuffix(suffix)
    return series


def test_dashboard_is_grafana_dashboard_json() -> None:
    dashboard = _dashboard()
    assert dashboard["uid"] == "fedrelay-overview"
    assert dashboard["title"]
    assert isinstance(dashboard["schemaVersion"], int)
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    graphs = [p for p in dashboard["panels"] if p["type"] != "row"]
    assert len(graphs) >= 9
    for panel in graphs:
        assert panel["type"] in {"timeseries", "stat"}
        assert panel["title"]
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24
        assert panel["targets"], f"panel {panel['title']!r} queries nothing"
        for target in panel["targets"]:
            assert METRIC.search(target["expr"]), target["expr"]
            assert target["refId"]


def test_dashboard_covers_what_operators_watch() -> None:
    queried = {_family(name) for name in _queried_metrics()}
    assert {
        "fedrelay_stage_processed_total",
        "fedrelay_stage_failed_total",
        "fedrelay_stage_queue_depth",
        "fedrelay_stage_latency_seconds",
        "fedrelay_stage_last_seen_timestamp_seconds",
        "fedrelay_dlq_entries",
        "fedrelay_coordinator_rounds_total",
        "fedrelay_coordinator_round_workers",
        "fedrelay_coordinator_payouts_total",
    } <= queried


def test_every_queried_metric_is_documented_in_the_runbook() -> None:
    documented = _documented_metrics()
    assert documented
    for name in _queried_metrics():
        assert name in documented or _family(name) in documented, f"{name} is not in the runbook"


def _series_names(registry: CollectorRegistry) -> set[str]:
    """Every series name a registry's metric families expose (before any label is set)."""
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}
    return {
        family.name + suffix
        for family in registry.collect()
        for suffix in suffixes.get(family.type, ("",))
    }


@pytest.mark.parametrize(
    ("prefixes", "register"),
    [
        (("fedrelay_stage_", "fedrelay_dlq_"), StageMetrics),
        (("fedrelay_coordinator_",), CoordinatorMetrics),
        (("fedrelay_proposal_watch_",), WatchMetrics),
    ],
    ids=["relayer-stages", "coordinator", "proposal-watch"],
)
def test_metrics_on_the_dashboard_are_the_ones_the_code_exports(
    prefixes: tuple[str, ...], register: Callable[[CollectorRegistry], object]
) -> None:
    registry = CollectorRegistry()
    register(registry)
    exported = _series_names(registry)
    queried = {name for name in _queried_metrics() if name.startswith(prefixes)}
    assert queried
    assert queried <= exported, queried - exported
    documented = {n for n in _documented_metrics() if n.startswith(prefixes)}
    assert documented == {_family(n) for n in exported}


def test_no_metric_in_the_runbook_is_still_planned() -> None:
    rows = re.findall(r"^\| `fedrelay_.*$", RUNBOOK.read_text(), flags=re.MULTILINE)
    assert rows
    assert not [row for row in rows if "(planned)" in row]


def test_dashboard_ships_as_a_config_map_only_when_enabled(default_release: Rendered) -> None:
    assert not [
        c
        for c in default_release.of_kind("ConfigMap")
        if c["metadata"]["name"].endswith("-dashboard")
    ]
    production = render([PRODUCTION_VALUES])
    (config,) = [
        c for c in production.of_kind("ConfigMap") if c["metadata"]["name"].endswith("-dashboard")
    ]
    assert config["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(config["data"]["fedrelay.json"]) == _dashboard()
