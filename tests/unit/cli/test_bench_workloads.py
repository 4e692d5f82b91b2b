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
from fedrelay.bench.federation import flower_site
from fedrelay.bench.workloads import measure, meets_flower
from fedrelay.cli import app
from fedrelay.demo.workloads import PreparedWorkload, Target, Workload, WorkloadName
from fedrelay.protocol.data_spec import EvaluationSpec, TabularSchema, WorkerData
from fedrelay.protocol.job_config import JobConfig
from fedrelay.protocol.model_spec import MlpSpec
from fedrelay.training import encode_blob, keccak256

KEYS = {"workload", "rounds_to_target", "final_metric", "seconds_per_round", "update_bytes"}


def _tiny(
    directory: Path, accuracy: float, name: WorkloadName = "lm", seed: int = 0
) -> PreparedWorkload:
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
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
        seed=seed,
        steps=4,
        checkpoint_every=2,
        batch_size=8,
    )
    target = Target("accuracy", accuracy, rounds=1)
    return PreparedWorkload(Workload(name, "tiny", target), config, tuple(paths), evaluation)


def test_an_unknown_workload_is_refused_naming_the_known_ones() -> None:
    done = CliRunner().invoke(app, ["bench", "workloads", "--workload", "resnet"])
    assert done.exit_code == 2
    said = " ".join(done.output.replace("│", " ").split())  # the message, unwrapped
    assert "unknown workload 'resnet': choose from cnn, lm, lora" in said


def test_the_command_runs_the_named_workloads_in_order(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[list[str], dict[str, Any]]] = []
    monkeypatch.setattr(workloads, "run", lambda names, **kw: calls.append((list(names), kw)))
    argv = ["bench", "workloads", "-w", "lora", "-w", "cnn", "--rounds", "3", "--no-flower"]
    done = CliRunner().invoke(app, [*argv, "--split", "iid", "--workers", "2"])
    assert done.exit_code == 0, done.output
    defaults = {"seed": 0, "seeds": 5, "directory": None}
    expected = {"workers": 2, "split": "iid", "rounds": 3, "flower": None, **defaults}
    assert calls == [(["cnn", "lora"], expected)]
    done = CliRunner().invoke(app, ["bench", "workloads", "--flower-site", "/opt/flwr"])
    assert done.exit_code == 0, done.output
    expected = {"workers": 4, "split": None, "rounds": None, "flower": "/opt/flwr", **defaults}
    assert calls[-1] == (["cnn", "lm", "lora"], expected)


def test_an_unknown_split_is_refused() -> None:
    done = CliRunner().invoke(app, ["bench", "workloads", "--split", "zipf"])
    assert done.exit_code == 2
    said = " ".join(done.output.replace("│", " ").split())
    assert "unknown split 'zipf': choose from dirichlet, iid" in said


def test_a_workload_line_has_the_figures(tmp_path: Path) -> None:
    line = measure(_tiny(tmp_path, 0.0), rounds=2, flower=None)
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
    line = measure(_tiny(tmp_path, 1.5, name="cnn"), rounds=2, flower=None)
    assert line["rounds_to_target"] is None
    assert str(line["target_note"]) == "target not reached: accuracy >= 1.50 in 1 rounds, ran 2"
    # cnn has a Flower side; without Flower its figures are there, and null.
    assert line["flower_rounds_to_target"] is None
    assert line["flower_final_metric"] is None


def test_the_flower_bar_is_rounds_no_more_and_accuracy_within_half_a_point() -> None:
    meets, gap = meets_flower((3, 0.950), (3, 0.954))
    assert meets
    assert gap == pytest.approx(-0.4)
    assert not meets_flower((3, 0.950), (3, 0.956))[0]  # 0.6 point below
    assert not meets_flower((4, 0.990), (3, 0.950))[0]  # one round slower
    assert not meets_flower((None, 0.990), (3, 0.950))[0]  # never reached
    assert meets_flower((None, 0.990), (None, 0.950))[0]  # neither reached it


@pytest.mark.skipif(flower_site() is None, reason="no Flower site (make setup installs one)")
def test_flower_runs_beside_cnn_over_the_seeds(tmp_path: Path) -> None:
    first, second = _tiny(tmp_path / "0", 0.5, "cnn"), _tiny(tmp_path / "1", 0.5, "cnn", seed=1)
    line = measure(first, rounds=2, more_seeds=[second])
    assert isinstance(line["flower_final_metric"], float)
    over = line["over_seeds"]
    assert isinstance(over, dict)
    assert over["seeds"] == [0, 1]
    assert len(over["flower_final_metric"]) == 2
    # The headline figures are the means over the seeds, and the line says so.
    assert line["final_metric"] == over["mean_final_metric"]
    assert line["flower_final_metric"] == over["flower_mean_final_metric"]
    assert line["rounds_to_target"] == over["mean_rounds_to_target"]
    assert "means over seeds [0, 1]" in str(line["figures"])
    assert isinstance(line["meets_flower"], bool)
    # Given the same weights, Flower's FedAvg is fedrelay's up to float rounding after a round.
    control = line["control"]
    assert isinstance(control, dict)
    assert control["param_diff_per_round"][0] < 1e-6
