"""Federated rounds run in one process, with the server step swappable: fedrelay's or Flower's.

The comparisons with Flower (``fedrelay bench flower``, ``fedrelay bench workloads``) hold
everything but the server step fixed: the same torch trainers on the same clients' data, the
same local training configuration per round and client, the same evaluation. A
:class:`Federation` advances its own global model one round at a time; its :data:`ServerStep`
turns the round model and the clients' trained tensors into the next model:

- :func:`fedrelay_step`: the coordinator's aggregation (``fedrelay.coordinator.aggregation``)
  over the deltas of the trainable tensors, as ``coordinator/phases/aggregate.py`` runs it:
  ``delta_between`` in float64, the strategy's ``aggregate_fit``, frozen tensors carried over;
- :func:`flower_step`: Flower's ``FedAvg.aggregate_fit`` in its own interpreter
  (:class:`fedrelay.bench.flower.FlowerFedAvg`) over the clients' full trainable tensors.

:func:`flower_site` is where both benchmarks find the Flower installation.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from fedrelay.coordinator.aggregation import (
    ClientUpdate,
    ParameterLayout,
    ServerState,
    Strategy,
    delta_between,
)
from fedrelay.protocol.training_config import TrainingConfig
from fedrelay.training.trainer import ModelTensors, trainable_tensors

if TYPE_CHECKING:
    from fedrelay.bench.flower import FlowerFedAvg
    from fedrelay.training.torch_trainer import TorchTrainer

FLOWER_SITE_ENV = "FEDRELAY_FLOWER_SITE"
"""The environment variable naming the Flower site directory (``pip install --target``)."""

ServerStep = Callable[[ModelTensors, list[ModelTensors], list[int]], tuple[ModelTensors, float]]
"""``(round model, clients' trainable tensors, their weights) -> (next model, seconds)``: the
seconds are the aggregation's own."""

ConfigOf = Callable[[int, int], TrainingConfig]
"""The training configuration of ``(round, client index)``."""


def flower_site(explicit: str | None = None) -> str | None:
    """Where Flower is installed: ``explicit``, else ``$FEDRELAY_FLOWER_SITE``, else the
    ``tools/flower-site`` that ``make setup`` fills (None when none of them is set up)."""
    if explicit:
        return explicit
    if os.environ.get(FLOWER_SITE_ENV):
        return os.environ[FLOWER_SITE_ENV]
    from fedrelay.adapters.devnet.toolchain import TOOLS_DIR

    site = TOOLS_DIR / "flower-site"
    return str(site) if (site / "flwr").is_dir() else None


def fedrelay_step(
    strategy: Strategy, trainable: Callable[[str], bool] = lambda name: True
) -> ServerStep:
    """The coordinator's server step with ``strategy`` (its state kept from round to round).

    Args:
        strategy: The aggregation strategy (a job's: ``build_strategy(config)``).
        trainable: Which tensors updates carry (a job's ``model.trainable``); the others pass
            into the next model unchanged.
    """
    state = ServerState()

    def step(
        model: ModelTensors, trained: list[ModelTensors], weights: list[int]
    ) -> tuple[ModelTensors, float]:
        nonlocal state
        moving = trainable_tensors(model, trainable)
        layout = ParameterLayout.of(moving)
        params = layout.flatten(moving)
        updates = [
            ClientUpdate(
                f"client-{i:02d}", delta_between(layout.flatten(t), params), max(1, weights[i])
            )
            for i, t in enumerate(trained)
        ]
        started = time.perf_counter()
        result = strategy.aggregate_fit(params, updates, state)
        seconds = time.perf_counter() - started
        state = result.state
        return {**model, **layout.unflatten(result.params)}, seconds

    return step


def flower_step(flower: FlowerFedAvg) -> ServerStep:
    """Flower's FedAvg as a server step (weights: the clients' reported example counts)."""

    def step(
        model: ModelTensors, trained: list[ModelTensors], weights: list[int]
    ) -> tuple[ModelTensors, float]:
        aggregated, seconds = flower.aggregate(sorted(trained[0]), trained, weights)
        return {**model, **aggregated}, seconds

    return step


class Federation:
    """One side of a comparison: its own global model, advanced one round at a time.

    Attributes:
        model: The global model after the rounds run so far.
        metrics: The evaluation after each round.
        train_s: Seconds the clients spent training, in all.
        aggregate_s: Seconds the server step's aggregation took, in all.
        fit_s: Wall seconds of training and the whole server step (for Flower: with the pipe
            transfer), in all.
        round_s: Wall seconds of whole rounds (training, aggregation, evaluation), in all.
        update_bytes: Bytes of the largest update blob a client would upload (its trainable
            tensors), when measured.
    """

    def __init__(
        self,
        step: ServerStep,
        trainers: Sequence[TorchTrainer],
        weights: Sequence[int],
        config_of: ConfigOf,
        initial: ModelTensors,
        evaluate: Callable[[ModelTensors], float],
        *,
        measure_updates: bool = False,
    ) -> None:
        """A federation starting from ``initial``.

        Args:
            step: The server step.
            trainers: One trainer per client, bound to its data.
            weights: Each client's weight in the server step.
            config_of: The training configuration of a round and client.
            initial: The initial global model.
            evaluate: The metric of a model (on the evaluation set).
            measure_updates: Encode each update blob to measure :attr:`update_bytes`.
        """
        self._step = step
        self._trainers = list(trainers)
        self._weights = list(weights)
        self._config_of = config_of
        self._evaluate = evaluate
        self._measure = measure_updates
        self.model = initial
        self.metrics: list[float] = []
        self.train_s = 0.0
        self.aggregate_s = 0.0
        self.fit_s = 0.0
        self.round_s = 0.0
        self.update_bytes = 0

    def round(self, number: int) -> float:
        """Run round ``number`` (0-based); return the new model's metric."""
        from fedrelay.training import encode_blob

        started = time.perf_counter()
        trained = []
        for index, trainer in enumerate(self._trainers):
            final = trainer.train(self.model, self._config_of(number, index))
            update = trainable_tensors(final, trainer.trainable)
            if self._measure:
                self.update_bytes = max(self.update_bytes, len(encode_blob(update)))
            trained.append(update)
        self.train_s += time.perf_counter() - started
        self.model, seconds = self._step(self.model, trained, self._weights)
        self.aggregate_s += seconds
        self.fit_s += time.perf_counter() - started
        self.metrics.append(self._evaluate(self.model))
        self.round_s += time.perf_counter() - started
        return self.metrics[-1]
