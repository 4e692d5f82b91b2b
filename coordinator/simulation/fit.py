"""Federated training simulated in one process: torch clients, any aggregation strategy.

Used by tests and benchmarks to measure what strategies do to a model; the real system runs the
same steps across processes and chains.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from fedrelay.coordinator.aggregation import (
    ClientUpdate,
    ParameterLayout,
    ServerState,
    Strategy,
    Vector,
)
from fedrelay.protocol.training_config import AdamSpec, SgdSpec, TrainingConfig
from fedrelay.training.data import Dataset
from fedrelay.training.torch_trainer import (
    Evaluation,
    ModelFactory,
    TorchClassificationTrainer,
    evaluate,
)
from fedrelay.training.trainer import ModelTensors

Attack = Callable[[Vector], Vector]


def sign_flip(scale: float = 1.0) -> Attack:
    """An attack that sends ``-scale`` times the honest delta."""
    return lambda delta: (-scale * delta).astype(np.float32)


def scaled(factor: float) -> Attack:
    """An attack that sends ``factor`` times the honest delta."""
    return lambda delta: (factor * delta).astype(np.float32)


@dataclass(frozen=True)
class SimulatedClient:
    """A client of the simulation.

    Attributes:
        client_id: Its id.
        data: Its private training examples.
        attack: When set, rewrites the honest delta before it is sent.
    """

    client_id: str
    data: Dataset
    attack: Attack | None = None


@dataclass(frozen=True)
class LocalTraining:
    """How each client trains in a round.

    Attributes:
        steps: Local SGD steps per round.
        batch_size: Examples per step.
        learning_rate: Client step size.
        momentum: Client SGD momentum.
        seed: Base seed; the round and client index are mixed in.
        optimizer: The client optimizer (overrides ``momentum`` when set).
        proximal_mu: FedProx's proximal coefficient.
    """

    steps: int = 10
    batch_size: int = 16
    learning_rate: float = 0.1
    momentum: float = 0.0
    seed: int = 0
    optimizer: SgdSpec | AdamSpec | None = None
    proximal_mu: float = 0.0

    def config(self, round_number: int, client_index: int) -> TrainingConfig:
        """The training configuration of one client in one round."""
        return TrainingConfig(
            seed=self.seed * 1_000_003 + round_number * 1_009 + client_index,
            steps=self.steps,
            checkpoint_every=self.steps,
            batch_size=self.batch_size,
            learning_rate=self.learning_rate,
            optimizer=self.optimizer or SgdSpec(momentum=self.momentum),
            proximal_mu=self.proximal_mu,
        )


@dataclass(frozen=True)
class SimulationResult:
    """Test metrics after every round and the final model."""

    history: tuple[Evaluation, ...]
    model: ModelTensors


def client_updates(
    factory: ModelFactory,
    clients: Sequence[SimulatedClient],
    model: ModelTensors,
    local: LocalTraining,
    round_number: int,
) -> list[ClientUpdate]:
    """Every client's (possibly attacked) delta for one round."""
    layout = ParameterLayout.of(model)
    start = layout.flatten(model)
    updates = []
    for index, client in enumerate(clients):
        trainer = TorchClassificationTrainer(factory, client.data)
        trained = trainer.train(model, local.config(round_number, index))
        delta = (layout.flatten(trained).astype(np.float64) - start).astype(np.float32)
        if client.attack is not None:
            delta = client.attack(delta)
        updates.append(ClientUpdate(client.client_id, delta, len(client.data)))
    return updates


def simulate(
    strategy: Strategy,
    factory: ModelFactory,
    initial: ModelTensors,
    clients: Sequence[SimulatedClient],
    test: Dataset,
    rounds: int,
    local: LocalTraining,
) -> SimulationResult:
    """Run ``rounds`` rounds of federated training and evaluate on ``test`` after each."""
    layout = ParameterLayout.of(initial)
    params = layout.flatten(initial)
    state = ServerState()
    history = []
    model = initial
    for round_number in range(rounds):
        updates = client_updates(factory, clients, model, local, round_number)
        outcome = strategy.aggregate_fit(params, updates, state)
        params, state = outcome.params, outcome.state
        model = layout.unflatten(params)
        history.append(evaluate(factory, model, test))
    return SimulationResult(tuple(history), model)
