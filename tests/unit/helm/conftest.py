"""Fixtures: the chart rendered once per session with each values file."""

from __future__ import annotations

import pytest
from helm_support import PRODUCTION_VALUES, HelmRun, Rendered, render, run_helm


@pytest.fixture(scope="session")
def helm() -> HelmRun:
    """Run helm with arguments; returns the completed process (never raises on failure)."""
    return run_helm


@pytest.fixture(scope="session")
def default_release() -> Rendered:
    """The chart rendered with its default values (no prometheus-operator API)."""
    return render()


@pytest.fixture(scope="session")
def production_release() -> Rendered:
    """The chart rendered with values-production.yaml where the ServiceMonitor API exists."""
    return render([PRODUCTION_VALUES], ["--api-versions", "monitoring.coreos.com/v1"])


@pytest.fixture(scope="session", params=["default", "production"])
def release(
    request: pytest.FixtureRequest, default_release: Rendered, production_release: Rendered
) -> Rendered:
    """Each of the two renderings in turn."""
    return default_release if request.param == "default" else production_release
