"""Robust rules under attack on digits: 20% of clients send sign-flipped or scaled updates.

Median, trimmed mean and Multi-Krum stay within 2 accuracy points of clean FedAvg; FedAvg itself
visibly degrades. Training is deterministic on CPU, so these figures repeat run for run.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch

from fedrelay.coordinator.aggregation import Strategy, fedavg, median, multi_krum, trimmed_mean
from fedrelay.coordinator.simulation.fit import (
    Attack,
    LocalTraining,
    SimulatedClient,
    scaled,
    sign_flip,
    simulate,
)
from fedrelay.training.data import Dataset, digits, partition_iid, split_train_test
from fedrelay.training.torch_trainer import initial_model, mlp

ROUNDS = 30
CLIENTS = 10
ATTACKERS = 2  # 20%
LOCAL = LocalTraining(steps=10, batch_size=64, learning_rate=0.3, momentum=0.5, seed=1)
ATTACKS = {"sign_flip_x4": sign_flip(4.0), "scale_x10": scaled(10.0)}

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def split() -> tuple[Dataset, Dataset]:
    return split_train_test(digits(), 0.2, seed=0)


def final_accuracy(
    strategy: Strategy, split: tuple[Dataset, Dataset], attack: Attack | None
) -> float:
    train, test = split
    parts = partition_iid(train.labels, CLIENTS, seed=0)
    clients = [
        SimulatedClient(f"c{i:02d}", train.subset(p), attack if i < ATTACKERS else None)
        for i, p in enumerate(parts)
    ]
    result = simulate(strategy, mlp, initial_model(mlp, 0), clients, test, ROUNDS, LOCAL)
    return result.history[-1].accuracy


@pytest.fixture(scope="module")
def clean_accuracy(split: tuple[Dataset, Dataset]) -> float:
    return final_accuracy(fedavg(), split, None)


@pytest.mark.parametrize("attack", sorted(ATTACKS))
def test_fedavg_visibly_degrades(
    attack: str, split: tuple[Dataset, Dataset], clean_accuracy: float
) -> None:
    assert clean_accuracy > 0.95
    attacked = final_accuracy(fedavg(), split, ATTACKS[attack])
    assert attacked < clean_accuracy - 0.2


@pytest.mark.parametrize("attack", sorted(ATTACKS))
@pytest.mark.parametrize(
    "strategy",
    [median(), trimmed_mean(0.2), multi_krum(byzantine=ATTACKERS, keep=CLIENTS - ATTACKERS)],
    ids=lambda s: s.name,
)
def test_robust_rules_stay_within_two_points(
    strategy: Strategy, attack: str, split: tuple[Dataset, Dataset], clean_accuracy: float
) -> None:
    attacked = final_accuracy(strategy, split, ATTACKS[attack])
    assert attacked >= clean_accuracy - 0.02, (
        f"{strategy.name}: {attacked:.3f} vs clean {clean_accuracy:.3f}"
    )
