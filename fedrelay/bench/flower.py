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
from dataclasses import asdict
from typing import IO, Any

import numpy as np
import torch

from fedrelay.bench.federation import Federation, ServerStep, fedrelay_step, flower_step
from fedrelay.bench.federation import flower_site as resolve_flower_site
from fedrelay.coordinator.aggregation import fedavg
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


_OURS = "coordinator.aggregation.fedavg"


def _figures(side: Federation, target: float) -> dict[str, object]:
    rounds = len(side.metrics)
    reached = next((i + 1 for i, a in enumerate(side.metrics) if a >= target), None)
    return {
        "rounds_to_target": reached,
        "accuracy_after_rounds": round(side.metrics[-1], 4),
        "best_accuracy": round(max(side.metrics), 4),
        "wall_s_per_round": round(side.fit_s / rounds, 4),
        "aggregate_s_per_round": round(side.aggregate_s / rounds, 6),
    }


def _federation(
    step: ServerStep, clients: list[Dataset], test: Dataset, local: LocalTraining
) -> Federation:
    return Federation(
        step,
        [TorchClassificationTrainer(_MLP, data) for data in clients],
        [len(data) for data in clients],
        local.config,
        initial_model(_MLP, 0),
        lambda model: evaluate(_MLP, model, test).accuracy or 0.0,
    )


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
    ours = _federation(fedrelay_step(fedavg()), clients, test, local)
    # Warm torch up first, so one-time start-up costs land on neither side's timings.
    TorchClassificationTrainer(_MLP, clients[0]).train(ours.model, local.config(0, 0))
    site = resolve_flower_site(flower_site)
    try:
        flower = FlowerFedAvg(site)
    except FlowerUnavailable as exc:
        for number in range(rounds):
            ours.round(number)
        figures["fedrelay"] = {"strategy": _OURS, **_figures(ours, target)}
        figures["flower"] = {"available": False, "reason": str(exc), "site": site}
    else:
        names = sorted(ours.model)
        theirs = _federation(flower_step(flower), clients, test, local)
        try:
            # Rounds alternate between the sides so machine load affects both alike.
            for number in range(rounds):
                ours.round(number)
                theirs.round(number)
        finally:
            flower.close()
        figures["fedrelay"] = {"strategy": _OURS, **_figures(ours, target)}
        figures["flower"] = {
            "available": True,
            "version": flower.version,
            "strategy": "flwr.server.strategy.FedAvg.aggregate_fit (FitRes, in-place mean)",
            "process": "separate interpreter; wall time includes the pipe transfer of parameters",
            **_figures(theirs, target),
        }
        figures["final_max_abs_param_diff"] = float(
            max(np.max(np.abs(ours.model[n] - theirs.model[n])) for n in names)
        )
    print(json.dumps(figures))
