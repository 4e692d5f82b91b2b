"""`fedrelay bench workloads`: the CNN, language-model and LoRA jobs, round by round, with figures.

For each workload (``cnn``, ``lm``, ``lora``) the bench writes every worker's own data to files,
loads each worker's files back as the worker does (:func:`fedrelay.training.datasets.load_examples`
against the job's schema) and runs the job's rounds as the coordinator runs them, in one process:

- each worker trains the round's model with the job's trainer (``TorchTrainer`` built from the
  job's model spec and recipe, :class:`~fedrelay.coordinator.verification.replay.JobWorkbench`)
  under the job's training configuration for its example count, and its update is its trained
  model's trainable tensors (a LoRA update holds only the adapters);
- the coordinator's strategy for the job (``build_strategy``) aggregates the deltas, each update
  weighing 1 (on the workers' own data no self-reported count buys weight);
- the new model is evaluated on the poster's evaluation set with the job's metric.

Workers train one after another in this process, so ``seconds_per_round`` is the sum of every
worker's training plus aggregation and evaluation: an upper bound of a round whose workers train
in parallel.

For ``cnn`` Flower runs the same rounds next to it: the same clients (the same trainers on the
same files, seeds and local training), with Flower's own ``FedAvg.aggregate_fit`` as the server
step (in a separate interpreter, :class:`fedrelay.bench.flower.FlowerFedAvg`), each client
reporting its example count as a Flower client does. The two sides alternate round by round.

Each workload prints one JSON line with ``workload``, ``rounds_to_target`` (the first round,
1-based, whose metric reaches the target; null when none does, and ``target_note`` says so),
``final_metric``, ``seconds_per_round`` and ``update_bytes`` (one update blob as a worker
uploads it); for ``cnn`` also ``flower_rounds_to_target`` and ``flower_final_metric``, and
``meets_flower`` (fedrelay's rounds to target at most Flower's, its final accuracy at most 0.5
point below Flower's).
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from fedrelay.bench.federation import Federation, fedrelay_step, flower_site, flower_step
from fedrelay.coordinator.aggregation.configured import build_strategy
from fedrelay.coordinator.verification.replay import JobWorkbench
from fedrelay.protocol.data_spec import Metric, TextSchema
from fedrelay.protocol.job_config import JobConfig
from fedrelay.protocol.training_config import TrainingConfig
from fedrelay.training.data import Dataset, TokenDataset
from fedrelay.training.trainer import ModelTensors

WORKLOADS = ("cnn", "lm", "lora")
"""The workloads, in the order they run."""

WorkloadName = Literal["cnn", "lm", "lora"]

FLOWER_WORKLOADS = ("cnn",)
"""The workloads Flower runs next to fedrelay."""

ACCURACY_SLACK_POINTS = 0.5
"""fedrelay's final accuracy may be at most this many points below Flower's."""


@dataclass(frozen=True)
class Target:
    """What a workload must reach: ``metric`` at least ``value`` (accuracy), or at most the
    initial model's divided by ``factor`` (loss, perplexity)."""

    metric: Metric
    value: float | None = None
    factor: float | None = None

    @property
    def higher_is_better(self) -> bool:
        """Accuracy rises; loss and perplexity fall."""
        return self.metric == "accuracy"

    def threshold(self, initial: float) -> float:
        """The metric to reach, given the initial model's ``initial``."""
        if self.value is not None:
            return self.value
        assert self.factor is not None
        return initial / self.factor

    def reached(self, metric: float, threshold: float) -> bool:
        """Whether ``metric`` reaches ``threshold``."""
        return metric >= threshold if self.higher_is_better else metric <= threshold


@dataclass(frozen=True)
class BenchWorkload:
    """A workload ready to run: its job, each worker's files, the poster's evaluation set.

    Attributes:
        name: ``cnn``, ``lm`` or ``lora``.
        config: The job's configuration.
        data: Each worker's own data (a file or folder), one per worker.
        evaluation: The poster's evaluation blob (``config.evaluation.data_hash``).
        blobs: Other blobs the job names, by name (LoRA base weights, a vocabulary).
        target: What the job should reach.
        rounds: Rounds to run.
        description: The data and model, in words.
    """

    name: str
    config: JobConfig
    data: tuple[Path, ...]
    evaluation: bytes
    target: Target
    rounds: int
    description: str = ""
    blobs: Mapping[str, bytes] = field(default_factory=dict)


Prepare = Callable[[str, Path], BenchWorkload]
"""Writes workload ``name``'s data under a directory and returns it ready to run."""


def _load(workload: BenchWorkload) -> list[Dataset | TokenDataset]:
    """Each worker's examples, read from its files as the worker reads them."""
    from fedrelay.training.datasets import load_examples

    own = workload.config.worker_data
    if own is None:
        raise ValueError(f"workload {workload.name}: the bench runs jobs on the workers' own data")
    schema = own.schema_
    vocabulary = None
    if isinstance(schema, TextSchema) and schema.vocabulary_hash:
        vocabulary = workload.blobs[schema.vocabulary_hash]
    return [load_examples(path, schema, vocabulary) for path in workload.data]


def _figures(side: Federation, target: Target, threshold: float) -> tuple[int | None, float]:
    reached = next(
        (i + 1 for i, m in enumerate(side.metrics) if target.reached(m, threshold)), None
    )
    return reached, side.metrics[-1]


def _flower_bar(
    ours: tuple[int | None, float], theirs: tuple[int | None, float]
) -> tuple[bool, float]:
    """Whether fedrelay meets Flower's figures, and the final metric's gap in points."""
    (our_rounds, our_final), (their_rounds, their_final) = ours, theirs
    rounds_ok = their_rounds is None or (our_rounds is not None and our_rounds <= their_rounds)
    gap = (our_final - their_final) * 100
    return rounds_ok and gap >= -ACCURACY_SLACK_POINTS, gap


def measure(
    workload: BenchWorkload, *, rounds: int | None = None, flower: str | None = "auto"
) -> dict[str, object]:
    """Run ``workload`` and return its JSON line's figures.

    Args:
        workload: The workload, its data written.
        rounds: Rounds to run (default: the workload's own).
        flower: ``"auto"`` runs Flower beside fedrelay where the workload has a Flower side
            (found by :func:`~fedrelay.bench.federation.flower_site`); a directory names the
            Flower site; None runs fedrelay alone.
    """
    from fedrelay.bench.flower import FlowerFedAvg, FlowerUnavailable
    from fedrelay.training import encode_blob
    from fedrelay.training.torch_trainer import TorchTrainer

    rounds = rounds or workload.rounds
    config = workload.config
    bench = JobWorkbench(config, workload.evaluation)
    clients = _load(workload)
    initial = bench.initial_model(lambda name: workload.blobs[name])
    spec = config.model

    def trainers() -> list[TorchTrainer]:
        return [
            TorchTrainer(bench.factory, spec.objective, data, trainable=spec.trainable)
            for data in clients
        ]

    def config_of(number: int, index: int) -> TrainingConfig:
        return config.training_config(len(clients[index]))

    def metric(model: ModelTensors) -> float:
        return bench.evaluate(model)[1]

    started = metric(initial)
    threshold = workload.target.threshold(started)
    # Warm torch up first, so one-time start-up costs land on no round's timing.
    trainers()[0].train(initial, config_of(0, 0))
    ours = Federation(
        fedrelay_step(build_strategy(config), spec.trainable),
        trainers(),
        [1 if config.worker_data is not None else len(d) for d in clients],
        config_of,
        initial,
        metric,
        measure_updates=True,
    )
    sides = [ours]
    line: dict[str, object] = {"workload": workload.name}
    flower_side: FlowerFedAvg | None = None
    if flower is not None and workload.name in FLOWER_WORKLOADS:
        site = flower_site(None if flower == "auto" else flower)
        try:
            flower_side = FlowerFedAvg(site)
        except FlowerUnavailable as exc:
            line["flower_unavailable"] = f"{exc} (site {site})"
        else:
            sides.append(
                Federation(
                    flower_step(flower_side),
                    trainers(),
                    [len(d) for d in clients],
                    config_of,
                    initial,
                    metric,
                )
            )
    try:
        for number in range(rounds):
            for side in sides:  # alternating, so machine load affects both sides alike
                side.round(number)
    finally:
        if flower_side is not None:
            flower_side.close()
    reached, final = _figures(ours, workload.target, threshold)
    model_bytes = len(encode_blob(initial))
    line.update(
        {
            "rounds_to_target": reached,
            "final_metric": round(final, 4),
            "seconds_per_round": round(ours.round_s / rounds, 3),
            "update_bytes": ours.update_bytes,
            "metric": workload.target.metric,
            "target": round(threshold, 4),
            "initial_metric": round(started, 4),
            "rounds": rounds,
            "workers": len(clients),
            "examples_per_worker": [len(d) for d in clients],
            "model_bytes": model_bytes,
            "update_fraction_of_model": round(ours.update_bytes / model_bytes, 4),
            "train_s_per_round": round(ours.train_s / rounds, 3),
            "aggregate_s_per_round": round(ours.aggregate_s / rounds, 5),
            "metric_per_round": [round(m, 4) for m in ours.metrics],
            "strategy": config.strategy,
            "data": workload.description,
        }
    )
    if reached is None:
        line["target_note"] = (
            f"the target {workload.target.metric} {threshold:.4g} was not reached in "
            f"{rounds} rounds"
        )
    if len(sides) > 1:
        theirs = sides[1]
        flower_reached, flower_final = _figures(theirs, workload.target, threshold)
        meets, gap = _flower_bar((reached, final), (flower_reached, flower_final))
        line.update(
            {
                "flower_rounds_to_target": flower_reached,
                "flower_final_metric": round(flower_final, 4),
                "flower_version": flower_side.version if flower_side else None,
                "flower_seconds_per_round": round(theirs.round_s / rounds, 3),
                "flower_metric_per_round": [round(m, 4) for m in theirs.metrics],
                "final_metric_gap_points": round(gap, 3),
                "meets_flower": meets,
                "final_max_abs_param_diff": float(
                    max(np.max(np.abs(ours.model[n] - theirs.model[n])) for n in ours.model)
                ),
            }
        )
    elif workload.name in FLOWER_WORKLOADS:
        line["flower_rounds_to_target"] = None
        line["flower_final_metric"] = None
    return line


def run(
    names: Sequence[str] = WORKLOADS,
    *,
    rounds: int | None = None,
    flower: str | None = "auto",
    directory: str | None = None,
    prepare: Prepare | None = None,
) -> None:
    """Write each workload's data, run it, and print its JSON line (one per workload).

    Args:
        names: Workloads to run, of :data:`WORKLOADS`.
        rounds: Rounds per workload (default: each workload's own).
        flower: See :func:`measure`.
        directory: Where the workers' data is written (a temporary directory by default,
            removed at the end).
        prepare: Builds a workload (default: :func:`prepare_workload`).
    """
    import torch

    unknown = [n for n in names if n not in WORKLOADS]
    if unknown:
        raise ValueError(f"unknown workload {unknown[0]!r}: choose from {', '.join(WORKLOADS)}")
    torch.set_num_threads(1)
    build = prepare or prepare_workload
    with tempfile.TemporaryDirectory(dir=directory, prefix="fedrelay-workloads-") as root:
        for name in names:
            started = time.perf_counter()
            line = measure(build(name, Path(root) / name), rounds=rounds, flower=flower)
            line["wall_s"] = round(time.perf_counter() - started, 2)
            line["threads"] = 1
            print(json.dumps(line), flush=True)


# --- the workloads -------------------------------------------------------------------------------


def prepare_workload(name: str, directory: Path) -> BenchWorkload:
    """Write workload ``name``'s worker data under ``directory`` and return it."""
    from fedrelay.bench import workload_data

    directory.mkdir(parents=True, exist_ok=True)
    return workload_data.PREPARE[name](directory)


__all__ = [
    "ACCURACY_SLACK_POINTS",
    "FLOWER_WORKLOADS",
    "WORKLOADS",
    "BenchWorkload",
    "Prepare",
    "Target",
    "WorkloadName",
    "measure",
    "prepare_workload",
    "run",
]
