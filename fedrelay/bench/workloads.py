"""`fedrelay bench workloads`: the CNN, language-model and LoRA jobs, round by round, with figures.

The workloads are the demo's (:mod:`fedrelay.demo.workloads`: job configuration, each worker's
files, the poster's evaluation set, the target). For each one the bench writes every worker's
data, loads each worker's files back as the worker does
(:func:`fedrelay.training.datasets.load_examples` against the job's schema) and runs the job's
rounds as the coordinator runs them, in one process:

- each worker trains the round's model with the job's trainer (``TorchTrainer`` built from the
  job's model spec, :class:`~fedrelay.coordinator.verification.replay.JobWorkbench`) under the
  job's training configuration for its example count; its update is its trained model's
  trainable tensors (a LoRA update holds only the adapters);
- the job's strategy (``build_strategy``) aggregates the deltas, each update weighing what the
  coordinator gives it (1 on the workers' own data: no self-reported count buys weight);
- the new model is evaluated on the poster's evaluation set with the job's metric.

Workers train one after another in this process, so ``seconds_per_round`` (training,
aggregation and evaluation) bounds from above a round whose workers train in parallel.

For ``cnn`` Flower runs the same rounds beside it: the same clients (the same trainers on the
same files, seeds and local training) with Flower's own ``FedAvg.aggregate_fit`` as the server
step, in a separate interpreter (:class:`fedrelay.bench.flower.FlowerFedAvg`), each client
reporting its example count as a Flower client does. The sides alternate round by round.

Each workload prints one JSON line with ``workload``, ``rounds_to_target`` (the first round,
1-based, whose metric reaches the target; null when none does, and ``target_note`` says so),
``final_metric``, ``seconds_per_round`` and ``update_bytes`` (one update blob as a worker
uploads it); for ``cnn`` also ``flower_rounds_to_target``, ``flower_final_metric`` and
``meets_flower``: rounds to target at most Flower's, final accuracy at most
:data:`ACCURACY_SLACK_POINTS` below Flower's, judged on the means over several seeds
(``over_seeds``), and the line's headline figures are then those means (``figures`` says so;
each seed's are in ``over_seeds``). One seed is not enough: the sides' models differ after the
first round by float rounding alone, and local training amplifies that into a few test examples
either way by the last round. The ``control`` shows it: Flower's FedAvg given the coordinator's
weights, whose parameters are within float rounding of fedrelay's after round 1 and drift apart
after.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from fedrelay.bench.federation import Federation, fedrelay_step, flower_site, flower_step
from fedrelay.coordinator.aggregation.configured import build_strategy
from fedrelay.coordinator.verification.replay import JobWorkbench
from fedrelay.protocol.data_spec import TextSchema
from fedrelay.protocol.training_config import TrainingConfig
from fedrelay.training.trainer import ModelTensors

if TYPE_CHECKING:
    from fedrelay.bench.flower import FlowerFedAvg
    from fedrelay.demo.workloads import PreparedWorkload, Split, Workload
    from fedrelay.training.data import Dataset, TokenDataset

FLOWER_WORKLOADS = ("cnn",)
"""The workloads Flower runs beside fedrelay."""

ACCURACY_SLACK_POINTS = 0.5
"""fedrelay's final accuracy may be at most this many points below Flower's."""

WORKERS = 4
"""Workers per workload, unless told otherwise."""

ROUNDS_FACTOR = 2
"""Rounds run per workload, unless told otherwise: this many times the rounds its target
allows, so a side slower than the target still gets a round to target, and the final metric is
taken past the steep start."""

FLOWER_SEEDS = 5
"""Seeds the Flower comparison runs on, unless told otherwise (see :func:`measure`)."""


def _load(prepared: PreparedWorkload) -> list[Dataset | TokenDataset]:
    """Each worker's examples, read from its files as the worker reads them."""
    from fedrelay.training.datasets import load_examples

    own = prepared.config.worker_data
    if own is None:
        raise ValueError(f"workload {prepared.workload.name}: not a job on the workers' own data")
    schema = own.schema_
    vocabulary = None
    if isinstance(schema, TextSchema) and schema.vocabulary_hash:
        vocabulary = prepared.fetch_blob(schema.vocabulary_hash)
    return [load_examples(path, schema, vocabulary) for path in prepared.worker_data]


@dataclass
class _Run:
    """Both sides of one workload run: fedrelay's, and Flower's where it ran; the control is
    Flower's FedAvg given the coordinator's weights, to tell the weighting from the rest."""

    prepared: PreparedWorkload
    initial: float
    ours: Federation
    theirs: Federation | None = None
    flower_version: str | None = None
    flower_unavailable: str | None = None
    param_diff: list[float] = field(default_factory=list)
    control: Federation | None = None
    control_diff: list[float] = field(default_factory=list)

    def reached(self, side: Federation) -> int | None:
        """The first round (1-based) whose metric on ``side`` reaches the target, or None."""
        target = self.prepared.target
        return next(
            (i + 1 for i, m in enumerate(side.metrics) if target.reached(self.initial, m)), None
        )

    def figures(self, side: Federation) -> tuple[int | None, float]:
        """``side``'s rounds to target and final metric."""
        return self.reached(side), side.metrics[-1]


def _run(
    prepared: PreparedWorkload, rounds: int, flower: str | None, control: bool = False
) -> _Run:
    """Run ``rounds`` rounds of ``prepared`` on fedrelay's side, and on Flower's (see
    :func:`measure`) where the workload has one; with ``control``, the control too."""
    from fedrelay.bench.flower import FlowerFedAvg, FlowerUnavailable
    from fedrelay.training.torch_trainer import TorchTrainer

    config = prepared.config
    spec = config.model
    bench = JobWorkbench(config, prepared.evaluation)
    clients = _load(prepared)
    model = bench.initial_model(prepared.fetch_blob)

    def trainers() -> list[TorchTrainer]:
        return [
            TorchTrainer(bench.factory, spec.objective, data, trainable=spec.trainable)
            for data in clients
        ]

    def config_of(number: int, index: int) -> TrainingConfig:
        return config.training_config(len(clients[index]))

    def metric(tensors: ModelTensors) -> float:
        return bench.evaluate(tensors)[1]

    # Warm torch up first, so one-time start-up costs land on no round's timing.
    trainers()[0].train(model, config_of(0, 0))
    weights = [config.update_weight(len(c)) for c in clients]  # the coordinator's rule
    ours = Federation(
        fedrelay_step(build_strategy(config), spec.trainable),
        trainers(),
        weights,
        config_of,
        model,
        metric,
        measure_updates=True,
    )
    run = _Run(prepared, metric(model), ours)
    child: FlowerFedAvg | None = None
    if flower is not None and prepared.workload.name in FLOWER_WORKLOADS:
        site = flower_site(None if flower == "auto" else flower)
        try:
            child = FlowerFedAvg(site)
        except FlowerUnavailable as exc:
            run.flower_unavailable = f"{exc} (site {site})"
        else:
            run.flower_version = child.version
            counts = [len(d) for d in clients]  # what a Flower client reports
            run.theirs = Federation(
                flower_step(child), trainers(), counts, config_of, model, metric
            )
            if control:
                run.control = Federation(
                    flower_step(child), trainers(), weights, config_of, model, metric
                )
    try:
        for number in range(rounds):
            ours.round(number)
            if run.theirs is not None:  # alternating, so machine load affects both sides alike
                run.theirs.round(number)
                run.param_diff.append(_largest_difference(ours.model, run.theirs.model))
            if run.control is not None:
                run.control.round(number)
                run.control_diff.append(_largest_difference(ours.model, run.control.model))
    finally:
        if child is not None:
            child.close()
    return run


def _largest_difference(ours: ModelTensors, theirs: ModelTensors) -> float:
    return max(float(np.max(np.abs(ours[n] - theirs[n]))) for n in ours)


def meets_flower(
    ours: tuple[float | None, float], theirs: tuple[float | None, float]
) -> tuple[bool, float]:
    """Whether fedrelay's ``(rounds to target, final accuracy)`` meets Flower's: rounds at most
    Flower's (any when Flower never reaches it), accuracy at most
    :data:`ACCURACY_SLACK_POINTS` below; and the accuracy gap in points."""
    (our_rounds, our_final), (their_rounds, their_final) = ours, theirs
    rounds_ok = their_rounds is None or (our_rounds is not None and our_rounds <= their_rounds)
    gap = (our_final - their_final) * 100
    return rounds_ok and gap >= -ACCURACY_SLACK_POINTS, gap


def measure(
    prepared: PreparedWorkload,
    *,
    rounds: int | None = None,
    flower: str | None = "auto",
    more_seeds: Sequence[PreparedWorkload] = (),
) -> dict[str, object]:
    """Run ``prepared`` and return its JSON line's figures.

    Args:
        prepared: The workload, its data written.
        rounds: Rounds to run (default: :data:`ROUNDS_FACTOR` times the target's).
        flower: ``"auto"`` runs Flower beside fedrelay where the workload has a Flower side
            (found by :func:`~fedrelay.bench.federation.flower_site`); a directory names the
            Flower site; None runs fedrelay alone.
        more_seeds: The same workload prepared with other seeds: where Flower runs, both sides
            run on each too, and the comparison is judged on the means over all seeds.
    """
    from fedrelay.training import encode_blob

    rounds = rounds or ROUNDS_FACTOR * prepared.target.rounds
    run = _run(prepared, rounds, flower, control=True)
    ours = run.ours
    reached, final = run.figures(ours)
    model_bytes = len(encode_blob(ours.model))
    line: dict[str, object] = {
        "workload": prepared.workload.name,
        "rounds_to_target": reached,
        "final_metric": round(final, 4),
        "seconds_per_round": round(ours.round_s / rounds, 3),
        "update_bytes": ours.update_bytes,
        "metric": prepared.target.metric,
        "target": prepared.target.describe(),
        "initial_metric": round(run.initial, 4),
        "metric_per_round": [round(m, 4) for m in ours.metrics],
        "rounds": rounds,
        "seed": prepared.config.seed,
        "workers": len(prepared.worker_data),
        "model_bytes": model_bytes,
        "update_fraction_of_model": round(ours.update_bytes / model_bytes, 4),
        "base_model_bytes": prepared.base_model_bytes(),
        "train_s_per_round": round(ours.train_s / rounds, 3),
        "aggregate_s_per_round": round(ours.aggregate_s / rounds, 5),
        "strategy": prepared.config.strategy,
    }
    if reached is None:
        line["target_note"] = f"target not reached: {prepared.target.describe()}, ran {rounds}"
    if prepared.workload.name in FLOWER_WORKLOADS:
        more = [_run(p, rounds, flower) for p in more_seeds] if run.theirs else []
        line.update(_flower_figures(run, more))
        _report_means(line)
    return line


def _report_means(line: dict[str, object]) -> None:
    """Where several seeds ran, the headline figures are their means (what ``meets_flower``
    judges); each seed's own are in ``over_seeds``, and the per-round lists are the first
    seed's."""
    seeds = line.get("over_seeds")
    if not isinstance(seeds, dict) or len(seeds["seeds"]) < 2:
        return
    line["figures"] = (
        f"rounds_to_target, final_metric and the flower_ ones are means over seeds "
        f"{seeds['seeds']}; metric_per_round and param_diff_per_round are seed {line['seed']}'s"
    )
    line["rounds_to_target"] = seeds["mean_rounds_to_target"]
    line["final_metric"] = seeds["mean_final_metric"]
    line["flower_rounds_to_target"] = seeds["flower_mean_rounds_to_target"]
    line["flower_final_metric"] = seeds["flower_mean_final_metric"]
    line["final_metric_gap_points"] = seeds["mean_gap_points"]


def _flower_figures(run: _Run, more: list[_Run]) -> dict[str, object]:
    theirs = run.theirs
    if theirs is None:
        return {
            "flower_rounds_to_target": None,
            "flower_final_metric": None,
            "flower_unavailable": run.flower_unavailable or "not asked for (--no-flower)",
        }
    reached, final = run.figures(theirs)
    _, gap = meets_flower(run.figures(run.ours), (reached, final))
    figures: dict[str, object] = {
        "flower_rounds_to_target": reached,
        "flower_final_metric": round(final, 4),
        "flower_version": run.flower_version,
        "flower_metric_per_round": [round(m, 4) for m in theirs.metrics],
        "flower_seconds_per_round": round(theirs.round_s / len(theirs.metrics), 3),
        "final_metric_gap_points": round(gap, 3),
        "param_diff_per_round": _brief(run.param_diff),
        "weights": "fedrelay: 1 per update (workers' own data); Flower: examples per client",
    }
    runs = [run, *(r for r in more if r.theirs is not None)]
    rounds = len(run.ours.metrics)

    def mean_of(pick: Callable[[_Run], tuple[int | None, float]]) -> tuple[float, float]:
        # A side that never reaches the target counts one round past the last.
        reached = [pick(r)[0] or rounds + 1 for r in runs]
        return sum(reached) / len(runs), sum(pick(r)[1] for r in runs) / len(runs)

    ours_mean = mean_of(lambda r: r.figures(r.ours))
    theirs_mean = mean_of(lambda r: r.figures(r.theirs) if r.theirs else (None, 0.0))
    meets, mean_gap = meets_flower(ours_mean, theirs_mean)
    figures["over_seeds"] = {
        "seeds": [r.prepared.config.seed for r in runs],
        "rounds_to_target": [r.reached(r.ours) for r in runs],
        "flower_rounds_to_target": [r.reached(r.theirs) for r in runs if r.theirs],
        "final_metric": [round(r.ours.metrics[-1], 4) for r in runs],
        "flower_final_metric": [round(r.theirs.metrics[-1], 4) for r in runs if r.theirs],
        "mean_rounds_to_target": ours_mean[0],
        "flower_mean_rounds_to_target": theirs_mean[0],
        "mean_final_metric": round(ours_mean[1], 4),
        "flower_mean_final_metric": round(theirs_mean[1], 4),
        "mean_gap_points": round(mean_gap, 3),
    }
    figures["meets_flower"] = meets
    if run.control is not None:
        figures["control"] = {
            "what": "Flower's FedAvg given the coordinator's weights (1 per update)",
            "final_metric": round(run.control.metrics[-1], 4),
            "param_diff_per_round": _brief(run.control_diff),
        }
    return figures


def _brief(values: list[float]) -> list[float]:
    return [float(f"{v:.3g}") for v in values]


def _prepare(
    workload: Workload, root: Path, workers: int, seed: int, split: Split | None
) -> PreparedWorkload:
    folder = root / f"{workload.name}-{seed}"
    if split:
        return workload.prepare(folder, workers, seed=seed, split=split)
    return workload.prepare(folder, workers, seed=seed)


def run(
    names: Sequence[str],
    *,
    workers: int = WORKERS,
    seed: int = 0,
    split: Split | None = None,
    rounds: int | None = None,
    flower: str | None = "auto",
    seeds: int = FLOWER_SEEDS,
    directory: str | None = None,
) -> None:
    """Write each workload's data, run it, and print its JSON line (one per workload).

    Args:
        names: Workloads to run (:data:`fedrelay.demo.workloads.WORKLOAD_NAMES`).
        workers: Workers per workload.
        seed: Seed of the data split and of the jobs' training.
        split: How ``cnn`` deals the digits (default: the workload's own).
        rounds: Rounds per workload (default: :data:`ROUNDS_FACTOR` times its target's).
        flower: See :func:`measure`.
        seeds: Seeds the Flower comparison runs on (``seed`` and the ones after it).
        directory: Where the workers' data is written (in a temporary directory, removed at
            the end).

    Raises:
        ValueError: An unknown workload name, or a worker count the data cannot serve.
    """
    import torch

    from fedrelay.demo.workloads import workload

    chosen = [workload(name) for name in names]  # refuses an unknown name before any work
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(dir=directory, prefix="fedrelay-workloads-") as root:
        for each in chosen:
            started = time.perf_counter()
            compared = flower is not None and each.name in FLOWER_WORKLOADS
            prepared = [
                _prepare(each, Path(root), workers, seed + k, split)
                for k in range(seeds if compared else 1)
            ]
            line = measure(prepared[0], rounds=rounds, flower=flower, more_seeds=prepared[1:])
            line["wall_s"] = round(time.perf_counter() - started, 2)
            line["threads"] = 1
            print(json.dumps(line), flush=True)
