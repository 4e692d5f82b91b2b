"""Our FedAvg next to Flower's FedAvg, on the same digits split, model, seeds and rounds.

Both sides run the same clients: the project's torch trainer with identical seeds and local steps
on a digits split with 2 classes per client across 20 clients. Only the server step differs:

- fedrelay: ``fedrelay.coordinator.aggregation.fedavg().aggregate_fit`` over client deltas (float64
  accumulation in client-id order).
- Flower: ``flwr.server.strategy.FedAvg.aggregate_fit`` over the clients' full parameters, with
  ``FitRes`` objects built by Flower's own ``ndarrays_to_parameters``.

Flower runs in a separate interpreter: flwr pins older fastapi, typer, rich, uvicorn and protobuf
than this project, so it cannot share the project's environment. Point ``--flower-site`` (or
``FEDRELAY_FLOWER_SITE``) at a directory made by ``pip install --target DIR flwr==1.41.0``; its
packages come first on that interpreter's path. Without flwr the line says why and reports
fedrelay's figures only.
"""

from __future__ import annotations

import io
import json
import os
import struct
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict
from typing import IO, Any

import numpy as np
import torch

from fedrelay.coordinator.aggregation import ClientUpdate, ParameterLayout, ServerState, fedavg
from fedrelay.coordinator.simulation.fit import LocalTraining
from fedrelay.protocol.model_spec import MlpSpec
from fedrelay.training.data import Dataset, digits, partition_k_classes, split_train_test
from fedrelay.training.models import build_factory, no_bundles
from fedrelay.training.torch_trainer import (
    TorchClassificationTrainer,
    evaluate,
    initial_model,
)
from fedrelay.training.trainer import ModelTensors

_MLP = build_factory(MlpSpec(), bundle_loader=no_bundles)
"""The digits perceptron (64-64-10), built as every job's model is."""

FLOWER_SITE_ENV = "FEDRELAY_FLOWER_SITE"

# The Flower side: reads framed npz messages (client parameters and example counts), answers
# with framed npz (the aggregate and the seconds aggregate_fit took). Stdout is kept for frames.
_FLOWER_SIDE = r"""
import io, json, os, struct, sys, time
out = os.fdopen(os.dup(1), "wb")
os.dup2(2, 1)
def send(data):
    out.write(struct.pack("<Q", len(data)) + data)
    out.flush()
def receive():
    head = sys.stdin.buffer.read(8)
    if len(head) < 8:
        return None
    return sys.stdin.buffer.read(struct.unpack("<Q", head)[0])
try:
    import numpy as np
    import flwr
    from flwr.common import Code, FitRes, Status, ndarrays_to_parameters, parameters_to_ndarrays
    from flwr.server.strategy import FedAvg
except Exception as exc:
    send(json.dumps({"error": f"{type(exc).__name__}: {exc}"}).encode())
    sys.exit(0)
send(json.dumps({"flwr": flwr.__version__, "numpy": np.__version__}).encode())
strategy = FedAvg(fit_metrics_aggregation_fn=lambda metrics: {})
server_round = 0
while (message := receive()) is not None:
    server_round += 1
    with np.load(io.BytesIO(message)) as frame:
        counts = frame["num_examples"]
        tensors = int(frame["tensors"][0])
        results = [
            (None, FitRes(
                status=Status(code=Code.OK, message=""),
                parameters=ndarrays_to_parameters([frame[f"c{i}_{j}"] for j in range(tensors)]),
                num_examples=int(counts[i]),
                metrics={},
            ))
            for i in range(counts.shape[0])
        ]
    started = time.perf_counter()
    aggregated, _ = strategy.aggregate_fit(server_round, results, [])
    seconds = time.perf_counter() - started
    arrays = parameters_to_ndarrays(aggregated)
    buffer = io.BytesIO()
    np.savez(buffer, seconds=np.array([seconds]), **{f"t{j}": a for j, a in enumerate(arrays)})
    send(buffer.getvalue())
"""


class FlowerUnavailable(RuntimeError):
    """flwr could not be imported by the Flower-side interpreter."""


class FlowerFedAvg:
    """Flower's FedAvg strategy in a child interpreter, fed over a framed pipe."""

    def __init__(self, site: str | None) -> None:
        """Start the child; raise :class:`FlowerUnavailable` when it cannot import flwr."""
        env = dict(os.environ)
        if site:
            env["PYTHONPATH"] = os.pathsep.join(p for p in (site, env.get("PYTHONPATH")) if p)
        self._child = subprocess.Popen(
            [sys.executable, "-c", _FLOWER_SIDE],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=env,
        )
        hello = json.loads(self._receive())
        if "error" in hello:
            self.close()
            raise FlowerUnavailable(hello["error"])
        self.version: str = hello["flwr"]

    def _pipes(self) -> tuple[IO[bytes], IO[bytes]]:
        assert self._child.stdin is not None
        assert self._child.stdout is not None
        return self._child.stdin, self._child.stdout

    def _receive(self) -> bytes:
        _, reader = self._pipes()
        head = reader.read(8)
        if len(head) < 8:
            raise FlowerUnavailable("the Flower-side interpreter exited unexpectedly")
        return reader.read(struct.unpack("<Q", head)[0])

    def aggregate(
        self, names: list[str], trained: list[ModelTensors], counts: list[int]
    ) -> tuple[ModelTensors, float]:
        """Flower's weighted average of full parameters; also the seconds aggregate_fit took."""
        arrays: dict[str, Any] = {
            f"c{i}_{j}": model[name]
            for i, model in enumerate(trained)
            for j, name in enumerate(names)
        }
        arrays["num_examples"] = np.array(counts, dtype=np.int64)
        arrays["tensors"] = np.array([len(names)], dtype=np.int64)
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        writer, _ = self._pipes()
        writer.write(struct.pack("<Q", buffer.getbuffer().nbytes) + buffer.getvalue())
        writer.flush()
        with np.load(io.BytesIO(self._receive())) as frame:
            seconds = float(frame["seconds"][0])
            result = {name: frame[f"t{j}"].astype(np.float32) for j, name in enumerate(names)}
        return result, seconds

    def close(self) -> None:
        """Stop the child interpreter."""
        if self._child.stdin is not None:
            self._child.stdin.close()
        try:
            self._child.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self._child.kill()
            self._child.wait()
        if self._child.stdout is not None:
            self._child.stdout.close()


ServerStep = Callable[[ModelTensors, list[ModelTensors], list[int]], tuple[ModelTensors, float]]


def _fedrelay_step(
    model: ModelTensors, trained: list[ModelTensors], counts: list[int]
) -> tuple[ModelTensors, float]:
    layout = ParameterLayout.of(model)
    start = layout.flatten(model)
    updates = [
        ClientUpdate(
            f"client-{i:02d}",
            (layout.flatten(t).astype(np.float64) - start).astype(np.float32),
            counts[i],
        )
        for i, t in enumerate(trained)
    ]
    started = time.perf_counter()
    result = fedavg().aggregate_fit(start, updates, ServerState())
    return layout.unflatten(result.params), time.perf_counter() - started


class _Federation:
    """One side of the comparison: its own global model, advanced one round at a time."""

    def __init__(
        self, server_step: ServerStep, clients: list[Dataset], test: Dataset, local: LocalTraining
    ) -> None:
        self._step = server_step
        self._trainers = [TorchClassificationTrainer(_MLP, data) for data in clients]
        self._counts = [len(data) for data in clients]
        self._test = test
        self._local = local
        self.model = initial_model(_MLP, 0)
        self.accuracies: list[float] = []
        self.wall_s = 0.0
        self.aggregate_s = 0.0

    def round(self, number: int) -> None:
        started = time.perf_counter()
        trained = [
            t.train(self.model, self._local.config(number, i)) for i, t in enumerate(self._trainers)
        ]
        self.model, seconds = self._step(self.model, trained, self._counts)
        self.wall_s += time.perf_counter() - started
        self.aggregate_s += seconds
        self.accuracies.append(evaluate(_MLP, self.model, self._test).accuracy or 0.0)

    def figures(self, target: float) -> dict[str, object]:
        rounds = len(self.accuracies)
        reached = next((i + 1 for i, a in enumerate(self.accuracies) if a >= target), None)
        return {
            "rounds_to_target": reached,
            "accuracy_after_rounds": round(self.accuracies[-1], 4),
            "best_accuracy": round(max(self.accuracies), 4),
            "wall_s_per_round": round(self.wall_s / rounds, 4),
            "aggregate_s_per_round": round(self.aggregate_s / rounds, 6),
        }


def _installed_site() -> str | None:
    """The site directory `make setup` fills with Flower (tools/flower-site), if present."""
    from fedrelay.adapters.devnet.toolchain import TOOLS_DIR

    site = TOOLS_DIR / "flower-site"
    return str(site) if (site / "flwr").is_dir() else None


def run(rounds: int = 30, target: float = 0.9, flower_site: str | None = None) -> None:
    """Run both sides and print one JSON line."""
    torch.set_num_threads(1)
    train, test = split_train_test(digits(), 0.2, seed=0)
    parts = partition_k_classes(train.labels, 20, 2, seed=0)
    clients = [train.subset(p) for p in parts]
    local = LocalTraining(steps=5, batch_size=16, learning_rate=0.2, momentum=0.5, seed=0)
    figures: dict[str, object] = {
        "benchmark": "flower",
        "data": "digits 80/20 split (seed 0), 20 clients x 2 classes (partition_k_classes seed 0)",
        "model": "MLP 64-64-10, initial_model seed 0",
        "local_training": asdict(local),
        "rounds": rounds,
        "target_accuracy": target,
        "threads": 1,
    }
    ours = _Federation(_fedrelay_step, clients, test, local)
    # Warm torch up first, so one-time start-up costs land on neither side's timings.
    TorchClassificationTrainer(_MLP, clients[0]).train(ours.model, local.config(0, 0))
    site = flower_site or os.environ.get(FLOWER_SITE_ENV) or _installed_site()
    try:
        flower = FlowerFedAvg(site)
    except FlowerUnavailable as exc:
        for number in range(rounds):
            ours.round(number)
        figures["fedrelay"] = {"strategy": "coordinator.aggregation.fedavg", **ours.figures(target)}
        figures["flower"] = {"available": False, "reason": str(exc), "site": site}
    else:
        names = sorted(ours.model)

        def flower_step(
            model: ModelTensors, trained: list[ModelTensors], counts: list[int]
        ) -> tuple[ModelTensors, float]:
            return flower.aggregate(names, trained, counts)

        theirs = _Federation(flower_step, clients, test, local)
        try:
            # Rounds alternate between the sides so machine load affects both alike.
            for number in range(rounds):
                ours.round(number)
                theirs.round(number)
        finally:
            flower.close()
        figures["fedrelay"] = {"strategy": "coordinator.aggregation.fedavg", **ours.figures(target)}
        figures["flower"] = {
            "available": True,
            "version": flower.version,
            "strategy": "flwr.server.strategy.FedAvg.aggregate_fit (FitRes, in-place mean)",
            "process": "separate interpreter; wall time includes the pipe transfer of parameters",
            **theirs.figures(target),
        }
        figures["final_max_abs_param_diff"] = float(
            max(np.max(np.abs(ours.model[n] - theirs.model[n])) for n in names)
        )
    print(json.dumps(figures))
