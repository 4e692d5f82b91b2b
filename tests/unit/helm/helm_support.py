"""Rendering the chart with the real helm binary (`helm template`, `helm lint`), no cluster."""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from fedrelay.adapters.devnet.toolchain import REPO_ROOT, helm_binary

CHART = REPO_ROOT / "helm" / "fedrelay"
PRODUCTION_VALUES = CHART / "values-production.yaml"
KUBE_VERSION = "1.30.0"
"""Kubernetes version the rendered objects are validated against (schemas bundled offline).

helm renders for the Kubernetes version it was built with (`make setup` stamps it in, as helm's
release build does), so no command passes ``--kube-version``."""
RELEASE = "fr"


@dataclass(frozen=True)
class Rendered:
    """A rendered release: its values and its objects."""

    values: dict[str, Any]
    objects: tuple[dict[str, Any], ...]
    text: str

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        return [o for o in self.objects if o["kind"] == kind]

    def named(self, kind: str, name: str) -> dict[str, Any]:
        found = [o for o in self.of_kind(kind) if o["metadata"]["name"] == name]
        assert len(found) == 1, f"expected one {kind} named {name}, found {len(found)}"
        return found[0]


HelmRun = Callable[..., subprocess.CompletedProcess[str]]


def _helm(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(helm_binary()), *args], capture_output=True, text=True, timeout=60, check=False
    )


def merged_values(files: Sequence[Path]) -> dict[str, Any]:
    """The chart's defaults with `files` laid over them, the way helm merges maps."""

    def merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
        out = dict(base)
        for key, value in top.items():
            if isinstance(value, dict) and isinstance(out.get(key), dict):
                out[key] = merge(out[key], value)
            else:
                out[key] = value
        return out

    values: dict[str, Any] = yaml.safe_load((CHART / "values.yaml").read_text())
    for path in files:
        values = merge(values, yaml.safe_load(path.read_text()))
    return values


def render(files: Sequence[Path] = (), extra: Sequence[str] = ()) -> Rendered:
    """`helm template` the chart; fails the test with helm's message when rendering fails."""
    args = ["template", RELEASE, str(CHART), "--namespace", "fedrelay"]
    for path in files:
        args += ["-f", str(path)]
    result = _helm(*args, *extra)
    assert result.returncode == 0, result.stderr
    objects = tuple(doc for doc in yaml.safe_load_all(result.stdout) if doc)
    return Rendered(merged_values(files), objects, result.stdout)


def run_helm(*args: str) -> subprocess.CompletedProcess[str]:
    """Run helm with arguments; returns the completed process (never raises on failure)."""
    return _helm(*args)
