"""`fedrelay bench workloads`: its arguments, and the figures of a workload's JSON line.

The figures are checked on a tiny job (a 4-4-2 perceptron on two workers' ``.npz`` files) run
through the same code as the real workloads, with Flower left out.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from fedrelay.bench import workloads
from fedrelay.bench.workloads import BenchWorkload, Target, measure
from fedrelay.cli import app
from fedrelay.protocol.data_spec import EvaluationSpec, TabularSchema, WorkerData
from fedrelay.protocol.job_config import JobConfig
from fedrelay.protocol.model_spec import MlpSpec
from fedrelay.training import encode_blob, keccak256

KEYS = {"workload", "rounds_to_target", "final_metric", "seconds_per_round", "update_bytes"}


def _tiny(directory: Path, target: Target, name: str = "lm") -> BenchWorkload:
    rng = np.random.default_rng(0)
    features = rng.normal(size=(96, 4)).astype(np.float32)
    labels = (features[:, 0] > 0).astype(np.int64)
    paths = []
    for worker in range(2):
        path = directory / f"worker-{worker}.npz"
        rows = slice(worker * 32, (worker + 1) * 32)
        np.savez(path, features=features[rows], labels=labels[rows])
        paths.append(path)
    evaluation = encode_blob({"features": features[64:], "labels": labels[64:]})
    config = JobConfig(
        model=MlpSpec(inputs=4, hidden=4, classes=2),
        data=WorkerData(schema=TabularSchema(features=(4,), classes=2), replay="none"),
        evaluation=EvaluationSpec(data_hash=keccak256(evaluation).hex(), metric="accuracy"),
        steps=4,
        checkpoint_every=2,
        batch_size=8,
    )
    return BenchWorkload(name, config, tuple(paths), evaluation, target, rounds=2)


def test_an_unknown_workload_is_refused_naming_the_known_ones() -> None:
    done = CliRunner().invoke(app, ["bench", "workloads", "--workload", "resnet"])
    assert done.exit_code == 2
    said = " ".join(done.output.replace("│", " ").split())  # the message, unwrapped
    assert "unknown workload 'resnet': choose from cnn, lm, lora" in said


def test_the_command_runs_the_named_workloads_in_order(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[list[str], dict[str, Any]]] = []
    monkeypatch.setattr(workloads, "run", lambda names, **kw: calls.append((list(names), kw)))
    argv = ["bench", "workloads", "-w", "lora", "-w", "cnn", "--rounds", "3", "--no-flower"]
    done = CliRunner().invoke(app, argv)
    assert done.exit_code == 0, done.output
    assert calls == [(["cnn", "lora"], {"rounds": 3, "flower": None, "directory": None})]
    done = CliRunner().invoke(app, ["bench", "workloads", "--flower-site", "/opt/flwr"])
    assert done.exit_code == 0, done.output
    assert calls[-1] == (
        ["cnn", "lm", "lora"],
        {"rounds": None, "flower": "/opt/flwr", "directory": None},
    )


def test_a_workload_line_has_the_figures(tmp_path: Path) -> None:
    line = measure(_tiny(tmp_path, Target("accuracy", value=0.0)), flower=None)
    assert set(line) >= KEYS
    assert line["workload"] == "lm"
    assert line["rounds_to_target"] == 1  # any accuracy reaches 0
    assert line["rounds"] == 2
    assert len(line["metric_per_round"]) == 2  # type: ignore[arg-type]
    assert line["final_metric"] == line["metric_per_round"][-1]  # type: ignore[index]
    assert isinstance(line["seconds_per_round"], float)
    assert line["seconds_per_round"] > 0
    # The update blob is the trained 4-4-2 perceptron's tensors, as a worker uploads them.
    assert line["update_bytes"] == line["model_bytes"]
    json.dumps(line)  # one JSON line


def test_a_target_never_reached_is_null_and_said(tmp_path: Path) -> None:
    line = measure(_tiny(tmp_path, Target("accuracy", value=1.5), name="cnn"), flower=None)
    assert line["rounds_to_target"] is None
    assert "not reached in 2 rounds" in str(line["target_note"])
    # cnn has a Flower side; without Flower its figures are there, and null.
    assert line["flower_rounds_to_target"] is None
    assert line["flower_final_metric"] is None


def test_a_factor_target_is_relative_to_the_initial_metric() -> None:
    target = Target("perplexity", factor=4.0)
    assert target.threshold(200.0) == 50.0
    assert target.reached(49.0, 50.0)
    assert not target.reached(51.0, 50.0)
    assert not Target("accuracy", value=0.9).reached(0.89, 0.9)
